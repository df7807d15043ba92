"""One typed config: pydantic models, YAML presets/files, env and `key=value` overrides.

Features:
- each section is a pydantic model: a key is one line (type, default, `Literal` choices,
  `Field(ge=, gt=, le=, lt=)` range, description); assignment is validated too;
- precedence (later wins): defaults < preset (`preset=NAME` / `--preset`) < `--config FILE` <
  environment (the seed's names, e.g. `USE_WANDB=1`) < command-line `key=value`; the value
  that wins is validated, and its error names where it came from;
- keys are dotted (`classifier.gnn_num_layers=4`); a leaf name that is unique across sections
  may be used alone (`gnn_num_layers=4`), and the seed's upper-case names are aliases
  (`WANDB_PROJECT=x`); command-line values are YAML scalars, text keys keep their text (`run_name=007`);
- a key given twice in one YAML file is an error with its line (`_UniqueKeyLoader`), on the command
  line a warning (`repeated_overrides`: the last value counts);
- every bad value is a one-line `ConfigError` naming the dotted key: the closest valid name for an
  unknown key, the choices, the range in words; the hypothesis template, the run name and the
  model settings (`model_paths.py`) are checked when the config is built, before any work.
"""

from __future__ import annotations

import difflib
import os
import string
import typing
from pathlib import Path, PurePath
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from taxoclass.errors import ConfigError
from taxoclass.metrics import TOPK_ACCURACY
from taxoclass.model_paths import MODEL_KEYS, check_model_paths

PRESET_DIR = Path(__file__).resolve().parent / "presets"


# ---------------------------------------------------------------- value types
# pydantic's lax mode, narrowed where the CLI and the environment would otherwise surprise:
# True is not the number 1, a number in a text key is its text, `a,b` is a list.
def _number(value):
    if isinstance(value, bool):
        raise PydanticCustomError("bool_is_not_a_number", "a bool is not a number")
    return value


def _text(value):
    if value is None:
        return ""
    return str(value) if isinstance(value, (bool, int, float)) else value


def _flag(value):
    return value.strip() if isinstance(value, str) else value


def _switch(value):
    """true / false in any spelling YAML or the environment gives, as the words `Literal` compares; `auto` stays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and value in (0, 1):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return "true" if value.strip().lower() in ("1", "true", "yes", "on") else "false"
    return value.strip() if isinstance(value, str) else value


def _names(value):
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value] if isinstance(value, list) else value


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]
Text = Annotated[str, BeforeValidator(_text)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Names = Annotated[list[str], BeforeValidator(_names)]
Switch = Annotated[Literal["auto", "true", "false"], BeforeValidator(_switch)]


class Section(BaseModel):
    """A config section: unknown keys refused, read-only once built (`with_values` makes a changed copy)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    section: ClassVar[str] = ""  # the dotted prefix of this section's keys

    def __setattr__(self, name, value):
        key = f"{self.section}.{name}" if self.section else name
        raise TypeError(f"a Config is not changed after it is built: with_values(cfg, {{'{key}': ...}}) gives a copy")


class SimilarityConfig(Section):
    """Stage 1: document-class similarity."""

    section: ClassVar[str] = "similarity"
    backend: Literal["biencoder", "nli"] = "biencoder"
    model: Text = Field("bundled", description="'bundled' = the packaged all-MiniLM-L6-v2; else a HF name or path")
    template: Text = Field("This product is about {}.", description="the hypothesis; '{}' is the class text")
    max_length: Int = Field(256, ge=1, description="tokens per document")
    batch_size: Int = Field(64, ge=1)
    batch_tokens: Int = Field(0, ge=0, description="padded tokens per bi-encoder batch (0 = batch_size x max_length)")
    autocast: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="auto = bf16 on CUDA (fp16 without bf16), off on the CPU")
    lowercase: Flag = True
    nli_normalization: Literal["softmax3", "entail_vs_contra"] = "softmax3"
    pruning: Flag = Field(True, description="score only the classes the stage-2 search visits")
    class_text: Literal["name", "llm_enrichment", "enrichment"] = Field("name", description="enrichment: keywords appended")
    # class prototypes refined from the corpus (bi-encoder only; ours, after X-Class): each class
    # vector becomes normalize(w * name vector + (1 - w) * centroid of the documents whose best path
    # holds the class, the more similar `refine_share` of them), `refine_rounds` times; 0 = off (paper)
    refine_rounds: Int = Field(3, ge=0, description="prototype refinement rounds (0 = the names alone, the paper)")
    refine_weight: Float = Field(0.5, ge=0.0, le=1.0, description="weight of the name vector (1 = the name alone)")
    refine_share: Float = Field(0.5, gt=0.0, le=1.0, description="share of a class's documents in its centroid")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, template: str) -> str:
        # `{name}` would be a KeyError after stage 1's setup; no `{}` gives every class the same hypothesis
        try:
            fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                      if name is not None]
        except ValueError as err:
            raise ValueError(f"not a format template ({err}): {template!r}") from None
        if fields != [("", "", None)]:
            raise ValueError(f"expected exactly one '{{}}' (the class name) and no other '{{...}}' field "
                             f"(write '{{{{' for a literal brace), got {template!r}")
        return template


class MiningConfig(Section):
    """Stage 2: core class mining."""

    section: ClassVar[str] = "mining"
    root_width: Int = Field(2, ge=1, description="children of ROOT taken into the search")
    positivity: Flag = Field(True, description="also require conf > 0")
    # conf is a difference of similarities; from 1 on no document keeps a core class
    floor: Float = Field(0.05, lt=1.0, description="absolute floor on conf (bi-encoder scale)")
    confidence_over: Literal["parents", "ancestors"] = Field(
        "parents", description="conf compares with Par(c) + Sib(c) (paper) | ancestors: Anc(c) + Sib(c)")
    path_consistent: Flag = Field(True, description="margin rule: keep only cores on the document's best path (ours)")
    # margin: the paper's confidence-margin rule | path_top (ours): a document's best root-to-leaf path is
    # its core set when the document ranks in the top `top_share` of the documents whose best path
    # ends in the same class (by the path's mean score)
    rule: Literal["margin", "path_top"] = "path_top"
    top_share: Float = Field(0.5, gt=0.0, le=1.0)


class ClassifierConfig(Section):
    """Stage 3: text encoder + GNN class encoder, trained on core classes."""

    section: ClassVar[str] = "classifier"
    # `similarity`: stage 1's bi-encoder, so that a run (or a search trial) that changes `similarity.model` trains
    # on that encoder's vectors and starts at its prototypes, instead of mixing two encoders
    encoder: Text = Field("similarity", description="'similarity' = stage 1's bi-encoder (similarity.model; the bundled "
                          "MiniLM after an NLI stage 1), 'bundled', a HF name or a model folder")
    pooling: Literal["mean", "cls"] = "mean"
    max_length: Int = Field(256, ge=1)
    gnn_num_layers: Int = Field(3, ge=0)
    gnn_hidden_dim: Int = Field(512, ge=1)
    head_init: Literal["zeroshot", "random"] = Field(
        "zeroshot", description="zeroshot (start at the bi-encoder's scores) | random (paper as printed)")
    label_scope: Literal["paper", "all", "path"] = Field(
        "path", description="paper (parents/children) | all (ancestors/descendants) | path (cores read as one path: "
        "ancestors positive, only below the deepest core ignored)")
    negatives: Literal["all", "core_depth"] = Field(
        "core_depth", description="all (paper) | core_depth: none deeper than the document's deepest core (ours)")
    loss: Literal["path", "bce"] = Field(
        "path", description="path (ours): cross-entropy over root-to-leaf paths, a path's logit the mean of its classes' | "
        "bce (paper): binary cross-entropy per class, label_scope and negatives say which classes count")
    # below this many pseudo-labelled documents per label path (on average) a classifier learns nothing its
    # zero-shot start does not know: stage 3 keeps that start (steps aside) and says so (docs/quality.md)
    min_docs_per_label: Float = Field(10.0, ge=0.0, description="stage 3 trains only from this many pseudo-labelled "
                                      "documents per label path; below, it keeps its zero-shot start (0 = always train)")
    batch_size: Int = Field(64, ge=1)
    epochs: Int = Field(1, ge=1, description="passes over the pseudo-labelled documents")
    learning_rate: Float = Field(5e-5, gt=0.0, description="encoder")
    head_learning_rate: Float = Field(4e-3, gt=0.0, description="class features and bias")
    gnn_learning_rate: Float = Field(0.0, ge=0.0, description="GCN branch and bilinear matrix; 0 keeps them at their start "
                                     "(head_init=zeroshot: the identity and no GCN term; training them lowered 20 Newsgroups)")
    weight_decay: Float = Field(0.01, ge=0.0)
    warmup_ratio: Float = Field(0.1, ge=0.0, lt=1.0)
    val_fraction: Float = Field(0.1, gt=0.0, lt=1.0)
    early_stopping_patience: Int = Field(2, ge=0)
    amp: Literal["off", "bf16", "fp16"] = "off"
    freeze_encoder: Flag = Field(True, description="embed documents once and train the head; fine-tuning measured worse")


class SelfTrainingConfig(Section):
    """Stage 4: multi-label self-training."""

    section: ClassVar[str] = "self_training"
    # auto: after a stage 3 that trained with the path loss (self-training on its path distribution raised
    # 20 Newsgroups); off after a stage 3 that stepped aside or trained with BCE; the run says which (docs/quality.md)
    enabled: Switch = Field("auto", description="auto | true | false")
    update_interval: Int = Field(25, ge=1, description="batches between target (Q) updates")
    max_batches: Int = Field(500, ge=1, description="batch budget")
    stop_tolerance: Float = Field(0.005, ge=0.0, le=1.0, description="stop when this share of documents' top-3 sets (bce) or best paths (path loss) changed, or fewer")
    self_train_threshold: Float = Field(0.5, ge=0.0, le=1.0, description="max p above this counts as confident")
    confident_only: Flag = Field(False, description="train each interval only on confident documents (ours)")
    # label-free guard (ours): after each target update, the stage-3 loss on its held-out
    # pseudo-labelled documents; stop after this many updates without a new best and keep the best model
    val_patience: Int = Field(2, ge=0, description="0 = off: the paper's stop rules only")
    learning_rate: Float = Field(1e-6, gt=0.0)
    head_learning_rate: Float = Field(1e-3, gt=0.0)
    batch_size: Int = Field(64, ge=1)


class EvaluationConfig(Section):
    section: ClassVar[str] = "evaluation"
    # the metrics read the saved list: top10_accuracy needs at least 10 classes in it
    save_top_k: Int = Field(100, ge=max(TOPK_ACCURACY), description="classes per document in predictions/test.jsonl")
    decoding: Literal["path", "flat"] = Field("path", description="path (best root-to-leaf path first) | flat (by score)")
    batch_size: Int = Field(128, ge=1)


class RayConfig(Section):
    """runtime=ray: where and how wide the Ray parts run."""

    section: ClassVar[str] = "ray"
    address: Text = Field("", description="'' = start a private local Ray instance (RAY_ADDRESS is ignored); 'auto' = join "
                                           "the cluster RAY_ADDRESS names; HOST:PORT or ray://HOST:PORT = join that one")
    num_cpus: Int = Field(0, ge=0, description="logical CPUs of a local instance (0 = Ray's default)")
    stage1_actors: Int = Field(0, ge=0, description="scorer actors in the stage-1 pool (0 = one per GPU, or 1)")
    stage1_batch_size: Int = Field(256, ge=1, description="documents per Ray Data batch")
    shard_size: Int = Field(1024, ge=1, description="documents per Parquet shard (the unit of stage-1 resume)")
    num_workers: Int = Field(2, ge=1, description="Ray Train workers for stages 3-4")
    use_gpu: Flag = Field(False, description="one GPU per stage-1 actor and per Train worker")
    gpus_per_worker: Float = Field(1.0, description="with use_gpu: a Train worker's share of a GPU")
    cpus_per_worker: Float = Field(1.0, description="CPUs a Train worker holds")
    max_failures: Int = Field(2, ge=-1, description="Ray Train retries from the latest checkpoint (-1: forever)")
    storage_path: Text = Field("", description="checkpoints (default <run_dir>/ray); a shared path on a cluster")
    storage_wait_s: Float = Field(30.0, gt=0.0, description="seconds ray.storage_path may take to open and take a write "
                                                              "(a cloud URI: credentials, network), checked before any work")
    predict_actors: Int = Field(0, ge=0, description="taxoclass predict: model actors in the pool (0 = one per GPU, or 1)")
    predict_shard_size: Int = Field(10000, ge=1, description="taxoclass predict: texts per output shard (the unit of its resume)")


class TrackingConfig(Section):
    """Experiment tracking; the seed's upper-case names are aliases."""

    section: ClassVar[str] = "tracking"
    use_wandb: Flag = False
    project: Text = "taxoclass-hierarchical"
    entity: Text = ""
    run_name: Text = Field("", description="the wandb run's name (default: made from the config)")
    tags: Names = Field(default_factory=list)
    group: Text = ""
    job_type: Text = "train"
    mode: Literal["", "online", "offline", "disabled"] = Field("", description="empty = WANDB_MODE or online")
    log_interval: Int = Field(10, ge=1)
    log_gradients: Flag = False


class Config(Section):
    data: Text = Field("demo", description="dataset folder, JSON-lines file, or 'demo'")
    data_variant: Literal["auto", "teleclass", "generated", "jsonl"] = "auto"
    test_corpus: Text = Field("", description="evaluate on this doc_id<TAB>text file instead")
    transductive: Flag = Field(False, description="unlabelled test texts join the corpus")
    output_dir: Text = "runs"
    run_name: Text = Field("", description="the run dir is <output_dir>/<run_name>")
    cache_dir: Text = Field("", description="stage outputs (default <run_dir>/cache); a search's trials share one")
    seed: Int = Field(42, ge=0, le=2**32 - 1, description="numpy's seed range")
    device: Text = Field("auto", description="auto | cpu | cuda | cuda:N")
    runtime: Literal["local", "ray"] = "local"
    force_stage: Int = Field(0, ge=0, le=4, description="recompute from this stage on (0 = use caches)")
    resume: Text = Field("", description="a run dir or wandb run id: continue that run, skipping finished stages")
    max_docs: Int = Field(0, ge=0, description="keep only the first N corpus documents (0 = all); for smoke runs")
    similarity: SimilarityConfig = Field(default_factory=SimilarityConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    self_training: SelfTrainingConfig = Field(default_factory=SelfTrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("run_name")
    @classmethod
    def _inside_output_dir(cls, name: str) -> str:
        if PurePath(name).is_absolute() or ".." in PurePath(name).parts:
            raise ValueError(f"expected a folder name inside output_dir (relative, without '..'), got {name!r}")
        return name


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


def _leaf_fields(model=Config, prefix="") -> dict:
    out = {}
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(_leaf_fields(field.annotation, f"{prefix}{name}."))
        else:
            out[prefix + name] = field
    return out


def _leaf_type(field) -> type:
    """int, float, bool, str or list[str]; a `Literal` key is text."""
    if typing.get_origin(field.annotation) is Literal:
        return type(typing.get_args(field.annotation)[0])
    return field.annotation


LEAF_FIELDS = _leaf_fields()
LEAF_TYPES = {key: _leaf_type(field) for key, field in LEAF_FIELDS.items()}
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


# ---------------------------------------------------------------- pydantic errors in words
RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _config_error(error: dict, key: str, shown: str, where: str = "") -> ConfigError:
    """One pydantic error on dotted `key` as the ConfigError of `shown` (the name the user wrote)."""
    field, kind, value = LEAF_FIELDS[key], error["type"], error["input"]
    if kind == "literal_error":
        message = f"expected one of {', '.join(repr(c) for c in typing.get_args(field.annotation))}, got {value!r}"
    elif kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind == "finite_number":
        message = f"expected a finite number, got {float(value)!r}"
    elif kind in RANGE_ERRORS:
        message = f"expected {_range_words(field)}, got {_as_number(value, LEAF_TYPES[key])!r}"
    else:
        name = "list of strings" if LEAF_TYPES[key] == list[str] else LEAF_TYPES[key].__name__
        message = f"expected {name}, got {value!r}"
    return ConfigError(shown, message + where)


def _as_number(value, kind: type):
    """The value as the key's type, as the range compared it (`0` for a float key reads `0.0`)."""
    try:
        return kind(value)
    except (TypeError, ValueError):  # `int('0.0')`: pydantic read it, int() does not
        return value


def _range_words(field) -> str:
    bounds = {b: getattr(m, b) for m in field.metadata for b in ("ge", "gt", "le", "lt") if hasattr(m, b)}
    low, high = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    if high is None:
        return f"{'at least' if 'ge' in bounds else 'more than'} {low}"
    if low is None:
        return f"{'at most' if 'le' in bounds else 'less than'} {high}"
    return f"a value in {'[' if 'ge' in bounds else '('}{low}, {high}{']' if 'le' in bounds else ')'}"


# ---------------------------------------------------------------- sources
# A layer of values: dotted key -> (value, the name the user wrote, where it came from).
Layer = dict[str, tuple[object, str, str]]


def flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested sections -> dotted keys (`{"classifier": {"epochs": 2}}` -> `{"classifier.epochs": 2}`)."""
    out = {}
    for k, v in mapping.items():
        full = prefix + str(k)
        if isinstance(v, dict) and (full not in LEAF_TYPES):
            out.update(flatten(v, full + "."))
        else:
            out[full] = v
    return out


def unflatten(flat: dict) -> dict:
    """Dotted keys -> nested sections: `flatten`'s inverse."""
    nested: dict = {}
    for key, value in flat.items():
        *sections, leaf = key.split(".")
        target = nested
        for s in sections:
            target = target.setdefault(s, {})
        target[leaf] = value
    return nested


def _mapping_layer(mapping: dict, source: str) -> Layer:
    where = f" (in {source})"
    layer, written = {}, {}
    for key, value in flatten(mapping).items():
        try:
            full = canonical_key(key)
        except ConfigError as err:
            raise ConfigError(err.key, f"{str(err).split(': ', 1)[1]}{where}") from None
        if full in written:  # `epochs: 2` beside `classifier: {epochs: 1}`: which one was meant?
            raise ConfigError(full, f"given twice, as '{written[full]}' and as '{key}'{where}")
        written[full] = key
        layer[full] = (value, full, where)
    return layer


def _validated(layer: Layer) -> Config:
    """The Config of these values over the defaults; the first bad value is a ConfigError."""
    try:
        return Config.model_validate(unflatten({key: value for key, (value, _, _) in layer.items()}))
    except ValidationError as err:
        error = err.errors()[0]
        key = ".".join(part for part in error["loc"] if isinstance(part, str))
        _, shown, where = layer[key]
        raise _config_error(error, key, shown, where) from None


def with_values(cfg: Config, values: dict, source: str = "") -> Config:
    """A copy of `cfg` with these dotted keys set, validated as a config file's (a ConfigError naming the key, and
    `source` where the value came from); `cfg` itself never changes."""
    layer: Layer = {key: (value, key, "") for key, value in flatten(to_dict(cfg)).items()}
    where = f" (in {source})" if source else ""
    for key, value in values.items():
        full = canonical_key(key)
        layer[full] = (value, full, where)
    return _validated(layer)


def get_value(cfg: Config, key: str):
    target = cfg
    for part in canonical_key(key).split("."):
        target = getattr(target, part)
    return target


def load_yaml(path: str | Path) -> dict:
    from taxoclass.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # yaml.safe_load, a key only once
    except _RepeatedKey as err:
        raise DataError(path, f"config key '{err.key}' given twice (first on line {err.first})", err.line) from None
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


class _RepeatedKey(Exception):
    def __init__(self, key, line: int, first: int):
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader, which refuses a key given twice in one mapping: YAML keeps the last one silently,
    and a config file that sets `seed` twice is a mistake one of whose values would be lost."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden, as YAML intends
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):  # a key YAML itself cannot use says so below
                continue
            if key in lines:
                raise _RepeatedKey(key, key_node.start_mark.line + 1, lines[key])
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def repeated_overrides(items: list[str]) -> list[str]:
    """One warning per config key given twice on the command line: the last value counts, as before, but the
    user is told (a key the config does not know is left to `build_config`'s error)."""
    first: dict[str, str] = {}
    warnings = []
    for key, value in parse_overrides(items):
        try:
            full = "preset" if key == "preset" else canonical_key(key)
        except ConfigError:
            continue
        if full in first:
            warnings.append(f"config key '{full}' given twice on the command line ({first[full]}, then {key}={value}): "
                            f"the last one counts")
        first[full] = f"{key}={value}"
    return warnings


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
    pairs = parse_overrides(overrides or [])
    # `preset=NAME` may come on the command line like any key
    preset = next((value for key, value in reversed(pairs) if key == "preset"), preset)
    layer: Layer = {}
    if preset:
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(preset, preset_names(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (presets: {', '.join(preset_names())})"
            raise ConfigError("preset", f"unknown preset '{preset}'{hint}")
        layer.update(_mapping_layer(load_yaml(path), f"preset {preset}"))
    if config_file:
        layer.update(_mapping_layer(load_yaml(config_file), config_file))
    environ = os.environ if environ is None else environ
    for name, key in SEED_ALIASES.items():
        if environ.get(name, "") != "":
            layer[key] = (environ[name], name, " (environment variable)")
    for key, value in pairs:
        if key != "preset":
            full = canonical_key(key)
            is_text = LEAF_TYPES[full] is str  # keep `run_name=007` as written
            layer[full] = (value if is_text else yaml_scalar(value), full, "")
    cfg = _validated(layer)
    if cfg.classifier.head_init == "random" and cfg.classifier.gnn_learning_rate == 0:
        raise ConfigError("classifier.gnn_learning_rate", "head_init=random learns its class vectors through the GCN and the "
                          "bilinear matrix: give them a learning rate (the paper's: 4e-3), got 0.0")
    models = {key: get_value(cfg, key) for key in MODEL_KEYS}
    if models["classifier.encoder"] == STAGE1_ENCODER:  # checked as similarity.model
        del models["classifier.encoder"]
    check_model_paths(models)
    return cfg


STAGE1_ENCODER = "similarity"  # the value of `classifier.encoder` that names stage 1's model


def yaml_scalar(text: str):
    """Command-line values are parsed as YAML scalars (`1e-5`, `true`, `[a, b]`)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("", "null", "~") else value


def to_dict(cfg: Section) -> dict:
    """Plain values in declaration order, of a whole Config or of one section (cache keys, config.yaml)."""
    return cfg.model_dump()


def save_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def from_dict(mapping: dict, source: str = "mapping") -> Config:
    return _validated(_mapping_layer(mapping, source))
