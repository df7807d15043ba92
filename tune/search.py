"""Hyper-parameter search: Ray Tune + Optuna (TPE) + ASHA, one wandb run per trial, grouped.

    python tune/search.py --smoke                                   # 3 tiny trials on the demo data, CPU
    python tune/search.py --config my.yaml --num-samples 20 --gpus-per-trial 1
    python tune/search.py --space sweep.yaml --name my-search       # the seed's wandb sweep.yaml, translated
    python tune/search.py --name my-search --resume                 # continue a killed search

Features:
- each trial runs stages 3-4 of the pipeline on Ray Train inside a Tune function (the Train V2
  pattern); stages 1-2 are computed once, before the trials, and shared through one cache;
- `OptunaSearch` (TPE, seeded; random or grid for sweep files) and `ASHAScheduler` over the
  trial's reports (stage-3 epochs, then stage-4 target updates); concurrency follows the GPUs;
- the objective never sees the test set: by default the stage-3 best validation loss on the
  pseudo-labels (label-free, minimised); with `--dev FILE` (doc_id<TAB>id,id of corpus
  documents) the Example-F1 on that labelled dev split (maximised). Test metrics of each
  trial are logged for the record only;
- `WandbLoggerCallback`: one wandb run per trial, all in one group named after the search,
  job type `hpo-trial`; `WANDB_MODE=offline` works;
- at the end: a table of trials (config, objective, test metrics) printed and written to the
  search dir, and `best_config.yaml`, which `taxoclass run --config` accepts;
- `--resume` continues a killed search with `Tuner.restore`, keeping finished trials.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from taxoclass.config import Config, build_config, from_dict, save_yaml, set_value, to_dict  # noqa: E402
from taxoclass.errors import ConfigError, TaxoclassError  # noqa: E402
from tune.space import default_space, grid_points, read_sweep, to_tune  # noqa: E402

OBJECTIVE = "objective"
RECORD_METRICS = ["test/example_f1", "test/p_at_1", "test/p_at_3", "test/mrr", "test/accuracy"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="tune/search.py", description="Hyper-parameter search for taxoclass (Ray Tune + Optuna + ASHA).")
    ap.add_argument("--config", help="base config YAML (default: the defaults, or the debug preset with --smoke)")
    ap.add_argument("--preset", help="base preset (debug, demo, amazon-531, dbpedia-298)")
    ap.add_argument("--space", help="search space: a wandb sweep.yaml (default: the seed's sweep)")
    ap.add_argument("--num-samples", type=int, default=None, help="trials (default 16; 3 with --smoke)")
    ap.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial = Ray Train workers of a trial")
    ap.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: GPUs / gpus-per-trial, else 1)")
    ap.add_argument("--name", default=None, help="search name: the wandb group and the folder under output_dir")
    ap.add_argument("--resume", action="store_true", help="continue the search of this --name")
    ap.add_argument("--smoke", action="store_true", help="a tiny CPU search on the debug preset")
    ap.add_argument("--dev", default=None, help="labelled dev split of corpus documents (doc_id<TAB>id,id): objective = its Example-F1")
    ap.add_argument("--no-asha", action="store_true", help="run every trial to the end (FIFO)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every trial")
    return ap.parse_args(argv)


def run_trial(params: dict, base: dict, search_dir: str, dev: str | None) -> None:
    """One Tune trial: the pipeline with this trial's parameters; stages 3-4 on Ray Train."""
    from ray import tune

    from taxoclass.distributed.runtime import RayRuntime
    from taxoclass.pipeline import run_pipeline

    cfg = from_dict(base, "search base config")
    for key, value in params.items():
        set_value(cfg, key, value)
    cfg.output_dir = str(Path(search_dir) / "runs")
    cfg.run_name = tune.get_context().get_trial_id()
    cfg.cache_dir = str(Path(search_dir) / "cache")  # stages 1-2 computed once, before the trials
    summary = run_pipeline(cfg, runtime=RayRuntime(cfg))
    final = {k: summary[k] for k in RECORD_METRICS + ["stage3/best_val_loss", "stage4/iteration"] if k in summary}
    final[OBJECTIVE] = dev_example_f1(cfg, Path(summary["run_dir"]), dev) if dev else summary["stage3/best_val_loss"]
    tune.report(final)


def dev_example_f1(cfg: Config, run_dir: Path, dev: str) -> float:
    """Example-F1 of the trial's model on the labelled dev documents (taken from the corpus)."""
    import torch

    from taxoclass.data.readers import read_doc2labels
    from taxoclass.decoding import decode
    from taxoclass.metrics import evaluate_rankings
    from taxoclass.pipeline import prepare_inputs
    from taxoclass.stages.model import predict_probs
    from taxoclass.stages.model_io import load_checkpoint

    inputs = prepare_inputs(cfg)
    gold = read_doc2labels(Path(dev), inputs.taxonomy)
    texts = dict(zip(inputs.corpus.ids, inputs.corpus.texts))
    ids = [d for d in gold if d in texts]
    if not ids:
        raise ConfigError("--dev", f"none of the documents of {dev} is in the corpus")
    bundle, tax = load_checkpoint(run_dir / "model.pt", torch.device("cpu"))
    probs = predict_probs(bundle.model, bundle.docs([texts[d] for d in ids]), torch.device("cpu"))
    ranked, _ = decode(probs, tax, cfg.evaluation.decoding, cfg.evaluation.save_top_k)
    return evaluate_rankings(ranked.tolist(), [gold[d] for d in ids], tax.levels)["example_f1"]


def compute_shared_stages(cfg: Config, search_dir: Path) -> None:
    """Stages 1-2 in this process, into the cache every trial reads."""
    from taxoclass.pipeline import Run

    shared = from_dict(to_dict(cfg), "search base config")
    shared.runtime, shared.output_dir, shared.run_name = "local", str(search_dir), "shared"
    shared.cache_dir = str(search_dir / "cache")
    run = Run(shared)
    try:
        sim, _ = run.similarity(force=False)
        run.mining(force=False, sim=sim)
    finally:
        run.close()


def max_reports(cfg: Config) -> int:
    """Reports a trial makes at most: per stage-3 epoch, per stage-4 target update, each Train run's
    final report, and the trial's own last one (ASHA ends a trial at max_t, so this must not be short)."""
    st = cfg.self_training
    stage4 = math.ceil(st.max_batches / st.update_interval) + 1 if st.enabled else 0
    return cfg.classifier.epochs + 1 + stage4 + 1


def build_tuner(args, cfg: Config, space, search_dir: Path, name: str):
    import optuna
    from ray import tune
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    mode = "max" if args.dev else "min"
    trainable = tune.with_parameters(run_trial, base=to_dict(cfg), search_dir=str(search_dir), dev=args.dev)
    callbacks = [WandbLoggerCallback(project=cfg.tracking.project, group=name, job_type="hpo-trial", log_config=True,
                                     entity=cfg.tracking.entity or None, tags=list(cfg.tracking.tags) or None,
                                     dir=str(search_dir))]
    run_config = tune.RunConfig(name=name, storage_path=str(search_dir.parent.resolve()), callbacks=callbacks)
    if args.resume:
        if not tune.Tuner.can_restore(str(search_dir.resolve())):
            raise ConfigError("--resume", f"no search to resume at {search_dir}")
        return tune.Tuner.restore(str(search_dir.resolve()), trainable=trainable, resume_unfinished=True, resume_errored=True)
    if space.sampler == "grid":
        sampler = optuna.samplers.GridSampler(grid_points(space), seed=cfg.seed)
    elif space.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=cfg.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=cfg.seed)
    searcher = OptunaSearch(space=to_tune(space), metric=OBJECTIVE, mode=mode, sampler=sampler)
    if args.no_asha or args.dev:  # a dev objective exists only at the end of a trial: nothing for ASHA to compare
        scheduler = FIFOScheduler()
    else:
        scheduler = ASHAScheduler(metric=OBJECTIVE, mode=mode, time_attr="training_iteration", max_t=max_reports(cfg),
                                  grace_period=1, reduction_factor=2)
    tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=args.num_samples,
                                  max_concurrent_trials=args.max_concurrent)
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def trials_table(results, space_keys: list[str], mode: str) -> tuple[list[dict], str]:
    rows = []
    for r in results:
        m = r.metrics or {}
        row = {"trial": m.get("trial_id", Path(r.path).name if r.path else "?"), "status": "error" if r.error else "ok",
               "reports": m.get("training_iteration", 0), "finished": "test/example_f1" in m}
        row.update({k: (r.config or {}).get(k) for k in space_keys})
        row[OBJECTIVE] = m.get(OBJECTIVE)
        row.update({k: m.get(k) for k in RECORD_METRICS})
        rows.append(row)
    rows.sort(key=lambda row: (row[OBJECTIVE] is None or (isinstance(row[OBJECTIVE], float) and math.isnan(row[OBJECTIVE])),
                               (row[OBJECTIVE] or 0) * (1 if mode == "min" else -1)))
    cols = list(rows[0]) if rows else []

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(row[c]) for c in cols) + " |" for row in rows]
    return rows, "\n".join(md)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except TaxoclassError as err:
        print(f"tune/search.py: error: {err}", file=sys.stderr)
        return 2


def _main(args) -> int:
    import ray

    preset = args.preset or ("debug" if args.smoke and not args.config else None)
    cfg = build_config(preset, args.config, args.overrides)
    cfg.runtime = "ray"
    cfg.tracking.use_wandb = False  # the trials' wandb runs come from WandbLoggerCallback
    if args.gpus_per_trial:
        cfg.ray.use_gpu, cfg.ray.num_workers = True, max(1, int(args.gpus_per_trial))
    if args.num_samples is None:
        args.num_samples = 3 if args.smoke else 16
    space = read_sweep(args.space) if args.space else default_space()
    name = args.name or f"search-{Path(str(cfg.data)).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    search_dir = Path(cfg.output_dir) / name
    search_dir.mkdir(parents=True, exist_ok=True)
    # WandbLoggerCallback's logging actor reads these: they must be set before ray.init()
    os.environ.setdefault("WANDB_DIR", str(search_dir.resolve()))
    if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE", "online") == "online":
        print("tune/search.py: warning: no WANDB_API_KEY: trials log to wandb offline (wandb sync later)", file=sys.stderr)
        os.environ["WANDB_MODE"] = "offline"
    print(f"search {name}: {space.describe()}; {args.num_samples} trials; objective: "
          f"{'dev Example-F1 (max)' if args.dev else 'stage-3 best validation loss on pseudo-labels (min)'}", flush=True)
    if not ray.is_initialized():
        from taxoclass.distributed.runtime import worker_env

        env = worker_env()
        if cfg.ray.address:
            ray.init(address=cfg.ray.address, runtime_env={"env_vars": env})
        else:
            ray.init(num_cpus=cfg.ray.num_cpus or None, include_dashboard=False, runtime_env={"env_vars": env},
                     _node_ip_address="127.0.0.1")
    if args.max_concurrent is None:
        gpus = ray.cluster_resources().get("GPU", 0)
        args.max_concurrent = max(1, int(gpus // args.gpus_per_trial)) if args.gpus_per_trial else 1
    compute_shared_stages(cfg, search_dir)
    tuner = build_tuner(args, cfg, space, search_dir, name)
    results = tuner.fit()
    mode = "max" if args.dev else "min"
    rows, md = trials_table(results, [p.key for p in space.params], mode)
    print(md)
    (search_dir / "trials.md").write_text(md + "\n")
    with open(search_dir / "trials.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    best = results.get_best_result(metric=OBJECTIVE, mode=mode, scope="last", filter_nan_and_inf=True)
    best_cfg = from_dict(to_dict(cfg), "search base config")
    for key in [p.key for p in space.params]:
        if key in best.config:
            set_value(best_cfg, key, best.config[key])
    best_cfg.run_name, best_cfg.output_dir, best_cfg.cache_dir = f"best-{name}", "runs", ""
    save_yaml(best_cfg, search_dir / "best_config.yaml")
    print(f"best trial {best.metrics.get('trial_id')}: {OBJECTIVE}={best.metrics[OBJECTIVE]:.4f}; "
          f"config: {search_dir / 'best_config.yaml'} (taxoclass run --config {search_dir / 'best_config.yaml'})")
    del tuner, results  # let the wandb callback finish while the interpreter is whole
    return 0


if __name__ == "__main__":
    sys.exit(main())
