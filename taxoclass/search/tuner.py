"""Hyper-parameter search: Ray Tune + Optuna (TPE) + ASHA, one wandb run per trial, grouped.

    taxoclass search --smoke                                         # 3 tiny trials on the demo data, CPU
    taxoclass search --config my.yaml --num-samples 20 --gpus-per-trial 1
    taxoclass search --config my.yaml --gpus-per-trial 0.25          # four one-worker trials per GPU
    taxoclass search --space sweep.yaml --name my-search             # the seed's wandb sweep.yaml, translated
    taxoclass search --name my-search --resume                       # continue a killed search

(`python tune/search.py ...` is the same command; the flags: `taxoclass/search/flags.py`.)

`run_search`, top to bottom:
- `prepare` (prepare.py) builds the config once and checks the space, `--dev`, `--storage` and a
  `--resume` target before anything starts; `args` are read, never changed;
- `environment` is the one place that sets the variables Ray, Tune and wandb read, before Ray starts;
- Ray starts (or is joined); one trial's CPUs and GPUs are checked against the cluster: a trial that
  does not fit is shrunk with a one-line notice, or the search stops with a one-line error
  (resources.py); Ctrl-C or SIGTERM end it at once (exit 130 or 143: flags.py);
- the search folder and its record (`search.json`, record.py) are written, and stages 1-2 are
  computed once into `<search>/cache` (shared.py), which every trial reads;
- the trials: a one-worker trial (the default) runs the pipeline in its own Tune process
  (`runtime=local`); a trial of N >= 2 GPUs trains stages 3-4 on Ray Train, N DDP workers (trial.py).
  Their run dirs are `<search>/runs/<trial>`. `OptunaSearch` (TPE, seeded; random or grid for sweep
  files) keeps a persistent study (`<search>/optuna.db`, or `--storage URL`) named after the search;
  the first trial runs the base config's values (the "default" trial); with `--objective
  silver_loss`, the one objective reported during a trial, `ASHAScheduler` compares the trial's
  reports (stage-3 epochs, then stage-4 target updates);
- the objective never sees the test set (objectives.py): by default `text_margin` (maximised); see
  `--objective`; with `--dev FILE` the Example-F1 on that labelled dev split. Every trial reports all
  of them, and its test metrics for the record;
- one wandb run per trial (callbacks.py), all in one group named after the search, job type
  `hpo-trial`, its files under `WANDB_DIR` when set, else the search folder;
- at the end (results.py): `trials.md` / `trials.csv`, `best_config.yaml` (the base config the trials
  ran on plus the winning parameters: the winner's run) and `best_trial_config.yaml` (its full config).

`--resume` never loads Tune's state (pickles, which could run code): it starts a new Tuner on the same
folder and study, keeps the finished trials as their JSON records say, and runs the unfinished ones'
parameters again, up to `--num-samples` trials in all (record.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

from taxoclass.atomic import writable_dir
from taxoclass.config import Config, to_dict, with_values
from taxoclass.distributed.preflight import check_ray
from taxoclass.distributed.ray_instance import join_or_start
from taxoclass.search.objectives import OBJECTIVES, unranked_note
from taxoclass.search.prepare import Search, open_storage, prepare
from taxoclass.search.record import forget, read_trials, write_search
from taxoclass.search.resources import TrialPlan, plan_trials
from taxoclass.search.results import OBJECTIVE, finish
from taxoclass.search.shared import compute_shared_stages, stage1_values
from taxoclass.search.space import Space, grid_points, to_tune
from taxoclass.search.trial import COLUMNS, TRIAL_FACTS, run_trial
from taxoclass.tracking import has_api_key

# Tune's settings for a search, where the user set none
TUNE_DEFAULTS = {
    "TUNE_DISABLE_SIGINT_HANDLER": "1",  # Tune's own Ctrl-C handler waits for a second press; without it the first ends it
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "TUNE_WARN_THRESHOLD_S": "10",  # a result's trip through Optuna's SQLite is not worth a warning
    # a trial ASHA stops is asked to stop, and its Train run holds its workers' CPUs until the trial's process ends:
    # kill it soon, or the next trial's worker group cannot start
    "TUNE_FORCE_TRIAL_CLEANUP_S": "5",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials work in the driver's folder, not Ray's session folder
    # one line per trial (TrialLines) is the search's output: Tune's legacy reporter at verbose=0 prints nothing (the new
    # engine prints a configuration box and a TensorBoard hint whatever the verbosity), and Tune's automatic CSV, JSON
    # and TensorBoard loggers are off (trials.csv and wandb hold the results)
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "WANDB_SILENT": "true",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C: the search ends the same way (flags.py), exit status 143."""


def end_on_sigterm() -> None:
    """SIGTERM ends the search as Ctrl-C does. Set again once Ray has started: Ray's core installs its own handler,
    which dumps a native stack trace and aborts (exit 134). A second SIGTERM ends the process at once."""
    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)


def environment(search_dir: Path, prog: str, environ=os.environ) -> dict[str, str]:
    """Every variable the search sets, in one place, before Ray starts (Tune, and WandbLoggerCallback's logging actor,
    read them there): Tune's defaults where unset; `WANDB_DIR` absolute (the user's, where a plain run's wandb files go,
    else the search folder); `WANDB_MODE=offline`, with a warning, where there is no API key."""
    env = {key: value for key, value in TUNE_DEFAULTS.items() if key not in environ}
    env["WANDB_DIR"] = str(Path(environ.get("WANDB_DIR") or search_dir).resolve())
    if not has_api_key(environ) and environ.get("WANDB_MODE", "online") == "online":
        print(f"{prog}: warning: no wandb API key (WANDB_API_KEY or `wandb login`): trials log to wandb offline "
              "(wandb sync later)", file=sys.stderr)
        env["WANDB_MODE"] = "offline"
    return env


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


def retire_stale_trials(storage, name: str) -> int:
    """A resumed search's study: the trials a killed search left running or waiting are marked failed (their
    parameters run again as new trials); the number of trials the study holds."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # killed before its first trial
        return 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)):
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return len(study.trials)


def build_tuner(search: Search, cfg: Config, plan: TrialPlan, wandb_dir: str, asha: bool = True):
    """A new Tuner on the search folder (a resumed search too: Tune's own state, pickles, is never loaded), the
    Optuna study at the search's storage, and the searcher's first points (the default, a resumed search's
    unfinished trials)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from taxoclass.search.callbacks import TrialLines, TrialRecord, TrialWandbCallback

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=to_dict(cfg), search_dir=str(search.dir), dev=search.dev,
                             objective=search.objective, in_process=plan.in_process),
        plan.resources())
    space = search.space
    callbacks = [TrialRecord(str(search.dir)),
                 TrialWandbCallback(project=cfg.tracking.project, group=search.study, job_type="hpo-trial", log_config=True,
                                    entity=cfg.tracking.entity or None, tags=list(cfg.tracking.tags) or None,
                                    dir=wandb_dir),
                 TrialLines(search.num_samples, [OBJECTIVE, "test/example_f1"], [p.key for p in space.params],
                            done=len(search.done))]
    run_config = tune.RunConfig(name=search.name, storage_path=str(search.dir.parent), callbacks=callbacks, verbose=0)
    storage = open_storage(search.storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a resumed search draws on from a new seed: the first seed's draws are the trials the study holds already
    seed = cfg.seed + (retire_stale_trials(storage, search.study) if search.resume else 0)
    domains = OptunaSearch.convert_search_space(to_tune(space))  # Optuna's own distributions: no conversion warning
    points = search.points()
    searcher = OptunaSearch(space=domains, metric=OBJECTIVE, mode=search.mode, sampler=make_sampler(space, seed),
                            storage=storage, study_name=search.study, points_to_evaluate=points or None)
    if not asha or search.mode == "max":  # the max objectives exist only at the end of a trial: nothing for ASHA to compare
        scheduler = FIFOScheduler()
    else:
        scheduler = ASHAScheduler(metric=OBJECTIVE, mode=search.mode, time_attr="training_iteration",
                                  max_t=max_reports(cfg, space), grace_period=1, reduction_factor=2)
    # one process serves trial after trial (the trials' resources are alike): no new interpreter, torch and model per trial
    tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=search.left,
                                  max_concurrent_trials=plan.concurrent, reuse_actors=plan.in_process,
                                  trial_dirname_creator=trial_dirname)
    # every trial's stage-1 settings in its config (and so its wandb run's), the space's values over the base's
    return tune.Tuner(trainable, param_space=stage1_values(cfg), tune_config=tune_config, run_config=run_config)


def trial_dirname(trial) -> str:
    """Tune's folder for a trial: its id, as its run dir under runs/ (Tune's default spells out every stage-1 setting
    of the trial's config, past a file name's length)."""
    return f"trial_{trial.trial_id}"


def start_folder(search: Search) -> None:
    """The search folder and its record (search.json); a resumed search's unfinished trials forgotten (their parameters run again
    under new ids, their partial run dirs removed)."""
    import shutil

    search.dir.mkdir(parents=True, exist_ok=True)
    write_search(search.dir, search.record())  # a resumed search's with its new --num-samples
    forget(search.dir, search.again)
    for r in search.again:
        shutil.rmtree(search.dir / "runs" / r["trial"], ignore_errors=True)


def run_search(args, prog: str) -> int:
    """The whole search for parsed arguments (`cli.py`, `tune/search.py`); `prog` names the command in its notes."""
    search = prepare(args, prog)  # the config, built once, and every check that needs no Ray: nothing written yet
    check_ray(search.cfg.ray)  # a dead cluster address, storage that takes no write: one line now, not a search folder first
    keys = [p.key for p in search.space.params]
    if search.left == 0:  # a resumed search that holds its trials already: its results again, no Ray
        print(f"search {search.name}: {len(search.done)} trials finished, --num-samples {search.num_samples}: nothing to "
              f"run (a larger --num-samples runs more)", flush=True)
        finish(read_trials(search.dir), keys, search.constants, search.user_base, search.dir, search.name, search.mode,
               search.first, COLUMNS + TRIAL_FACTS)
        return 0
    env = environment(search.dir, prog)
    if "WANDB_DIR" in os.environ:  # the user's: checked now (the search folder is made below); wandb would fall back to
        writable_dir(Path(env["WANDB_DIR"]), "the wandb files (WANDB_DIR)")  # a temporary folder, with a warning
    os.environ.update(env)
    # Ray's own warnings and notes at start (token authentication, the dashboard's address) are not the search's
    # output; its errors still are. The dashboard: see start_local_ray
    join_or_start(search.cfg.ray, dashboard=True, log_to_driver=False, logging_level=logging.ERROR)
    end_on_sigterm()  # again: Ray's core has put its own handler in place
    import ray

    plan = plan_trials(args.gpus_per_trial, search.cfg.ray.cpus_per_worker, ray.cluster_resources(), args.max_concurrent)
    for notice in plan.notices:
        print(f"{prog}: note: {notice}", file=sys.stderr)
    cfg = with_values(search.cfg, plan.settings())
    start_folder(search)
    what = "dev Example-F1 (max)" if search.dev else f"{search.objective}, {OBJECTIVES[search.objective].describe}"
    trials = f"{search.left} trials" + (f" ({len(search.done)} finished before)" if search.resume else "")
    print(f"search {search.name}: {search.space.describe()}; {trials}; {plan.describe()}; objective: {what}", flush=True)
    note = None if search.dev else unranked_note(search.space.varied_keys(), search.objective)
    if note:
        print(f"{prog}: note: {note}", file=sys.stderr, flush=True)
    t0 = time.time()
    compute_shared_stages(cfg, search.dir, search.settings)
    tuner = build_tuner(search, cfg, plan, env["WANDB_DIR"], asha=not args.no_asha)
    # one line per trial (TrialLines) instead of Tune's banners, and a failed trial's traceback in its error.txt
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    t1 = time.time()
    results = tuner.fit()
    timing = {"shared_seconds": t1 - t0, "trials_seconds": time.time() - t1, "concurrent": plan.concurrent,
              "trials": len(results)}
    (search.dir / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")  # scripts/bench_search.py reads it
    finish(read_trials(search.dir), keys, search.constants, search.user_base, search.dir, search.name, search.mode,
           search.first, COLUMNS + TRIAL_FACTS)
    print(f"search {search.name}: stages computed once {timing['shared_seconds']:.0f} s; {timing['trials']} trials "
          f"{timing['trials_seconds']:.0f} s ({timing['trials_seconds'] / max(1, timing['trials']) * plan.concurrent:.1f} s a "
          f"trial, {plan.concurrent} at once)")
    return 0
