"""The search's command line: `taxoclass search ...`, and `python tune/search.py ...` with the same flags.

Features:
- `add_arguments`: the flags, put on the `taxoclass search` subcommand (taxoclass/cli.py) or on
  tune/search.py's own parser, so the two cannot drift apart;
- `--num-samples` below 1 is refused when the arguments are parsed, before Ray starts;
- `key=value` overrides before, between or after the flags (`data=X --num-samples 8 output_dir=Y`),
  as `taxoclass search` takes them (cli.py);
- `run`: the search (tuner.py) with one-line errors (`PROG: error: ...`, exit status 2), Ctrl-C
  obeyed at the first press (exit status 130) and SIGTERM alike (exit status 143, no native crash
  dump), and the Ray instance ended with `ray.shutdown()` (never `ray stop`).
"""

from __future__ import annotations

import argparse
import sys

from taxoclass.config import preset_names
from taxoclass.errors import TaxoclassError
from taxoclass.search.objectives import DEFAULT_OBJECTIVE, OBJECTIVES

DESCRIPTION = "Hyper-parameter search for taxoclass (Ray Tune + Optuna + ASHA)."


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--config", help="base config YAML (default: the defaults, or the debug preset with --smoke)")
    ap.add_argument("--preset", help=f"base preset ({', '.join(preset_names())})")
    ap.add_argument("--space", help="search space: a wandb sweep.yaml (default: DEFAULT_SPACE of taxoclass/search/space.py)")
    ap.add_argument("--num-samples", type=at_least(1), default=None, help="trials (default 16; 3 with --smoke)")
    ap.add_argument("--gpus-per-trial", type=float, default=0,
                    help="GPUs per trial: below 1 one Train worker with that share of a GPU (0.25: 4 trials per GPU); "
                         "from 1 on that many DDP workers")
    ap.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as many as the cluster fits)")
    ap.add_argument("--name", default=None, help="search name: the wandb group, the Optuna study and the folder under output_dir")
    ap.add_argument("--resume", action="store_true", help="continue the search of this --name")
    ap.add_argument("--smoke", action="store_true", help="a tiny CPU search on the debug preset")
    ap.add_argument("--objective", choices=sorted(OBJECTIVES), default=None,
                    help=f"label-free objective (default {DEFAULT_OBJECTIVE}): " + "; ".join(f"{k}: {o.describe}" for k, o in OBJECTIVES.items()))
    ap.add_argument("--dev", default=None, help="labelled dev split of corpus documents (doc_id<TAB>id,id): objective = its Example-F1")
    ap.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///<search dir>/optuna.db)")
    ap.add_argument("--no-asha", action="store_true", help="run every trial to the end (FIFO)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every trial")
    return ap


def at_least(minimum: int):
    """An argparse type: a whole number of at least `minimum`, refused when the arguments are parsed (for
    --num-samples, before Ray starts: -1 would search without end, 0 starts Ray and stages 1-2 before Tune
    refuses it)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum}, got {value}")
        return value

    return parse


def run(args, prog: str) -> int:
    """The search for parsed arguments; errors in the input are one line naming `prog`."""
    from taxoclass.search.tuner import Terminated, end_on_sigterm, run_search

    end_on_sigterm()
    try:
        return run_search(args, prog)
    except TaxoclassError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        how, code = ("terminated", 143) if isinstance(err, Terminated) else ("interrupted", 130)
        print(f"{prog}: {how}; `--name {args.name} --resume` continues this search" if args.name else
              f"{prog}: {how}", file=sys.stderr)
        return code
    finally:
        _stop_ray()


def _stop_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def parse(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with `key=value` overrides anywhere among them (argparse takes a positional list once, before or
    after the flags, and would call the rest unrecognized)."""
    args, extra = add_arguments(ap).parse_known_args(argv)
    if any(e.startswith("-") or "=" not in e for e in extra):
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None, prog: str = "tune/search.py") -> int:
    from taxoclass.config import repeated_overrides
    from taxoclass.distributed.ray_address import RULE

    args = parse(argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=RULE), argv)
    for line in repeated_overrides(args.overrides):  # `taxoclass search` says it in taxoclass/cli.py
        print(f"{prog}: warning: {line}", file=sys.stderr)
    return run(args, prog)
