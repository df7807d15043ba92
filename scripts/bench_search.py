"""What a search trial costs, and how much of it is Ray's (issue 27, item 5).

    python scripts/bench_search.py                                     # 32 trials on relaclass-amazon-1000
    python scripts/bench_search.py --name bench-20ng --preset 20newsgroups data=../shared/data/20newsgroups
    python scripts/bench_search.py --reuse runs/bench-search            # the figures of a search that has run

Runs `tune/search.py` as the README prints it (plus `--name` and `--num-samples`), then prints, from the
search folder's `timing.json` (the driver's clock) and `trials.csv` (each trial's own):
- the stages computed once before the trials (stage 1's vectors, stage 2) and the trials' wall time after them;
- per trial: the wall time it took of the search (trials' wall time x trials at once / trials), its own work
  (`trial/seconds`: the pipeline over the shared vectors and the objectives), and the rest, Ray's share
  (starting and scheduling trials, Tune's and Optuna's bookkeeping, the wandb logging actors);
- the target: a 32-trial 20 Newsgroups search in <= 30 min after its stage 1 on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 30 * 60  # 32 trials after stage 1, on 2 cores (20 Newsgroups)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="bench-search")
    ap.add_argument("--num-samples", type=int, default=32)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--reuse", default=None, help="a finished search folder: print its figures, run nothing")
    ap.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                    help="the search's config overrides (default: data=../shared/data/relaclass-amazon-1000)")
    args = ap.parse_args()
    if args.reuse:
        search_dir, wall = Path(args.reuse), None
    else:
        overrides = args.overrides or [f"data={REPO.parent / 'shared' / 'data' / 'relaclass-amazon-1000'}"]
        cmd = [sys.executable, str(REPO / "tune" / "search.py"), "--name", args.name, "--num-samples", str(args.num_samples),
               *(["--preset", args.preset] if args.preset else []), *overrides]
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        subprocess.run(cmd, cwd=REPO, check=True)
        wall = time.time() - t0
        search_dir = REPO / "runs" / args.name
    timing = json.loads((search_dir / "timing.json").read_text())
    with open(search_dir / "trials.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("trial/seconds")]
    work = [float(r["trial/seconds"]) for r in rows]
    n, slots = timing["trials"], timing["concurrent"]
    per_trial = timing["trials_seconds"] * slots / max(n, 1)  # a trial's wall time, trials at once counted once each
    ray_share = 1 - sum(work) / max(timing["trials_seconds"] * slots, 1e-9)
    print(f"\nsearch folder {search_dir}" + (f"; whole command {wall:.0f} s" if wall else ""))
    print("| stages once | trials | at once | trials' wall time | per trial | its own work (median) | Ray's share | target |")
    print("|---|---|---|---|---|---|---|---|")
    verdict = "met" if timing["trials_seconds"] * 32 / max(n, 1) <= TARGET_S else "missed"
    print(f"| {timing['shared_seconds']:.0f} s | {n} | {slots} | {timing['trials_seconds']:.0f} s | {per_trial:.1f} s "
          f"| {statistics.median(work):.1f} s | {100 * ray_share:.0f} % | 32 trials in {timing['trials_seconds'] * 32 / max(n, 1) / 60:.1f} "
          f"min: {verdict} (<= 30 min) |")


if __name__ == "__main__":
    main()
