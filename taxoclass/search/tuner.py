"""Hyper-parameter search: Ray Tune + Optuna (TPE) + ASHA, one wandb run per trial, grouped.

    taxoclass search --smoke                                         # 3 tiny trials on the demo data, CPU
    taxoclass search --config my.yaml --num-samples 20 --gpus-per-trial 1
    taxoclass search --config my.yaml --gpus-per-trial 0.25          # four one-worker trials per GPU
    taxoclass search --space sweep.yaml --name my-search             # the seed's wandb sweep.yaml, translated
    taxoclass search --name my-search --resume                       # continue a killed search

(`python tune/search.py ...` is the same command; the flags: `taxoclass/search/flags.py`.)

Features:
- before anything starts, one trial's CPUs and GPUs (the trial, its Train workers) are checked
  against the cluster: a trial that does not fit is shrunk with a one-line notice, or the
  search stops with a one-line error (resources.py); Ctrl-C ends it at the first press;
- each trial runs stages 3-4 of the pipeline on Ray Train inside a Tune function (the Train V2
  pattern); stages 1-2 are computed once, before the trials, into `<search>/cache`, which every
  trial reads; the trials' run dirs are `<search>/runs/<trial>`;
- `OptunaSearch` (TPE, seeded; random or grid for sweep files) with a persistent study
  (`<search>/optuna.db`, or `--storage URL`) named after the search; with `--objective
  silver_loss`, the one objective reported during a trial, `ASHAScheduler` over the trial's
  reports (stage-3 epochs, then stage-4 target updates); the first trial runs the base
  config's values (the "default" trial);
- the objective never sees the test set (objectives.py): by default `path_margin`, the
  final model's mean gap between the best and the runner-up root-to-leaf path on a fixed sample
  of corpus documents (maximised; validated by scripts/validate_objective.py); `--objective`
  `silver_loss`, `silver_f1` or `teacher_f1`; with `--dev FILE` the Example-F1 on that labelled
  dev split (maximised). Every trial reports all of them; test metrics only for the record;
- `WandbLoggerCallback`: one wandb run per trial (the parameters as config; the objective and
  the pipeline's `stage3/...`, `stage4/...`, `test/...` metrics), all in one group named after
  the search, job type `hpo-trial`, its files under `WANDB_DIR` when set, else the search folder;
  `WANDB_MODE=offline` works;
- at the end: `trials.md` / `trials.csv` (with the objective's correlation and regret against
  the held-out test score, and whether the winner beats the default), `best_config.yaml` (the
  base config plus the winning parameters) and `best_trial_config.yaml` (the winner's full config);
- `--resume` continues a killed search with `Tuner.restore`, keeping finished trials and the study.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from taxoclass.atomic import writable_dir
from taxoclass.config import Config, build_config, get_value, to_dict, with_values
from taxoclass.distributed.preflight import check_ray
from taxoclass.distributed.ray_instance import join_or_start
from taxoclass.errors import ConfigError
from taxoclass.search.objectives import DESCRIBE, OBJECTIVES
from taxoclass.search.resources import TrialPlan, plan_trials
from taxoclass.search.results import OBJECTIVE, finish
from taxoclass.search.shared import compute_shared_stages, stage1_settings, stage1_values
from taxoclass.search.space import Space, base_point, default_space, grid_points, read_sweep, to_tune
from taxoclass.search.trial import COLUMNS, TRIAL_FACTS, run_trial
from taxoclass.tracking import has_api_key


def objective_mode(args) -> str:
    return "max" if args.dev else OBJECTIVES[args.objective]


def max_reports(cfg: Config, space: Space) -> int:
    """Reports a trial makes at most: per stage-3 epoch, per stage-4 target update, each Train run's
    final report, and the trial's own last one (ASHA ends a trial at max_t, so this must not be short)."""
    st = cfg.self_training
    epochs = cfg.classifier.epochs
    for p in space.params:  # the space may give more epochs than the base config
        if p.key == "classifier.epochs":
            epochs = int(max(p.values) if p.values else p.high)
    stage4 = math.ceil(st.max_batches / st.update_interval) + 1 if st.enabled != "false" else 0  # auto may run it
    return epochs + 1 + stage4 + 1


def make_sampler(space: Space, seed: int):
    import optuna

    if space.sampler == "grid":
        return optuna.samplers.GridSampler(grid_points(space), seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def build_tuner(args, cfg: Config, space: Space, search_dir: Path, name: str, plan: TrialPlan, first: dict | None,
                wandb_dir: str):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from taxoclass.search.callbacks import TrialLines, TrialWandbCallback

    mode = objective_mode(args)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=to_dict(cfg), search_dir=str(search_dir), dev=args.dev, objective=args.objective,
                             in_process=plan.in_process),
        plan.resources())
    if args.resume:
        if not tune.Tuner.can_restore(str(search_dir)):
            raise ConfigError("--resume", f"no search to resume at {search_dir}")
        # the searcher comes back with its study (the same storage), the callbacks with their settings
        return tune.Tuner.restore(str(search_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    callbacks = [TrialWandbCallback(project=cfg.tracking.project, group=name, job_type="hpo-trial", log_config=True,
                                    entity=cfg.tracking.entity or None, tags=list(cfg.tracking.tags) or None,
                                    dir=wandb_dir),
                 TrialLines(args.num_samples, [OBJECTIVE, "test/example_f1"], [p.key for p in space.params])]
    run_config = tune.RunConfig(name=name, storage_path=str(search_dir.parent), callbacks=callbacks, verbose=0)
    storage = optuna.storages.RDBStorage(args.storage or f"sqlite:///{search_dir / 'optuna.db'}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    domains = OptunaSearch.convert_search_space(to_tune(space))  # Optuna's own distributions: no conversion warning
    searcher = OptunaSearch(space=domains, metric=OBJECTIVE, mode=mode, sampler=make_sampler(space, cfg.seed), storage=storage, study_name=name, points_to_evaluate=[first] if first else None)
    if args.no_asha or mode == "max":  # the max objectives exist only at the end of a trial: nothing for ASHA to compare
        scheduler = FIFOScheduler()
    else:
        scheduler = ASHAScheduler(metric=OBJECTIVE, mode=mode, time_attr="training_iteration", max_t=max_reports(cfg, space),
                                  grace_period=1, reduction_factor=2)
    # one process serves trial after trial (the trials' resources are alike): no new interpreter, torch and model per trial
    tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=args.num_samples,
                                  max_concurrent_trials=args.max_concurrent, reuse_actors=plan.in_process,
                                  trial_dirname_creator=trial_dirname)
    # every trial's stage-1 settings in its config (and so its wandb run's), the space's values over the base's
    return tune.Tuner(trainable, param_space=stage1_values(cfg), tune_config=tune_config, run_config=run_config)


def trial_dirname(trial) -> str:
    """Tune's folder for a trial: its id, as its run dir under runs/ (Tune's default spells out every stage-1 setting
    of the trial's config, past a file name's length)."""
    return f"trial_{trial.trial_id}"


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


def run_search(args, prog: str) -> int:
    """The whole search for parsed arguments (`cli.py`); `prog` names the command in its notes."""
    # Tune's own Ctrl-C handler waits for a second press; without it the first press ends the search
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "10")  # a result's trip through Optuna's SQLite is not worth a warning
    # a trial ASHA stops is asked to stop, and its Train run holds its workers' CPUs until the trial's
    # process ends: kill it soon, or the next trial's worker group cannot start
    os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "5")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials work in the driver's folder, not Ray's session folder
    # one line per trial (TrialLines) is the search's output: Tune's legacy reporter at verbose=0 prints nothing (the new
    # engine prints a configuration box and a TensorBoard hint whatever the verbosity), and Tune's automatic CSV, JSON
    # and TensorBoard loggers are off (trials.csv and wandb hold the results)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    preset = args.preset or ("debug" if args.smoke and not args.config else None)
    cfg = build_config(preset, args.config, args.overrides)
    user_base = build_config(args.preset, args.config, args.overrides)  # what best_config.yaml starts from
    check_ray(cfg.ray)  # a dead cluster address, storage that takes no write: one line now, not a search folder first
    if args.num_samples is None:
        args.num_samples = 3 if args.smoke else 16
    space = read_sweep(args.space) if args.space else default_space()
    constants = {p.key: p.values[0] for p in space.params if p.kind == "constant"}  # a sweep's `value:` entries
    # the trials' wandb runs come from WandbLoggerCallback; the constants are settings of every trial
    cfg = with_values(cfg, {"runtime": "ray", "tracking.use_wandb": False, **absolute_paths(cfg), **constants}, "the search space")
    settings = stage1_settings(space, cfg)  # a range over a key that needs new vectors stops here, before Ray starts
    name = args.name or f"search-{Path(str(cfg.data)).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    args.name = name
    search_dir = Path(cfg.output_dir) / name
    search_dir.mkdir(parents=True, exist_ok=True)
    # WandbLoggerCallback's logging actor reads these: they must be set before Ray starts. A WANDB_DIR
    # the user set is kept (the trials' wandb files go there, as a plain run's would), made absolute like
    # the other paths the search hands to Ray, and checked: wandb would fall back to a temporary folder,
    # with a warning, if it did not exist or took no files
    wandb_dir = str(writable_dir(Path(os.environ.get("WANDB_DIR") or search_dir).resolve(), "the wandb files (WANDB_DIR)"))
    os.environ["WANDB_DIR"] = wandb_dir
    os.environ.setdefault("WANDB_SILENT", "true")
    if not has_api_key() and os.environ.get("WANDB_MODE", "online") == "online":
        print(f"{prog}: warning: no wandb API key (WANDB_API_KEY or `wandb login`): trials log to wandb offline "
              "(wandb sync later)", file=sys.stderr)
        os.environ["WANDB_MODE"] = "offline"
    # Ray's own warnings and notes at start (token authentication, the dashboard's address) are not the search's
    # output; its errors still are. The dashboard: see start_local_ray
    join_or_start(cfg.ray, dashboard=True, log_to_driver=False, logging_level=logging.ERROR)
    import ray

    plan = plan_trials(args.gpus_per_trial, cfg.ray.cpus_per_worker, ray.cluster_resources(), args.max_concurrent)
    for notice in plan.notices:
        print(f"{prog}: note: {notice}", file=sys.stderr)
    cfg = with_values(cfg, plan.settings())
    args.max_concurrent = plan.concurrent
    mode = objective_mode(args)
    # DESCRIBE says max or min itself
    what = "dev Example-F1 (max)" if args.dev else f"{args.objective}, {DESCRIBE[args.objective]}"
    print(f"search {name}: {space.describe()}; {args.num_samples} trials; {plan.describe()}; objective: {what}", flush=True)
    first = None if space.sampler == "grid" else base_point(space, {p.key: get_value(cfg, p.key) for p in space.params})
    t0 = time.time()
    compute_shared_stages(cfg, search_dir, settings)
    tuner = build_tuner(args, cfg, space, search_dir, name, plan, first, wandb_dir)
    # one line per trial (TrialLines) instead of Tune's banners, and a failed trial's traceback in its error.txt
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    t1 = time.time()
    results = tuner.fit()
    timing = {"shared_seconds": t1 - t0, "trials_seconds": time.time() - t1, "concurrent": plan.concurrent,
              "trials": len(results)}
    (search_dir / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")  # scripts/bench_search.py reads it
    finish(results, [p.key for p in space.params], constants, user_base, search_dir, name, mode, first, COLUMNS + TRIAL_FACTS)
    print(f"search {name}: stages computed once {timing['shared_seconds']:.0f} s; {timing['trials']} trials "
          f"{timing['trials_seconds']:.0f} s ({timing['trials_seconds'] / max(1, timing['trials']) * plan.concurrent:.1f} s a "
          f"trial, {plan.concurrent} at once)")
    return 0
