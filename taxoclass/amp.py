"""Mixed precision, for training (stages 3-4) and inference (validation, evaluation, predict) alike.

Features:
- `amp_context(amp, device)`: `torch.autocast` in bfloat16 (`bf16`) or float16 (`fp16`), or a
  disabled autocast (`off`), on the device's type;
- `resolve_amp`: `auto` (stage 1's default) is bf16 on CUDA (fp16 on a card without bf16), off on the CPU;
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


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """`auto` (stage 1's inference): bf16 on CUDA, fp16 on a card without bf16 units, off elsewhere
    (a CPU without bf16 units is slower under bf16, not faster)."""
    if amp != "auto":
        return amp
    if torch.device(device).type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def check_amp(amp: str, device: torch.device | str, key: str = "classifier.amp") -> None:
    if amp == "fp16" and torch.device(device).type != "cuda":
        raise ConfigError(key, "fp16 needs a CUDA device; use bf16 or off on the CPU")
