"""Texts into padded encoder batches sized by a token budget, tokenized ahead of the model.

Features:
- `budget_batches`: index batches of similar token length, longest first, each holding at most
  `batch_tokens` padded tokens (at least one text): short texts travel many to a batch, long
  ones few, so a batch's cost and memory stay level whatever the lengths;
- `tokenized_batches`: the texts in order of character length, tokenized a chunk at a time,
  re-sorted by token length inside the chunk, cut by the budget and padded; with `pin`, in
  page-locked host memory, ready for a non-blocking copy to the GPU;
- `ahead`: runs such a generator in a background thread, a few batches ahead of the consumer
  (the tokenizer's Rust code releases the GIL), so that on a GPU tokenization overlaps the model.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch

CHUNK = 4096  # texts tokenized per call: long enough for good batches, short enough to start the model early


def budget_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Index batches, longest texts first; a batch's padded size (its count x its longest text) stays within
    `batch_tokens`, a text longer than the budget alone in its batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * max(1, lengths[batches[-1][0]]) <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad(rows: list[list[int]], pad_id: int, side: str) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` of token rows padded to the longest, on the tokenizer's padding side."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for n, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[n, cols], mask[n, cols] = row, 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def tokenized_batches(tokenizer, texts: Sequence[str], max_length: int, batch_tokens: int,
                      pin: bool = False) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(text indices, padded tensors) batches covering `texts`, each within `batch_tokens` padded tokens."""
    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in range(0, len(by_chars), CHUNK):
        part = by_chars[start : start + CHUNK]
        rows = tokenizer([texts[i] for i in part], truncation=True, max_length=max_length, return_attention_mask=False,
                         return_token_type_ids=False)["input_ids"]
        for batch in budget_batches([len(r) for r in rows], batch_tokens):
            enc = pad([rows[j] for j in batch], tokenizer.pad_token_id, tokenizer.padding_side)
            if pin:
                enc = {k: v.pin_memory() for k, v in enc.items()}
            yield [part[j] for j in batch], enc


_DONE = object()


def ahead(items: Iterator, depth: int = 4) -> Iterator:
    """`items`, produced in a background thread at most `depth` ahead of the consumer; the producer's
    exception is raised here, and a consumer that stops early stops the producer too."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():  # never blocked for good on a consumer that has gone
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer, which raises it
            put(err)

    worker = threading.Thread(target=produce, name="tokenizer", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
