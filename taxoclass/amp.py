"""Mixed precision, for training (stages 3-4) and inference (validation, evaluation, predict) alike.

Features:
- `amp_context(amp, device)`: `torch.autocast` in bfloat16 (`bf16`) or float16 (`fp16`), or a
  disabled autocast (`off`), on the device's type;
- `resolve_amp`: `auto` (stage 1's default) is bf16 on CUDA (fp16 on a card without bf16), and on the CPU
  bf16 where the CPU has bf16 units (`cpu_has_bf16`, torch's own check) when `BF16_ON_CPU` says so, else off;
- `check_amp`: fp16 needs CUDA (its GradScaler does), a one-line error naming the key
  (`classifier.amp`, `similarity.autocast`).
"""

from __future__ import annotations

import torch

from taxoclass.errors import ConfigError


def amp_context(amp: str, device: torch.device | str):
    device = torch.device(device)
    if amp == "off":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# whether `auto` takes bf16 on a CPU that has bf16 units: no, since bf16 moved Example-F1 outside the spread seeds cause
# in fp32 on relaclass, dbpedia-298 and 20 Newsgroups' held-out half (issue 33: docs/figures.md, "bf16 on the CPU")
BF16_ON_CPU = False


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 units (AVX-512 BF16 or AMX). Not oneDNN's `_is_mkldnn_bf16_supported()`: that is
    True on any AVX-512 CPU, where bf16 is emulated, and MiniLM's document pass ran 3.5x slower under it (issue 33)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """`auto` (stage 1's inference): bf16 on CUDA, fp16 on a card without bf16 units; on the CPU bf16 only where
    it has bf16 units and `BF16_ON_CPU` (a CPU without them emulates bf16 and is slower under it, not faster)."""
    if amp != "auto":
        return amp
    if torch.device(device).type != "cuda":
        return "bf16" if BF16_ON_CPU and cpu_has_bf16() else "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def check_amp(amp: str, device: torch.device | str, key: str = "classifier.amp") -> None:
    if amp == "fp16" and torch.device(device).type != "cuda":
        raise ConfigError(key, "fp16 needs a CUDA device; use bf16 or off on the CPU")
