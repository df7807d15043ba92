"""Building, saving and loading the stage-3/4 model, and turning texts into its input.

A checkpoint is self-contained: weights, the resolved config and the taxonomy, so
`taxoclass predict` needs the run dir only. With `classifier.freeze_encoder=true`
the encoder is not trained: documents are embedded once and only the head
(GNN, bilinear matrix, class features) is stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from taxoclass.config import Config, from_dict, to_dict
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.errors import DataError
from taxoclass.stages.classifier import DocBatches, TaxoClassifier, tokenize
from taxoclass.stages.text_encoder import encode_texts, load_encoder

CLASS_NAME_MAX_LENGTH = 64


@dataclass
class ModelBundle:
    model: TaxoClassifier
    tokenizer: object
    encoder: torch.nn.Module  # the document encoder (inside the model unless frozen)
    cfg: Config
    device: torch.device
    _frozen_cache: dict = field(default_factory=dict)

    def docs(self, texts: list[str], desc: str | None = None) -> DocBatches:
        c = self.cfg.classifier
        if c.freeze_encoder:
            # a frozen encoder gives the same vectors every time: embed each distinct text list once
            key = hashlib.sha1("\x00".join(texts).encode()).hexdigest()
            if key not in self._frozen_cache:
                emb = encode_texts(self.encoder, self.tokenizer, texts, max_length=c.max_length,
                                   batch_size=self.cfg.evaluation.batch_size, pooling=c.pooling, device=self.device, desc=desc)
                self._frozen_cache[key] = DocBatches(embeddings=torch.from_numpy(emb))
            return self._frozen_cache[key]
        return tokenize(self.tokenizer, texts, c.max_length)


def initial_class_texts(cfg: Config, taxonomy: Taxonomy, keywords: dict[int, list[str]] | None = None) -> list[str]:
    """Node features start from the class names (paper), or from stage 1's hypotheses (head_init=zeroshot)."""
    from taxoclass.stages.similarity import class_texts, hypotheses

    if cfg.classifier.head_init == "random":
        return taxonomy.readable_names
    return hypotheses(cfg.similarity.template, class_texts(taxonomy, cfg.similarity.class_text, keywords))


def build_model(cfg: Config, taxonomy: Taxonomy, device: torch.device, keywords: dict[int, list[str]] | None = None) -> ModelBundle:
    c = cfg.classifier
    encoder, tokenizer = load_encoder(c.encoder, key="classifier.encoder")
    encoder.to(device)
    class_init = encode_texts(encoder, tokenizer, initial_class_texts(cfg, taxonomy, keywords), max_length=CLASS_NAME_MAX_LENGTH,
                              batch_size=64, pooling=c.pooling, device=device, normalize=c.head_init == "zeroshot")
    torch.manual_seed(cfg.seed)  # the head's initial weights depend on the seed only
    model = TaxoClassifier(None if c.freeze_encoder else encoder, torch.from_numpy(class_init), taxonomy, pooling=c.pooling,
                           gnn_num_layers=c.gnn_num_layers, gnn_hidden_dim=c.gnn_hidden_dim, head_init=c.head_init).to(device)
    if c.freeze_encoder:
        for p in encoder.parameters():
            p.requires_grad_(False)
    return ModelBundle(model, tokenizer, encoder, cfg, device)


def save_checkpoint(bundle: ModelBundle, taxonomy: Taxonomy, path: Path) -> None:
    from taxoclass.rundir import atomic_replace_with

    state = bundle.model.head_state_dict() if bundle.cfg.classifier.freeze_encoder else bundle.model.state_dict()
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "config": to_dict(bundle.cfg),
        "taxonomy": {"ids": taxonomy.ids, "names": taxonomy.names, "edges": taxonomy.edges},
    }
    atomic_replace_with(path, lambda tmp: torch.save(payload, tmp))


def load_state(bundle: ModelBundle, path: Path) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    bundle.model.load_state_dict(payload["state_dict"], strict=not bundle.cfg.classifier.freeze_encoder)


def load_checkpoint(path: Path, device: torch.device) -> tuple[ModelBundle, Taxonomy]:
    """A trained model from a checkpoint alone (for `predict`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no trained model here: has the run finished stage 3?")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    cfg = from_dict(payload["config"], str(path))
    t = payload["taxonomy"]
    taxonomy = Taxonomy(ids=t["ids"], names=t["names"], edges=[tuple(e) for e in t["edges"]])
    bundle = build_model(cfg, taxonomy, device)
    bundle.model.load_state_dict(payload["state_dict"], strict=not cfg.classifier.freeze_encoder)
    bundle.model.eval()
    return bundle, taxonomy


def root_to_leaf_paths(taxonomy: Taxonomy) -> list[list[int]]:
    return [p for leaf in taxonomy.leaves for p in taxonomy.paths(leaf)]


def best_paths(logits: np.ndarray, taxonomy: Taxonomy, chunk: int = 4096) -> list[list[int]]:
    """Per row, the root-to-leaf path with the highest mean score (path-consistent decoding)."""
    paths = root_to_leaf_paths(taxonomy)
    weights = np.zeros((len(paths), logits.shape[1]), dtype=np.float32)
    for i, p in enumerate(paths):
        weights[i, p] = 1.0 / len(p)
    out = []
    for start in range(0, len(logits), chunk):
        best = (logits[start : start + chunk] @ weights.T).argmax(1)
        out.extend(paths[b] for b in best)
    return out


def rank_with_paths(probs: np.ndarray, paths: list[list[int]], top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The decoded path first (top level first), then the other classes by score."""
    k = probs.shape[1] if top_k <= 0 else min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.empty((len(probs), k), dtype=np.int64)
    for i, path in enumerate(paths):
        on_path = set(path)
        ranked[i] = (list(path) + [c for c in order[i] if c not in on_path])[:k]
    return ranked, np.take_along_axis(probs, ranked, axis=1)


def decode(probs: np.ndarray, taxonomy: Taxonomy, decoding: str, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    if decoding == "flat":
        return rank(probs, top_k)
    logits = np.log(np.clip(probs, 1e-7, 1)) - np.log(np.clip(1 - probs, 1e-7, 1))  # decode on logits: linear in the match score
    return rank_with_paths(probs, best_paths(logits, taxonomy), top_k)


def rank(probs: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(class indices, scores), best first, `top_k` per row (all when top_k <= 0)."""
    k = probs.shape[1] if top_k <= 0 else min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)
