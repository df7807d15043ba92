"""The `taxoclass` command.

    taxoclass run [--preset NAME] [--config FILE] [key=value ...]   all stages, then evaluation
    taxoclass stage N --run DIR [key=value ...]                      one stage on an existing run dir
    taxoclass evaluate --predictions FILE --data PATH [--max-docs N] metrics of a predictions file
    taxoclass predict --run DIR --input FILE [--top-k K] [--path]    classify new texts (records on stdout)
    taxoclass predict ... --output OUT runtime=ray [ray.KEY=VALUE]   the same on Ray Data, into resumable shards
    taxoclass validate PATH                                          check a dataset, print its counts
    taxoclass config [--preset NAME] [key=value ...]                 print the resolved config
    taxoclass report RUN_DIR [RUN_DIR ...]                           PNG plots and a Markdown summary
    taxoclass search [--smoke] [--config FILE] [--num-samples N] ... hyper-parameter search (= tune/search.py)

Errors in the user's input print one line (file:line or config key) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from taxoclass.distributed.ray_address import RULE as RAY_RULE
from taxoclass.errors import ConfigError, DataError, TaxoclassError

EXIT_USAGE = 2


def _add_config_args(p: argparse.ArgumentParser) -> None:
    from taxoclass.config import preset_names

    p.add_argument("--preset", help=f"a preset name ({', '.join(preset_names())})")
    p.add_argument("--config", help="a YAML config file (e.g. a search's best_config.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. seed=3 gnn_num_layers=2 (a key given twice: the last counts, with a warning)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taxoclass",
        description="Hierarchical multi-label classification from class names alone (TaxoClass).",
    )
    from taxoclass.search.flags import DESCRIPTION, add_arguments, at_least

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run every stage and evaluate; no argument runs the built-in demo",
                       description="Run stages 1-4 and the evaluation; writes <output_dir>/<run_name>/.", epilog=RAY_RULE)
    _add_config_args(p)

    p = sub.add_parser("stage", help="run one stage (1-4, or 5 = evaluation) on an existing run dir",
                       description="Run one stage on a run dir, reading the earlier stages' cached outputs.", epilog=RAY_RULE)
    p.add_argument("number", type=int, choices=[1, 2, 3, 4, 5], help="1 similarity, 2 core mining, 3 classifier, 4 self-training, 5 evaluation")
    p.add_argument("--run", required=True, help="the run directory (holds config.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    p = sub.add_parser("evaluate", help="compute the metrics of a predictions file",
                       description="Recompute every test metric from predictions/test.jsonl against a dataset's gold.")
    p.add_argument("--predictions", required=True, help="a predictions JSON-lines file")
    p.add_argument("--data", required=True, help="the dataset (folder, JSON-lines file or 'demo')")
    p.add_argument("--variant", default="auto", help="dataset layout: auto, teleclass, generated, jsonl")
    p.add_argument("--test-corpus", default=None, help="evaluate against this doc_id<TAB>text file's documents")
    p.add_argument("--max-docs", type=at_least(0), default=0,
                   help="evaluate against the first N test documents only: what a run with max_docs=N (the debug preset: 60) predicts")
    p.add_argument("--output", default=None, help="also write the metrics as JSON here")

    p = sub.add_parser("predict", help="classify new texts with a trained run",
                       description="Print the top-k classes for each input text, as JSON lines. What a score is depends on the "
                                   "run's model: with the path loss (the default) a class's marginal probability under one "
                                   "distribution over root-to-leaf paths, and path_score the path's probability; with "
                                   "classifier.loss=bce independent sigmoids, and path_score their mean over the path; untrained "
                                   "(stage 3 stepped aside) sigmoids, and path_score the sigmoid of the path's mean logit (docs/"
                                   "run-dir.md, Predicting new texts). With runtime=ray: the same records on Ray Data, written as JSON-lines "
                                   "shards under --output; a rerun predicts only the missing shards.", epilog=RAY_RULE)
    p.add_argument("--run", required=True, help="a finished run directory")
    p.add_argument("--input", required=True, help="plain text lines, doc_id<TAB>text lines, or JSON lines with a 'text'/'token' field (detected from the first line)")
    p.add_argument("--top-k", type=int, default=3, help="classes per text (default 3)")
    p.add_argument("--path", action="store_true", help="answer the best root-to-leaf path (what evaluation ranks first) with its classes' "
                                                       "scores and its path_score (as above), and the runner-up path with its "
                                                       "path_score, instead of top-k")
    p.add_argument("--output", default=None, help="with runtime=ray: the folder of the JSON-lines shards (a rerun resumes there)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="runtime=ray (Ray Data: an actor pool, shards under --output) and ray.* keys, e.g. ray.use_gpu=true "
                        "ray.predict_actors=4 ray.address=auto")

    p = sub.add_parser("validate", help="check a dataset and print its counts",
                       description="Load every file of a dataset; report the first problem as file:line.")
    p.add_argument("path", help="dataset folder, JSON-lines file or 'demo'")
    p.add_argument("--variant", default="auto", help="dataset layout: auto, teleclass, generated, jsonl")

    p = sub.add_parser("config", help="print the resolved config as YAML")
    _add_config_args(p)

    p = sub.add_parser("report", help="PNG plots and a Markdown summary of run dirs (no wandb needed)",
                       description="Plot stage-3 losses and learning rate, stage-4 confidence and silver validation loss, and per-level "
                                       "accuracy of one or more runs; summary.md compares each with its best-path zero-shot.")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default=None, help="output folder (default: the first run's report/)")

    add_arguments(sub.add_parser("search", help="hyper-parameter search on Ray Tune (the same as python tune/search.py)",
                                 description=DESCRIPTION, epilog=RAY_RULE))
    return parser


def cmd_validate(args) -> int:
    from taxoclass.data.validate import validate

    print(validate(args.path, variant=args.variant))
    print("ok")
    return 0


def cmd_evaluate(args) -> int:
    from taxoclass.atomic import write_json
    from taxoclass.data.readers import load_dataset
    from taxoclass.evaluate import evaluate_predictions_file, format_metrics

    ds = load_dataset(args.data, variant=args.variant, test_corpus=args.test_corpus)
    metrics = evaluate_predictions_file(Path(args.predictions), ds, max_docs=args.max_docs)
    print(format_metrics(metrics))
    if args.output:
        write_json(Path(args.output), metrics, what="the metrics")
    return 0


def cmd_config(args) -> int:
    import yaml

    from taxoclass.config import build_config, to_dict

    cfg = build_config(args.preset, args.config, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def build_runtime(cfg):
    """`runtime=local`: the engine in this process (Ray is not imported); `runtime=ray`: stage 1 on Ray
    Data, stages 3-4 on Ray Train, its cluster address and checkpoint storage checked before any work."""
    if cfg.runtime == "ray":
        from taxoclass.distributed.preflight import check_ray
        from taxoclass.distributed.ray_runtime import RayRuntime

        check_ray(cfg.ray)
        return RayRuntime(cfg)
    from taxoclass.runtime import LocalRuntime

    return LocalRuntime()


def cmd_run(args) -> int:
    from taxoclass.config import build_config, with_values
    from taxoclass.pipeline import run_pipeline
    from taxoclass.tracking import make_tracker

    preset = args.preset
    if preset is None and args.config is None and not any(o.startswith(("data=", "preset=", "resume=")) for o in args.overrides):
        preset = "demo"  # `taxoclass run` alone runs the built-in demo
    cfg = build_config(preset, args.config, args.overrides)
    resume_id = None
    if cfg.resume:
        run_dir, resume_id = find_run(cfg.resume, cfg.output_dir)
        # the run dir's own config is authoritative; command-line overrides still apply
        cfg = build_config(config_file=str(run_dir / "config.yaml"), overrides=[o for o in args.overrides if not o.startswith("resume=")])
        cfg = with_values(cfg, {"output_dir": str(run_dir.parent), "run_name": run_dir.name})
    runtime = build_runtime(cfg)
    tracker = make_tracker(cfg, resume_id)
    try:
        summary = run_pipeline(cfg, sink=tracker, runtime=runtime)
    finally:
        tracker.close()
        runtime.stop()
    _print_summary(summary)
    return 0


def find_run(value: str, output_dir: str) -> tuple[Path, str | None]:
    """`resume=` takes a run dir or a wandb run id (looked up in <output_dir>/*/tracking.json; a file there that
    cannot be read is skipped with a warning naming it: it belongs to another run)."""
    candidate = Path(value)
    if not (candidate / "config.yaml").is_file():
        candidate = None
        for state in sorted(Path(output_dir).glob("*/tracking.json")):
            try:
                run_id = _tracked_run_id(state)
            except DataError as err:
                print(f"taxoclass: warning: {err}: skipped while looking for resume={value}", file=sys.stderr)
                continue
            if run_id == value:
                candidate = state.parent
                break
    if candidate is None:
        raise ConfigError("resume", f"{value!r} is neither a run dir nor a wandb run id of a run under {output_dir}/")
    state = candidate / "tracking.json"
    return candidate, _tracked_run_id(state) if state.is_file() else None


def _tracked_run_id(state: Path) -> str | None:
    """The wandb run id a run dir's tracking.json records; a file that is not a JSON object is a DataError."""
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(state, f"unreadable tracking state ({type(err).__name__}: {getattr(err, 'msg', err)})") from None
    if not isinstance(data, dict):
        raise DataError(state, "unreadable tracking state (not a JSON object)")
    return data.get("wandb_run_id")


def cmd_stage(args) -> int:
    from taxoclass.pipeline import run_config, run_single_stage

    cfg = run_config(Path(args.run), args.overrides)
    runtime = build_runtime(cfg)  # the stage runs where the run's config says: its cache key depends on it
    try:
        summary = run_single_stage(cfg, args.number, runtime)
    finally:
        runtime.stop()
    if summary:
        _print_summary(summary)
    return 0


def cmd_predict(args) -> int:
    from taxoclass.predict import FORMATS, predict_file

    cfg = _predict_config(args.overrides) if args.overrides else None  # none: the local path, as before
    if cfg is not None and cfg.runtime == "ray":
        return _predict_on_ray(args, cfg)
    if args.output:
        raise ConfigError("", "predict --output: shards in a folder are written with runtime=ray; without it the records "
                              "go to stdout")
    fmt, count, records = predict_file(Path(args.run), Path(args.input), top_k=args.top_k, path=args.path)
    print(f"taxoclass: {args.input}: {count} texts read as {FORMATS[fmt]}", file=sys.stderr, flush=True)
    try:
        for row in records:  # streamed: each chunk's records are printed as soon as they are computed
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
    except BrokenPipeError:  # `taxoclass predict ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own exit flush must not fail again
    return 0


def _predict_config(overrides: list[str]):
    """The settings `predict` takes on its command line: where it runs (`runtime`, `ray.*`); the model's own
    come from its run."""
    from taxoclass.config import build_config, canonical_key, parse_overrides

    for key, _ in parse_overrides(overrides):
        full = canonical_key(key)
        if full != "runtime" and not full.startswith("ray."):
            raise ConfigError(key, "not a setting of predict, which takes runtime=ray and ray.* keys (the model's settings "
                                   "come from its run)")
    return build_config(overrides=overrides, environ={})  # the environment's names are all tracking.* keys


def _predict_on_ray(args, cfg) -> int:
    from taxoclass.distributed.ray_predict import predict_on_ray
    from taxoclass.predict import FORMATS

    if not args.output:
        raise ConfigError("", "predict runtime=ray writes its records as shards into a folder: give --output DIR")
    from taxoclass.distributed.ray_address import check_reachable

    check_reachable(cfg.ray.address)
    done = predict_on_ray(cfg, Path(args.run), Path(args.input), Path(args.output), top_k=args.top_k, path=args.path)
    print(f"taxoclass: {args.input}: {done['texts']} texts read as {FORMATS[done['format']]}; {args.output}: "
          f"{done['shards']} shards of up to {cfg.ray.predict_shard_size} texts, {done['written']} written by "
          f"{done['actors']} actors, {done['reused']} already there", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from taxoclass.run_report import write_report

    out = write_report([Path(r) for r in args.runs], Path(args.out) if args.out else None)
    print(f"report written to {out}")
    return 0


def cmd_search(args) -> int:
    from taxoclass.search.flags import run

    return run(args, "taxoclass search")


def _print_summary(summary: dict) -> None:
    from taxoclass.run_report import headline_line

    # first the pipeline against its strongest label-free baseline, on the same protocol
    head = headline_line(summary)
    if head:
        print(head)
    keys = ["test/p_at_1", "test/p_at_3", "test/mrr", "zeroshot/example_f1", "zeroshot/path_example_f1"]
    shown = {k: summary[k] for k in keys if isinstance(summary.get(k), (int, float))}
    if shown:
        print("  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    if "run_dir" in summary:
        print(f"run dir: {summary['run_dir']}")


def _warn_repeated(overrides: list[str]) -> None:
    from taxoclass.config import repeated_overrides
    from taxoclass.errors import warn

    for line in repeated_overrides(overrides):
        warn(line)


COMMANDS = {
    "run": cmd_run,
    "stage": cmd_stage,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "validate": cmd_validate,
    "config": cmd_config,
    "report": cmd_report,
    "search": cmd_search,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may come before or after options (`stage 2 --run DIR key=value`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        _warn_repeated(getattr(args, "overrides", []))
        return COMMANDS[args.command](args)
    except TaxoclassError as err:
        print(f"taxoclass: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("taxoclass: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
