"""One typed config: dataclasses, YAML presets/files, env and `key=value` overrides.

Precedence (later wins): defaults < preset (`preset=NAME` / `--preset`) <
`--config FILE` < environment (the seed's names, e.g. `USE_WANDB=1`) <
command-line `key=value`.

Keys are dotted (`classifier.gnn_num_layers=4`); a leaf name that is unique
across sections may be used alone (`gnn_num_layers=4`), and the seed's
upper-case names are aliases (`WANDB_PROJECT=x`). An unknown key or a value of
the wrong type is a `ConfigError` naming the key and the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from taxoclass.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@dataclass
class SimilarityConfig:
    """Stage 1: document-class similarity."""

    backend: str = "biencoder"  # biencoder | nli
    model: str = "bundled"  # 'bundled' = the packaged all-MiniLM-L6-v2; else a HF name or path
    template: str = "This product is about {}."
    max_length: int = 256  # tokens per document
    batch_size: int = 64
    lowercase: bool = True
    nli_normalization: str = "softmax3"  # softmax3 | entail_vs_contra
    pruning: bool = True  # score only the classes the stage-2 search visits
    class_text: str = "name"  # name | llm_enrichment | enrichment (keywords appended)
    # class prototypes refined from the corpus (bi-encoder only; ours, after X-Class): each class
    # vector becomes normalize(w * name vector + (1 - w) * centroid of the documents whose best path
    # holds the class, the more similar `refine_share` of them), `refine_rounds` times; 0 = off (paper)
    refine_rounds: int = 3
    refine_weight: float = 0.5
    refine_share: float = 0.5


@dataclass
class MiningConfig:
    """Stage 2: core class mining."""

    root_width: int = 2  # children of ROOT taken into the search
    positivity: bool = True  # also require conf > 0
    floor: float = 0.05  # absolute floor on conf (bi-encoder scale)
    confidence_over: str = "parents"  # conf compares with Par(c) + Sib(c) (paper) | ancestors: Anc(c) + Sib(c)
    path_consistent: bool = True  # margin rule: keep only cores on the document's best root-to-leaf path (our addition)
    # margin: the paper's confidence-margin rule | path_top (ours): a document's best root-to-leaf path is
    # its core set when the document ranks in the top `top_share` of the documents whose best path
    # ends in the same class (by the path's mean score)
    rule: str = "path_top"
    top_share: float = 0.5


@dataclass
class ClassifierConfig:
    """Stage 3: text encoder + GNN class encoder, trained on core classes."""

    encoder: str = "bundled"
    pooling: str = "mean"  # mean | cls
    max_length: int = 256
    gnn_num_layers: int = 3
    gnn_hidden_dim: int = 512
    head_init: str = "zeroshot"  # zeroshot (start at the bi-encoder's scores) | random (paper as printed)
    label_scope: str = "path"  # paper (parents/children) | all (ancestors/descendants) | path (cores read as one path: ancestors positive, only below the deepest core ignored)
    negatives: str = "core_depth"  # all (paper) | core_depth: none deeper than the document's deepest core (our addition)
    batch_size: int = 64
    epochs: int = 1  # more epochs fit the pseudo-labels better and the gold worse (docs/quality.md)
    learning_rate: float = 5e-5  # encoder
    head_learning_rate: float = 4e-3  # GNN, bilinear matrix, class features
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    val_fraction: float = 0.1
    early_stopping_patience: int = 2
    amp: str = "off"  # off | bf16 | fp16
    freeze_encoder: bool = True  # embed documents once and train the head; fine-tuning measured worse (docs/quality.md)


@dataclass
class SelfTrainingConfig:
    """Stage 4: multi-label self-training."""

    # off by default: on the corpora measured (1,000-2,555 documents) it never raised held-out quality,
    # and the run says so when it skips it (docs/quality.md)
    enabled: bool = False
    update_interval: int = 25  # batches between target (Q) updates
    max_batches: int = 500  # batch budget
    stop_tolerance: float = 0.01  # stop when this share of top-3 sets changed, or fewer
    self_train_threshold: float = 0.5  # max p above this counts as confident
    confident_only: bool = False  # train each interval only on confident documents (our addition)
    # label-free guard (our addition): after each target update, the stage-3 loss on its held-out
    # pseudo-labelled documents; stop after this many updates without a new best and keep the best
    # model (0 = off: the paper's stop rules only)
    val_patience: int = 2
    learning_rate: float = 1e-6
    head_learning_rate: float = 5e-4
    batch_size: int = 64


@dataclass
class EvaluationConfig:
    save_top_k: int = 100  # classes per document in predictions/test.jsonl (metrics use the same list)
    decoding: str = "path"  # path (best root-to-leaf path first) | flat (classes by score)
    batch_size: int = 128


@dataclass
class RayConfig:
    """runtime=ray: where and how wide the Ray parts run."""

    address: str = ""  # '' = start a local Ray instance; 'auto' or ray://host:port = join a cluster
    num_cpus: int = 0  # logical CPUs of a local instance (0 = Ray's default)
    stage1_actors: int = 0  # scorer actors in the stage-1 pool (0 = one per GPU, or 1 without GPUs)
    stage1_batch_size: int = 256  # documents per Ray Data batch
    shard_size: int = 1024  # documents per Parquet shard (the unit of stage-1 resume)
    num_workers: int = 2  # Ray Train workers for stages 3-4
    use_gpu: bool = False  # one GPU per stage-1 actor and per Train worker
    gpus_per_worker: float = 1.0  # with use_gpu: a Train worker's share of a GPU (0.25: four workers on one GPU)
    cpus_per_worker: float = 1.0  # CPUs a Train worker holds
    max_failures: int = 2  # Ray Train retries from the latest checkpoint
    storage_path: str = ""  # checkpoints (default <run_dir>/ray); a shared path on a cluster


@dataclass
class TrackingConfig:
    """Experiment tracking; the seed's upper-case names are aliases."""

    use_wandb: bool = False
    project: str = "taxoclass-hierarchical"
    entity: str = ""
    run_name: str = ""
    tags: list[str] = field(default_factory=list)
    group: str = ""
    job_type: str = "train"
    mode: str = ""  # online | offline | disabled; empty = WANDB_MODE or online
    log_interval: int = 10
    log_gradients: bool = False


@dataclass
class Config:
    data: str = "demo"  # dataset folder, JSON-lines file, or 'demo'
    data_variant: str = "auto"  # auto | teleclass | generated | jsonl
    test_corpus: str = ""  # evaluate on this doc_id<TAB>text file instead
    transductive: bool = False  # unlabelled test texts join the corpus
    output_dir: str = "runs"
    run_name: str = ""
    cache_dir: str = ""  # stage outputs (default <run_dir>/cache); a search's trials share one
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    runtime: str = "local"  # local | ray
    force_stage: int = 0  # recompute from this stage on (0 = use caches)
    resume: str = ""  # a run dir or wandb run id: continue that run, skipping finished stages
    max_docs: int = 0  # keep only the first N corpus documents (0 = all); for smoke runs
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    self_training: SelfTrainingConfig = field(default_factory=SelfTrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# The seed's names, accepted as environment variables and as keys.
SEED_ALIASES = {
    "USE_WANDB": "tracking.use_wandb",
    "WANDB_PROJECT": "tracking.project",
    "WANDB_ENTITY": "tracking.entity",
    "WANDB_RUN_NAME": "tracking.run_name",
    "WANDB_TAGS": "tracking.tags",
    "WANDB_GROUP": "tracking.group",
    "WANDB_JOB_TYPE": "tracking.job_type",
    "WANDB_LOG_INTERVAL": "tracking.log_interval",
    "WANDB_LOG_GRADIENTS": "tracking.log_gradients",
}

CHOICES = {
    "data_variant": ("auto", "teleclass", "generated", "jsonl"),
    "runtime": ("local", "ray"),
    "similarity.backend": ("biencoder", "nli"),
    "similarity.nli_normalization": ("softmax3", "entail_vs_contra"),
    "similarity.class_text": ("name", "llm_enrichment", "enrichment"),
    "classifier.pooling": ("mean", "cls"),
    "mining.confidence_over": ("parents", "ancestors"),
    "classifier.label_scope": ("paper", "all", "path"),
    "mining.rule": ("margin", "path_top"),
    "classifier.negatives": ("all", "core_depth"),
    "classifier.amp": ("off", "bf16", "fp16"),
    "classifier.head_init": ("zeroshot", "random"),
    "evaluation.decoding": ("path", "flat"),
    "tracking.mode": ("", "online", "offline", "disabled"),
}


def _leaf_types(cls=Config, prefix="") -> dict[str, type]:
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out.update(_leaf_types(t, key + "."))
        else:
            out[key] = t
    return out


LEAF_TYPES = _leaf_types()
_SHORT = {}
for _k in LEAF_TYPES:
    _SHORT.setdefault(_k.rsplit(".", 1)[-1], []).append(_k)
SHORT_NAMES = {short: keys[0] for short, keys in _SHORT.items() if len(keys) == 1}


def canonical_key(key: str) -> str:
    """Full dotted key for `key`, or ConfigError with the closest valid name."""
    if key in LEAF_TYPES:
        return key
    if key in SEED_ALIASES:
        return SEED_ALIASES[key]
    if key in SHORT_NAMES:
        return SHORT_NAMES[key]
    if key.rsplit(".", 1)[-1] in _SHORT and key.rsplit(".", 1)[-1] not in SHORT_NAMES:
        options = " or ".join(_SHORT[key.rsplit(".", 1)[-1]])
        raise ConfigError(key, f"ambiguous, say {options}")
    valid = list(LEAF_TYPES) + list(SHORT_NAMES) + list(SEED_ALIASES)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(key, f"unknown key{hint}")


def _coerce(key: str, value, t):
    """Turn a YAML/env/CLI value into the field's type, or raise naming the key."""
    origin = typing.get_origin(t)
    try:
        if origin is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise TypeError
            return [str(v) for v in value]
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise TypeError
        if t is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if t is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if t is str:
            if value is None:
                return ""
            if isinstance(value, (dict, list)):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"unsupported type {t} for {key}")
    name = "list of strings" if origin is list else t.__name__
    raise ConfigError(key, f"expected {name}, got {value!r}")


def set_value(cfg: Config, key: str, value) -> None:
    key = canonical_key(key)
    value = _coerce(key, value, LEAF_TYPES[key])
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(key, f"expected one of {', '.join(repr(c) for c in CHOICES[key])}, got {value!r}")
    *sections, leaf = key.split(".")
    target = cfg
    for s in sections:
        target = getattr(target, s)
    setattr(target, leaf, value)


def get_value(cfg: Config, key: str):
    target = cfg
    for part in canonical_key(key).split("."):
        target = getattr(target, part)
    return target


def _flatten(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in mapping.items():
        k = str(k)
        full = prefix + k
        if isinstance(v, dict) and (full not in LEAF_TYPES):
            out.update(_flatten(v, full + "."))
        else:
            out[full] = v
    return out


def apply_mapping(cfg: Config, mapping: dict, source: str) -> None:
    for key, value in _flatten(mapping).items():
        try:
            set_value(cfg, key, value)
        except ConfigError as err:
            raise ConfigError(err.key, f"{str(err).split(': ', 1)[1]} (in {source})") from None


def load_yaml(path: str | Path) -> dict:
    from taxoclass.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        line = err.problem_mark.line + 1 if getattr(err, "problem_mark", None) else None
        raise DataError(path, f"malformed YAML: {getattr(err, 'problem', err)}", line) from None
    except UnicodeDecodeError:
        raise DataError(path, "bytes that are not UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(path, "expected a mapping of config keys at the top level")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "expected key=value")
        out.append((key.strip(), value))
    return out


def build_config(
    preset: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    environ: dict | None = None,
) -> Config:
    """Resolve a Config from every source, in precedence order."""
    cfg = Config()
    pairs = parse_overrides(overrides or [])
    # `preset=NAME` may come on the command line like any key
    for key, value in pairs:
        if key == "preset":
            preset = value
    if preset:
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(preset, preset_names(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (presets: {', '.join(preset_names())})"
            raise ConfigError("preset", f"unknown preset '{preset}'{hint}")
        apply_mapping(cfg, load_yaml(path), f"preset {preset}")
    if config_file:
        apply_mapping(cfg, load_yaml(config_file), config_file)
    environ = os.environ if environ is None else environ
    for name, key in SEED_ALIASES.items():
        if environ.get(name, "") != "":
            try:
                set_value(cfg, key, environ[name])
            except ConfigError as err:
                raise ConfigError(name, f"{str(err).split(': ', 1)[1]} (environment variable)") from None
    for key, value in pairs:
        if key != "preset":
            is_text = LEAF_TYPES[canonical_key(key)] is str  # keep `run_name=007` as written
            set_value(cfg, key, value if is_text else yaml_scalar(value))
    check_ranges(cfg)
    check_model_paths(cfg)
    return cfg


def yaml_scalar(text: str):
    """Command-line values are parsed as YAML scalars (`1e-5`, `true`, `[a, b]`)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("", "null", "~") else value


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def from_dict(mapping: dict, source: str = "mapping") -> Config:
    cfg = Config()
    apply_mapping(cfg, mapping, source)
    return cfg


# ---------------------------------------------------------------- value ranges
# (lowest, highest, lowest allowed itself, highest allowed itself); None = unbounded.
# A value out of range would crash after minutes of work (batch size 0: ZeroDivisionError)
# or "succeed" with an untrained model (epochs 0), so the config is refused when it is built.
RANGES = {
    "seed": (0, 2**32 - 1, True, True),  # numpy's seed range
    "max_docs": (0, None, True, None),
    "force_stage": (0, 4, True, True),
    "similarity.max_length": (1, None, True, None),
    "similarity.batch_size": (1, None, True, None),
    "similarity.refine_rounds": (0, None, True, None),
    "similarity.refine_weight": (0.0, 1.0, True, True),  # 1 = the name alone
    "similarity.refine_share": (0.0, 1.0, False, True),
    "mining.root_width": (1, None, True, None),
    "mining.top_share": (0.0, 1.0, False, True),
    # conf is a difference of similarities; from 1 on no document keeps a core class
    "mining.floor": (None, 1.0, None, False),
    "classifier.max_length": (1, None, True, None),
    "classifier.gnn_num_layers": (0, None, True, None),
    "classifier.gnn_hidden_dim": (1, None, True, None),
    "classifier.batch_size": (1, None, True, None),
    "classifier.epochs": (1, None, True, None),
    "classifier.learning_rate": (0.0, None, False, None),
    "classifier.head_learning_rate": (0.0, None, False, None),
    "classifier.weight_decay": (0.0, None, True, None),
    "classifier.warmup_ratio": (0.0, 1.0, True, False),
    "classifier.val_fraction": (0.0, 1.0, False, False),
    "classifier.early_stopping_patience": (0, None, True, None),
    "self_training.update_interval": (1, None, True, None),
    "self_training.max_batches": (1, None, True, None),
    "self_training.stop_tolerance": (0.0, 1.0, True, True),
    "self_training.self_train_threshold": (0.0, 1.0, True, True),
    "self_training.val_patience": (0, None, True, None),
    "self_training.learning_rate": (0.0, None, False, None),
    "self_training.head_learning_rate": (0.0, None, False, None),
    "self_training.batch_size": (1, None, True, None),
    "evaluation.save_top_k": (1, None, True, None),
    "evaluation.batch_size": (1, None, True, None),
    "ray.num_cpus": (0, None, True, None),
    "ray.stage1_actors": (0, None, True, None),
    "ray.stage1_batch_size": (1, None, True, None),
    "ray.shard_size": (1, None, True, None),
    "ray.num_workers": (1, None, True, None),
    "ray.max_failures": (-1, None, True, None),  # -1: retry forever (Ray's convention)
    "tracking.log_interval": (1, None, True, None),
}


def check_ranges(cfg: Config) -> None:
    """Refuse a value outside its key's range, naming the key (ConfigError: exit 2)."""
    import math

    for key, (low, high, low_ok, high_ok) in RANGES.items():
        value = get_value(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        too_low = low is not None and (value < low or (value == low and not low_ok))
        too_high = high is not None and (value > high or (value == high and not high_ok))
        if too_low or too_high:
            raise ConfigError(key, f"expected {_describe_range(low, high, low_ok, high_ok)}, got {value!r}")


def _describe_range(low, high, low_ok, high_ok) -> str:
    if high is None:
        return f"{'at least' if low_ok else 'more than'} {low}"
    if low is None:
        return f"{'at most' if high_ok else 'less than'} {high}"
    return f"a value in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"


MODEL_KEYS = ("similarity.model", "classifier.encoder")


def check_model_paths(cfg: Config) -> None:
    """Each model setting must name a folder that exists, 'bundled', or a Hugging Face model name that can be
    loaded (from the local cache when HF_HUB_OFFLINE is set); checked before any stage runs."""
    for key in MODEL_KEYS:
        name = get_value(cfg, key)
        if name == "bundled":
            continue
        path = Path(name).expanduser()
        looks_like_path = path.is_absolute() or name.startswith((".", "~")) or path.exists() or name.count("/") > 1
        if looks_like_path:
            if not path.is_dir():
                raise ConfigError(key, f"model folder {name!r} does not exist")
            continue
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(name)
        except HFValidationError:
            raise ConfigError(key, f"{name!r} is neither 'bundled', a model folder, nor a Hugging Face model name") from None
        if _hub_offline() and not _in_hub_cache(name):
            raise ConfigError(key, f"model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return isinstance(found, str)
