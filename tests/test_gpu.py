"""GPU tests (marker `gpu`): skipped, with the reason, where torch sees no CUDA device.

    python -m pytest -q tests/test_gpu.py                                      # on a GPU machine
    scripts/private_net.sh python -m pytest -q tests/test_gpu.py -m gpu        # with the Ray case

Each runs the debug preset (seconds on a GPU): stage 1's document pass under autocast, a stage-3
step under AMP, the whole pipeline on CUDA, and `runtime=ray` with `ray.use_gpu=true`.
"""

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_cli

import taxoclass
from taxoclass.config import build_config
from taxoclass.pipeline import RunContext, run_pipeline, steps

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def cuda_config(tmp_path, name, *extra):
    return build_config("debug", overrides=[f"output_dir={tmp_path}", f"run_name={name}", "device=cuda", *extra], environ={})


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_training_step(tmp_path, amp, dtype):
    run = RunContext.open(cuda_config(tmp_path, amp, f"classifier.amp={amp}", "self_training.enabled=false"))
    try:
        model = run.bundle().model
        seen = []
        # a Linear layer's output shows autocast's dtype (a LayerNorm's, like the encoder's last, stays fp32)
        linear = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear))
        hook = linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        steps.classifier(run, force=True)
        hook.remove()
    finally:
        run.close()
    assert seen and set(seen) == {dtype}  # autocast ran the encoder in half precision, training and validation
    stats = run.log.stats
    assert math.isfinite(stats["stage3/epoch_train_loss"]) and math.isfinite(stats["stage3/best_val_loss"])
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())  # no inf/NaN step slipped past the GradScaler
    assert any(not torch.equal(before[n], after[n].detach()) for n in before if n.startswith("encoder."))


def test_stage1_on_cuda_runs_under_bf16_and_keeps_the_cpu_vectors():
    from taxoclass.data.readers import load_dataset
    from taxoclass.stages.text_encoder import encode_texts, load_encoder

    texts = [t.lower() for t in load_dataset("demo").corpus.texts[:100]]
    model, tok = load_encoder("bundled")
    on_cpu = encode_texts(model, tok, texts, max_length=256, batch_size=64)  # fp32, tokenized inline
    seen = []
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    on_gpu = encode_texts(model.to("cuda"), tok, texts, max_length=256, batch_size=64, batch_tokens=4096, amp="auto")
    hook.remove()
    model.to("cpu")
    assert seen and set(seen) == {torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16}  # autocast, auto
    cos = (on_gpu * on_cpu).sum(1) / (np.linalg.norm(on_gpu, axis=1) * np.linalg.norm(on_cpu, axis=1))
    # several batches through the tokenizer thread and pinned copies, rows in order; bf16 against fp32 on the
    # CPU (the same rounding): smallest cosine 0.99997 over 60 of these documents
    assert cos.min() > 0.999


def test_pipeline_on_cuda(tmp_path):
    summary = run_pipeline(cuda_config(tmp_path, "cuda", "classifier.amp=bf16"))
    assert 0 < summary["test/example_f1"] <= 1
    run_dir = tmp_path / "cuda"
    preds = [json.loads(line) for line in (run_dir / "predictions/test.jsonl").read_text().splitlines()]
    assert len(preds) == summary["test/num_docs"] == 60
    # the model trained on the GPU loads anywhere: the same answers on CUDA and on the CPU
    texts = ["These headphones block the noise on my commute.", "A tent for two with a rain fly."]
    on_gpu = taxoclass.load(run_dir, device="cuda").predict(texts, top_k=3)
    on_cpu = taxoclass.load(run_dir, device="cpu").predict(texts, top_k=3)
    for g, c in zip(on_gpu, on_cpu):
        assert g["classes"][0] == c["classes"][0]
        assert g["scores"] == pytest.approx(c["scores"], abs=1e-3)


def test_ray_runtime_uses_the_gpu(tmp_path):
    pytest.importorskip("ray")
    res = run_cli("run", "--preset", "debug", "runtime=ray", "device=cuda", "ray.use_gpu=true", "ray.num_workers=1",
                  "ray.stage1_actors=1", "classifier.amp=bf16", f"output_dir={tmp_path}", "run_name=raygpu")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "raygpu" / "summary.json").read_text())
    assert summary["stage1/gpus_per_actor"] == 1  # Ray Data's scorer actors asked for a GPU
    assert summary["stage3/worker_gpus"] == 1 and summary["stage4/worker_gpus"] == 1  # Ray Train's workers ran on CUDA
    assert 0 < summary["test/example_f1"] <= 1
