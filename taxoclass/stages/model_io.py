"""Building, saving and loading the stage-3/4 model, and turning texts into its input.

A checkpoint is self-contained: weights, the config sections the model is built from
(`seed`, `similarity`, `classifier`, `evaluation`: never the paths, Ray or tracking settings of the
run that made it) and the taxonomy, so `taxoclass predict` needs the run dir only. With
`classifier.freeze_encoder=true` the encoder is not trained: documents are embedded once and only
the head (GNN, bilinear matrix, class features) is stored.

Loading never runs code: the file is read with `torch.load(weights_only=True)` (`tensorfile.py`),
the config and the taxonomy are JSON text inside it. A checkpoint from before that (its config and
taxonomy as nested dicts of plain values) loads through the same safe path. A config key the model
does not know (a renamed or removed setting) is ignored, so a checkpoint outlives config changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from taxoclass import tensorfile
from taxoclass.config import LEAF_TYPES, Config, flatten, from_dict, to_dict, unflatten
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.errors import DataError, TaxoclassError
from taxoclass.stages.model import TaxoClassifier, tokenize
from taxoclass.stages.similarity import classifier_encoder
from taxoclass.stages.text_encoder import encode_texts, load_encoder
from taxoclass.training.doc_batches import DocBatches

CLASS_NAME_MAX_LENGTH = 64
FORMAT = "taxoclass-model/2"  # config and taxonomy as JSON text; format 1 held them as nested dicts
MODEL_SECTIONS = ("seed", "similarity", "classifier", "evaluation")  # what build_model and predict read
REDO_MODEL = "make it again from the run's cache with `taxoclass stage 5 --run RUN_DIR`, or train it with `taxoclass run`"
REDO_ENTRY = "delete it and run again: its stage is computed anew"


@dataclass
class ModelBundle:
    model: TaxoClassifier
    tokenizer: object
    encoder: torch.nn.Module  # the document encoder (inside the model unless frozen)
    cfg: Config
    device: torch.device
    _frozen_cache: dict = field(default_factory=dict)

    def docs(self, texts: list[str], desc: str | None = None, remember: bool = True) -> DocBatches:
        """`remember=False`: a frozen encoder's embeddings are not kept for a later call (predict's chunks)."""
        c = self.cfg.classifier
        if c.freeze_encoder:
            # a frozen encoder gives the same vectors every time: embed each distinct text list once
            key = hashlib.sha1("\x00".join(texts).encode()).hexdigest()
            if key in self._frozen_cache:
                return self._frozen_cache[key]
            emb = encode_texts(self.encoder, self.tokenizer, texts, max_length=c.max_length,
                               batch_size=self.cfg.evaluation.batch_size, pooling=c.pooling, device=self.device, desc=desc)
            docs = DocBatches(embeddings=torch.from_numpy(emb))
            if remember:
                self._frozen_cache[key] = docs
            return docs
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
    encoder, tokenizer = load_encoder(classifier_encoder(cfg), key="classifier.encoder")
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
    from taxoclass.atomic import atomic_replace_with

    state = bundle.model.head_state_dict() if bundle.cfg.classifier.freeze_encoder else bundle.model.state_dict()
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "config": tensorfile.to_json(model_config(to_dict(bundle.cfg))),
        "taxonomy": tensorfile.to_json(taxonomy.to_dict()),
    }
    atomic_replace_with(path, lambda tmp: tensorfile.save(payload, tmp))


def model_config(config: dict) -> dict:
    """The sections of a config dict the model is built from, with only the keys this version knows."""
    return unflatten({key: value for key, value in flatten(config).items()
                      if key in LEAF_TYPES and key.split(".")[0] in MODEL_SECTIONS})


def _read(path: Path, redo: str) -> dict:
    payload = tensorfile.load(path, redo)
    if not isinstance(payload, dict) or not {"state_dict", "config", "taxonomy"} <= set(payload):
        raise DataError(path, f"not a taxoclass checkpoint (no state_dict, config and taxonomy); {redo}")
    return payload


def _plain(value, path: Path, redo: str) -> dict:
    """A JSON part of the checkpoint: text (format 2) or, from a format-1 file, the dict itself."""
    value = value if isinstance(value, dict) else tensorfile.from_json(value, path, redo)
    if not isinstance(value, dict):
        raise DataError(path, f"not a taxoclass checkpoint (its config or taxonomy is not a mapping); {redo}")
    return value


def _features_problem(state, classes: int) -> str | None:
    """Why the stored class features (the model is built from them) cannot be: one row per class, a tensor."""
    if not isinstance(state, dict):
        return f"its state_dict is a {type(state).__name__}, not a mapping of tensors"
    features = state.get("class_features")
    if features is None:
        return None
    if not isinstance(features, torch.Tensor):
        return f"its state_dict's 'class_features' is a {type(features).__name__}, not a tensor"
    if features.ndim != 2 or features.shape[0] != classes:
        return f"its state_dict's 'class_features' has shape {_shape(features)}, not one row for each of its {classes} classes"
    return None


def stored_class_features(state: dict):
    """The class features a state dict holds, to build its model with (it replaces them anyway): the
    class texts need not be encoded first."""
    features = state.get("class_features")
    return None if features is None else features.detach().cpu().float().numpy()


def with_output_mode(state: dict) -> dict:
    """A state dict saved before models stored how they read their logits came from BCE training: sigmoid."""
    from taxoclass.stages.model import SIGMOID

    return state if "output_mode" in state else {**state, "output_mode": torch.tensor(SIGMOID)}


def state_problem(state, model: TaxoClassifier) -> str | None:
    """Why a checkpoint's state dict does not fit `model`, or None: each of the model's weights there (all but
    `output_mode`, which older checkpoints lack), each a tensor of the model's shape, and nothing else but a frozen
    encoder's. `load_state_dict` said it as a RuntimeError traceback."""
    if not isinstance(state, dict):
        return f"its state_dict is a {type(state).__name__}, not a mapping of tensors"
    wanted = model.state_dict()
    for key, value in state.items():
        if key not in wanted:
            if model.encoder is None and str(key).startswith("encoder."):
                continue  # a frozen encoder's weights: not the head's, and never loaded
            return f"its state_dict holds {key!r}, which the model does not have"
        if not isinstance(value, torch.Tensor):
            return f"its state_dict's {key!r} is a {type(value).__name__}, not a tensor"
        if value.shape != wanted[key].shape:
            return f"its state_dict's {key!r} has shape {_shape(value)}, the model's {_shape(wanted[key])}"
    missing = [key for key in wanted if key not in state and key != "output_mode"]
    if missing:
        return f"its state_dict lacks {missing[0]!r}" + (f" and {len(missing) - 1} more weights" if len(missing) > 1 else "")
    return None


def _shape(tensor: torch.Tensor) -> str:
    return " x ".join(map(str, tensor.shape)) or "scalar"


def load_state(bundle: ModelBundle, path: Path) -> None:
    """A stage-3/4 cache entry's weights into `bundle`'s model: `Unusable` (its stage is computed again) when the file is
    cut short, foreign or does not fit the model; `Refused` when it holds a Python object."""
    from taxoclass.cache import Unusable

    path = Path(path)
    try:
        payload = _read(path, REDO_ENTRY)
    except tensorfile.Refused:
        raise
    except DataError as err:
        raise Unusable(f"{path.name} is {err.message.removesuffix('; ' + REDO_ENTRY)}") from None
    why = state_problem(payload["state_dict"], bundle.model)
    if why is not None:
        raise Unusable(f"{path.name} does not fit the model: {why}")
    bundle.model.load_state_dict(with_output_mode(payload["state_dict"]), strict=not bundle.cfg.classifier.freeze_encoder)


def load_checkpoint(path: Path, device: torch.device) -> tuple[ModelBundle, Taxonomy]:
    """A trained model from a checkpoint alone (for `predict`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no trained model here: has the run finished stage 3?")
    payload = _read(path, REDO_MODEL)
    try:
        cfg = from_dict(model_config(_plain(payload["config"], path, REDO_MODEL)), str(path))
        taxonomy = Taxonomy.from_dict(_plain(payload["taxonomy"], path, REDO_MODEL))
    except TaxoclassError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(path, f"not a taxoclass checkpoint (its taxonomy is malformed: {type(err).__name__}); {REDO_MODEL}") from None
    state = payload["state_dict"]
    why = _features_problem(state, len(taxonomy))  # the model is built from them: checked first
    bundle = None if why else build_model(cfg, taxonomy, device, class_init=stored_class_features(state))
    if why is None:
        width = getattr(getattr(bundle.encoder, "config", None), "hidden_size", None)
        features = state.get("class_features")
        if width is not None and features is not None and features.shape[1] != width:
            why = f"its class_features are {_shape(features)}, the encoder's vectors {width} wide"
        else:
            why = state_problem(state, bundle.model)
    if why is not None:
        raise DataError(path, f"not a taxoclass checkpoint ({why}); {REDO_MODEL}")
    bundle.model.load_state_dict(with_output_mode(state), strict=not cfg.classifier.freeze_encoder)
    bundle.model.eval()
    return bundle, taxonomy
