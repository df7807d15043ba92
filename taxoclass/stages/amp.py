"""Mixed precision, for training (stages 3-4) and inference (validation, evaluation, predict) alike.

Features:
- `amp_context(amp, device)`: `torch.autocast` in bfloat16 (`bf16`) or float16 (`fp16`), or a
  disabled autocast (`off`), on the device's type;
- `check_amp`: fp16 needs CUDA (its GradScaler does), a one-line error naming `classifier.amp`.
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


def check_amp(amp: str, device: torch.device | str) -> None:
    if amp == "fp16" and torch.device(device).type != "cuda":
        raise ConfigError("classifier.amp", "fp16 needs a CUDA device; use bf16 or off on the CPU")
