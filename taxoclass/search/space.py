"""Search spaces: the default (`DEFAULT_SPACE`, a table of levers) and the translation of a wandb sweep.yaml.

A space is a list of `Param`s over config keys; `to_tune` turns it into Ray Tune sampling
domains for OptunaSearch. A wandb sweep file (program, method, metric, parameters) is read
as the seed writes it: `bayes` -> Optuna TPE, `random` -> Optuna random sampling, `grid` ->
Optuna grid. What cannot be translated is a `ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taxoclass.config import LEAF_TYPES, canonical_key, load_yaml
from taxoclass.errors import ConfigError

METHODS = {"bayes": "tpe", "random": "random", "grid": "grid"}
DISTRIBUTIONS = ("uniform", "int_uniform", "log_uniform_values", "categorical", "constant")
# the seed's parameter names that are not config keys as they stand
SEED_PARAMS = {"learning_rate": "classifier.learning_rate"}


@dataclass
class Param:
    key: str  # full config key
    kind: str  # uniform | int_uniform | log_uniform_values | categorical | constant
    low: float | None = None
    high: float | None = None
    values: list | None = None


@dataclass
class Space:
    params: list[Param]
    sampler: str = "tpe"  # tpe | random | grid
    source: str = "default"

    def varied_keys(self) -> list[str]:
        """The keys whose value differs between trials (a range, or two values or more)."""
        return [p.key for p in self.params if p.kind != "constant" and not (p.kind == "categorical" and len(p.values) < 2)]

    def describe(self) -> str:
        parts = []
        for p in self.params:
            if p.kind == "categorical":
                parts.append(f"{p.key} in {p.values}")
            elif p.kind == "constant":
                parts.append(f"{p.key} = {p.values[0]}")
            else:
                parts.append(f"{p.key} {p.kind} {p.low}..{p.high}")
        return f"{self.source} ({self.sampler}): " + "; ".join(parts)


# ---------------------------------------------------------------- the default space
# One entry per parameter, existing config keys only: the levers of today's pipeline (docs/quality.md), each of
# which moves the default pipeline's final scores (tests/test_search_space.py). Edit this table to change the
# default search; `--space sweep.yaml` replaces it. The stage-1 keys reuse the search's document vectors: a trial
# embeds its class hypotheses, no document (taxoclass/search/shared.py).
DEFAULT_SPACE = [
    # stage 1: class prototypes refined from the corpus, the largest label-free lever (+4 to +7 % over the names)
    Param("similarity.refine_rounds", "int_uniform", 1, 6),
    Param("similarity.refine_weight", "uniform", 0.2, 0.8),  # the name's weight against the members' centroid
    Param("similarity.refine_share", "uniform", 0.2, 1.0),  # the share of a class's members in its centroid
    # stage 2: the share of each end class's documents pseudo-labelled (precision against coverage)
    Param("mining.top_share", "uniform", 0.3, 0.8),
    # stage 3: whether it trains at all (it steps aside below this many pseudo-labelled documents per label path), and how
    Param("classifier.min_docs_per_label", "uniform", 0.0, 20.0),
    Param("classifier.head_learning_rate", "log_uniform_values", 1e-3, 1e-2),
    Param("classifier.epochs", "int_uniform", 1, 3),
    # stage 4, after a stage 3 that trained: its step size and when it stops
    Param("self_training.head_learning_rate", "log_uniform_values", 3e-4, 3e-3),
    Param("self_training.stop_tolerance", "log_uniform_values", 0.002, 0.02),
]


def default_space() -> Space:
    return Space([Param(p.key, p.kind, p.low, p.high, list(p.values) if p.values else None) for p in DEFAULT_SPACE])


def base_point(space: Space, values: dict) -> dict | None:
    """The base config's values as a point of `space` (the search's first, "default" trial), or None
    when a value lies outside the space (a sweep file's ranges need not contain the defaults)."""
    point = {}
    for p in space.params:
        value = values[p.key]
        if p.kind == "constant":
            continue
        inside = value in p.values if p.kind == "categorical" else p.low <= value <= p.high
        if not inside:
            return None
        point[p.key] = value
    return point


def _config_key(name: str, where: str) -> str:
    try:
        return SEED_PARAMS.get(name) or canonical_key(name)
    except ConfigError as err:
        raise ConfigError(f"{where}.{name}", str(err).split(": ", 1)[1]) from None


def _number(value, where: str):
    """YAML 1.1 reads `5e-6` as a string: accept numbers written either way."""
    if isinstance(value, bool):
        raise ConfigError(where, f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(where, f"expected a number, got {value!r}") from None


def read_sweep(path: str | Path) -> Space:
    """A wandb sweep.yaml (or a plain `parameters:` mapping) as a Space."""
    data = load_yaml(path)
    method = data.get("method", "bayes")
    if method not in METHODS:
        raise ConfigError("method", f"sweep method {method!r} cannot be translated (choose from {', '.join(METHODS)})")
    params_in = data.get("parameters")
    if not isinstance(params_in, dict) or not params_in:
        raise ConfigError("parameters", f"no parameters in {path}")
    params = []
    for name, spec in params_in.items():
        where = f"parameters.{name}"
        key = _config_key(str(name), "parameters")
        if not isinstance(spec, dict):
            raise ConfigError(where, "expected a mapping (min/max, values or value)")
        unknown = set(spec) - {"min", "max", "values", "value", "distribution"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", "cannot be translated")
        dist = spec.get("distribution")
        if dist is not None and dist not in DISTRIBUTIONS:
            raise ConfigError(f"{where}.distribution", f"{dist!r} cannot be translated (supported: {', '.join(DISTRIBUTIONS)})")
        if "value" in spec:
            params.append(Param(key, "constant", values=[spec["value"]]))
        elif "values" in spec:
            if not isinstance(spec["values"], list) or not spec["values"]:
                raise ConfigError(f"{where}.values", "expected a non-empty list")
            params.append(Param(key, "categorical", values=list(spec["values"])))
        elif "min" in spec and "max" in spec:
            low, high = _number(spec["min"], f"{where}.min"), _number(spec["max"], f"{where}.max")
            if method == "grid":
                raise ConfigError(where, "a grid needs `values`, not min/max")
            if not low < high:
                raise ConfigError(where, f"min {low} is not below max {high}")
            if dist is None:
                dist = "int_uniform" if isinstance(low, int) and isinstance(high, int) and LEAF_TYPES[key] is int else "uniform"
            params.append(Param(key, dist, float(low), float(high)))
        else:
            raise ConfigError(where, "needs min and max, values, or value")
    if method == "grid" and any(p.kind not in ("categorical", "constant") for p in params):
        raise ConfigError("method", "a grid needs `values` for every parameter")
    return Space(params, METHODS[method], str(path))


def to_tune(space: Space) -> dict:
    """Ray Tune sampling domains keyed by config key."""
    from ray import tune

    out = {}
    for p in space.params:
        if p.kind == "constant":
            out[p.key] = p.values[0]
        elif p.kind == "categorical":
            out[p.key] = tune.choice(p.values)
        elif p.kind == "log_uniform_values":
            out[p.key] = tune.loguniform(p.low, p.high)
        elif p.kind == "int_uniform":
            out[p.key] = tune.randint(int(p.low), int(p.high) + 1)
        else:
            out[p.key] = tune.uniform(p.low, p.high)
    return out


def grid_points(space: Space) -> dict:
    """For Optuna's GridSampler: every parameter's values."""
    return {p.key: list(p.values) for p in space.params}
