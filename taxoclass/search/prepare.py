"""A search's settings, from the command line or from the record of the search it resumes, checked before Ray starts.

`prepare(args, prog)` reads `args` (never changes them), builds the config once and checks what can be
checked before any work, each failure one line (exit status 2), nothing written:
- the space: a `--space` file's values and bounds against each key's valid range (a model folder that
  does not exist, an epoch count below 1: `config key 'parameters.KEY': ...`), and its keys that need
  new document vectors given as lists (shared.py);
- `--dev`: the file, its lines against the taxonomy, and that its documents are in the corpus;
- `--storage`: the Optuna storage opens (a sqlite file in a folder that does not exist, a scheme
  sqlalchemy does not know, a driver not installed);
- `--resume`: the search exists (its `search.json`: record.py); its settings are the ones it started
  with, and a flag given again that would change them is named in a warning.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from taxoclass.config import STAGE1_ENCODER, Config, build_config, from_dict, get_value, to_dict, with_values
from taxoclass.errors import ConfigError, DataError
from taxoclass.model_paths import MODEL_KEYS, check_model_paths
from taxoclass.search.objectives import DEFAULT_OBJECTIVE, OBJECTIVES
from taxoclass.search.record import SEARCH_FILE, finished, read_search, read_trials, unfinished
from taxoclass.search.shared import stage1_settings
from taxoclass.search.space import Param, Space, base_point, default_space, read_sweep

SMOKE_PRESET = "debug"


@dataclass(frozen=True)
class Search:
    name: str
    dir: Path
    cfg: Config  # what every trial starts from: the user's config with the search's own settings
    user_base: Config  # the config the user gave (with --smoke's preset): best_config.yaml is it plus the winner's values
    space: Space
    objective: str
    dev: str | None
    storage: str | None  # an Optuna storage URL; None: sqlite in the search folder
    num_samples: int  # trials in all, those of earlier runs of a resumed search included
    first: dict | None  # the default trial's point (None: a grid, or base values outside the space)
    resume: bool = False
    study: str = ""  # the Optuna study and wandb group: the name the search started with (its folder may be a copy)
    done: list[dict] = field(default_factory=list)  # finished trials' records, kept (resume)
    again: list[dict] = field(default_factory=list)  # trials left running or failed: their parameters run again (resume)

    @property
    def mode(self) -> str:
        return "max" if self.dev else OBJECTIVES[self.objective].mode

    @property
    def constants(self) -> dict:
        """A sweep file's `value:` entries: settings of every trial."""
        return {p.key: p.values[0] for p in self.space.params if p.kind == "constant"}

    @property
    def settings(self) -> list[dict]:
        """The stage-1 settings computed once, before the trials (shared.py)."""
        return stage1_settings(self.space, self.cfg)

    @property
    def left(self) -> int:
        return max(0, self.num_samples - len(self.done))

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.dir / 'optuna.db'}"

    def points(self) -> list[dict]:
        """The points the searcher draws first: the default trial, and a resumed search's unfinished trials again."""
        from taxoclass.search.results import is_default

        keys = [p.key for p in self.space.params if p.kind != "constant"]
        points = [{k: r["config"][k] for k in keys if k in r["config"]} for r in self.again]
        if self.first and not any(is_default(r["config"], self.first) for r in self.done + self.again):
            points.insert(0, self.first)
        return points[: self.left]

    def __post_init__(self):
        if not self.study:
            object.__setattr__(self, "study", self.name)

    def record(self) -> dict:
        """search.json's settings (record.py)."""
        return {"name": self.study, "base": to_dict(self.cfg), "user_base": to_dict(self.user_base),
                "space": {"source": self.space.source, "sampler": self.space.sampler,
                          "params": [vars(p) for p in self.space.params]},
                "objective": self.objective, "dev": self.dev, "storage": self.storage,
                "num_samples": self.num_samples, "first": self.first}


def prepare(args, prog: str) -> Search:
    """The search `args` ask for, checked; a resumed search as its record says."""
    preset = args.preset or (SMOKE_PRESET if args.smoke and not args.config else None)
    user_base = build_config(preset, args.config, args.overrides)
    if args.resume:
        return _resumed(args, user_base, prog)
    space = read_sweep(args.space) if args.space else default_space()
    cfg = search_config(user_base, space)
    check_space(space, cfg)
    stage1_settings(space, cfg)  # a range over a key that needs new vectors: refused here
    dev = check_dev(args.dev, cfg) if args.dev else None
    if args.storage:
        open_storage(args.storage)
    name = args.name or f"search-{Path(str(cfg.data)).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    search_dir = Path(cfg.output_dir) / name
    if (search_dir / SEARCH_FILE).exists():
        raise ConfigError("--name", f"{search_dir} holds a search already: `--name {name} --resume` continues it, "
                                    "or choose another --name")
    first = None if space.sampler == "grid" else base_point(space, {p.key: get_value(cfg, p.key) for p in space.params})
    return Search(name, search_dir, cfg, user_base, space, args.objective or DEFAULT_OBJECTIVE, dev, args.storage,
                  args.num_samples or (3 if args.smoke else 16), first)


def search_config(user_base: Config, space: Space) -> Config:
    """What every trial starts from: on Ray (a one-worker trial runs locally in its Tune process: trial.py), wandb
    from the search's callback, paths absolute, and a sweep file's constants."""
    constants = {p.key: p.values[0] for p in space.params if p.kind == "constant"}
    return with_values(user_base, {"runtime": "ray", "tracking.use_wandb": False, **absolute_paths(user_base), **constants},
                       "the search space")


def absolute_paths(cfg: Config) -> dict:
    """Paths as the driver sees them: a trial runs elsewhere (Tune's working dir, another node)."""
    paths = {"output_dir": str(Path(cfg.output_dir).resolve())}
    if cfg.cache_dir:
        paths["cache_dir"] = str(Path(cfg.cache_dir).resolve())
    for key in ("data", "test_corpus"):
        value = getattr(cfg, key)
        if value and Path(value).exists():
            paths[key] = str(Path(value).resolve())
    return paths


def check_space(space: Space, cfg: Config) -> None:
    """Every value a trial can draw is one the config takes: each listed value, and both ends of each range (a
    model folder that does not exist, a count below its minimum), as a ConfigError naming the space's key."""
    for p in space.params:
        where = f"parameters.{p.key}"
        if p.kind == "log_uniform_values" and p.low <= 0:
            raise ConfigError(where, f"a log-uniform range must start above 0, got min {p.low:g}")
        if p.kind in ("categorical", "constant"):
            values = p.values
        elif p.kind == "int_uniform":
            values = [int(p.low), int(p.high)]
        else:
            values = [p.low, p.high]
        for value in values:
            try:
                with_values(cfg, {p.key: value})
                if p.key in MODEL_KEYS and value != STAGE1_ENCODER:  # as build_config checks a model setting
                    check_model_paths({p.key: value})
            except ConfigError as err:
                raise ConfigError(where, f"{value!r} cannot be drawn: {err.message}") from None


def check_dev(dev: str, cfg: Config) -> str:
    """The --dev file, read as its trials will read it (objectives.dev_example_f1); its absolute path."""
    from taxoclass.data.readers import read_doc2labels
    from taxoclass.pipeline import prepare_inputs

    path = Path(dev)
    if not path.is_file():
        raise DataError(path, "dev file not found (--dev)")
    inputs = prepare_inputs(cfg)
    gold = read_doc2labels(path, inputs.taxonomy)
    if not set(gold) & set(inputs.corpus.ids):
        raise ConfigError("--dev", f"none of the documents of {dev} is in the corpus")
    return str(path.resolve())


def open_storage(url: str):
    """The Optuna storage at `url`, or a one-line ConfigError saying why it does not open."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # noqa: BLE001 - sqlalchemy's and the drivers' errors, whatever their class
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError("--storage", f"{url} cannot be opened ({type(err).__name__}: {text})") from None


def _space(data: dict) -> Space:
    return Space([Param(**p) for p in data["params"]], data["sampler"], data["source"])


def _resumed(args, given: Config, prog: str) -> Search:
    """The search of `--name` in `output_dir`, as its record says; `--num-samples`, if given, the new total."""
    if not args.name:
        raise ConfigError("--resume", "needs the --name of the search to continue")
    search_dir = Path(given.output_dir).resolve() / args.name
    if not (search_dir / SEARCH_FILE).is_file():
        held = " (it holds no search.json: a search of an earlier taxoclass, whose Tune state is pickles and is " \
               "never loaded)" if search_dir.is_dir() else ""
        raise ConfigError("--resume", f"no search to resume at {search_dir}{held}")
    rec = read_search(search_dir)
    where = search_dir / SEARCH_FILE
    try:
        cfg, user_base, space = from_dict(rec["base"], str(where)), from_dict(rec["user_base"], str(where)), _space(rec["space"])
    except (KeyError, TypeError) as err:
        raise DataError(where, f"not a search record of this taxoclass ({type(err).__name__}: {err})") from None
    records = read_trials(search_dir)
    search = Search(args.name, search_dir, cfg, user_base, space, rec["objective"], rec.get("dev"), rec.get("storage"),
                    args.num_samples or rec["num_samples"], rec.get("first"), True, str(rec.get("name") or args.name),
                    finished(records), unfinished(records))
    if search.dev and not Path(search.dev).is_file():
        raise DataError(search.dev, "dev file not found (--dev of the search resumed)")
    if search.storage:
        open_storage(search.storage)
    changed = _changed(args, search, given)
    if changed:
        print(f"{prog}: warning: --resume continues {args.name} with the settings it started with ({where}); not "
              f"applied: {', '.join(changed)}", file=sys.stderr)
    return search


def _changed(args, search: Search, given: Config) -> list[str]:
    """The flags of a --resume command that ask for something other than the search's record."""
    changed = []
    if args.space and read_sweep(args.space) != search.space:
        changed.append("--space")
    if args.objective and args.objective != search.objective:
        changed.append("--objective")
    if args.dev and str(Path(args.dev).resolve()) != search.dev:
        changed.append("--dev")
    if args.storage and args.storage != search.storage:
        changed.append("--storage")
    overrides = [o for o in args.overrides if not o.startswith("output_dir=")]  # where to find it: not a setting
    if (args.config or args.preset or args.smoke or overrides) and \
            to_dict(search_config(given, search.space)) != to_dict(search.cfg):
        changed.append("the config (--config, --preset, --smoke, key=value)")
    return changed
