"""The classifier's documents as its training loops and its inference batch them.

Features:
- `DocBatches`: the documents as token ids (a trainable encoder) or as fixed embeddings (a frozen
  encoder: stage 1's vectors, or the classifier's own); `subset(rows)` and `batch(rows, device)`, the
  keyword arguments of the model's forward (`stages/model.py`), padded per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DocBatches:
    """Documents as token ids (trainable encoder) or as fixed embeddings (frozen encoder)."""

    input_ids: list[list[int]] | None = None
    embeddings: torch.Tensor | None = None
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.input_ids) if self.input_ids is not None else len(self.embeddings)

    def subset(self, idx: list[int]) -> DocBatches:
        if self.embeddings is not None:
            return DocBatches(embeddings=self.embeddings[idx])
        return DocBatches(input_ids=[self.input_ids[i] for i in idx], pad_id=self.pad_id)

    def batch(self, idx: list[int], device) -> dict:
        if self.embeddings is not None:
            return {"doc_embeddings": self.embeddings[idx].to(device)}
        seqs = [self.input_ids[i] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            att[r, : len(s)] = 1
        return {"input_ids": ids.to(device), "attention_mask": att.to(device)}
