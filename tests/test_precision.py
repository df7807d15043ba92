"""Stage 1's precision (issue 33): bf16 and fp32 vectors never share a cache entry, and `similarity.autocast=auto`
is keyed by what it resolves to on this machine."""

import pytest

from taxoclass import amp
from taxoclass.config import build_config
from taxoclass.pipeline import prepare_inputs
from taxoclass.pipeline.store import stage_keys
from taxoclass.pipeline.vectors import EncoderSpec, VectorStore, stage1_precision


def demo(*overrides: str):
    return build_config("demo", overrides=list(overrides), environ={})


def test_bf16_and_fp32_vectors_never_share_an_entry(tmp_path):
    store = VectorStore(tmp_path)
    texts = ["a tent with a rain fly", "noise-cancelling earbuds"]
    fp32, bf16 = demo("similarity.autocast=off"), demo("similarity.autocast=bf16")
    assert EncoderSpec.of_similarity(fp32).precision == "off" and EncoderSpec.of_similarity(bf16).precision == "bf16"
    assert store.path(EncoderSpec.of_similarity(fp32), texts) != store.path(EncoderSpec.of_similarity(bf16), texts)
    inputs = prepare_inputs(fp32)
    assert stage_keys(fp32, inputs)[1] != stage_keys(bf16, inputs)[1]
    # the classifier's frozen encoder embeds in stage 1's precision: it keeps sharing stage 1's vectors
    for cfg in (fp32, bf16):
        assert EncoderSpec.of_classifier(cfg) == EncoderSpec.of_similarity(cfg)


@pytest.mark.parametrize("units, policy, expected", [(True, True, "bf16"), (False, True, "off"), (True, False, "off")])
def test_auto_is_keyed_by_what_it_resolves_to(monkeypatch, units, policy, expected):
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: units)
    monkeypatch.setattr(amp, "BF16_ON_CPU", policy)
    auto = demo("device=cpu")
    assert stage1_precision(auto) == expected
    inputs = prepare_inputs(auto)
    assert stage_keys(auto, inputs)[1] != stage_keys(demo("device=cpu", f"similarity.autocast={'off' if expected == 'bf16' else 'bf16'}"),
                                                     inputs)[1]
    assert EncoderSpec.of_similarity(auto) == EncoderSpec.of_similarity(demo("device=cpu", f"similarity.autocast={expected}"))


def test_the_cpu_bf16_check_asks_for_units_not_emulation():
    import torch

    # oneDNN's own flag is True on any AVX-512 CPU, where bf16 is emulated and slower: not the check
    assert amp.cpu_has_bf16() == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    if torch.cpu._is_avx512_supported() and not torch.cpu._is_avx512_bf16_supported() and not torch.cpu._is_amx_tile_supported():
        assert not amp.cpu_has_bf16()


def test_ray_gpu_stage1_from_a_driver_without_cuda_is_keyed_bf16(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert stage1_precision(demo("runtime=ray", "ray.use_gpu=true")) == "bf16"  # torch alone would say fp16
