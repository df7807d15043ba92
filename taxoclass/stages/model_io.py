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

import torch

from taxoclass.config import Config, from_dict, to_dict
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.errors import DataError
from taxoclass.stages.model import DocBatches, TaxoClassifier, tokenize
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


def build_model(cfg: Config, taxonomy: Taxonomy, device: torch.device, keywords: dict[int, list[str]] | None = None,
                class_init=None) -> ModelBundle:
    """`class_init` (classes x dim) replaces the encoded class texts as the initial class features
    (stage 1's refined prototypes)."""
    c = cfg.classifier
    encoder, tokenizer = load_encoder(c.encoder, key="classifier.encoder")
    encoder.to(device)
    if class_init is None:
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
        "taxonomy": taxonomy.to_dict(),
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
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for a cut or foreign file
        raise DataError(path, f"not a readable checkpoint (truncated or corrupt: {type(err).__name__}); "
                        "rerun `taxoclass run` or `taxoclass stage 5 --run DIR`") from None
    if not isinstance(payload, dict) or not {"state_dict", "config", "taxonomy"} <= set(payload):
        raise DataError(path, "not a taxoclass checkpoint (no state_dict, config and taxonomy)")
    cfg = from_dict(payload["config"], str(path))
    taxonomy = Taxonomy.from_dict(payload["taxonomy"])
    bundle = build_model(cfg, taxonomy, device)
    bundle.model.load_state_dict(payload["state_dict"], strict=not cfg.classifier.freeze_encoder)
    bundle.model.eval()
    return bundle, taxonomy
