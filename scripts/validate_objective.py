"""Does the search's label-free objective pick good models? (issue: the search, item 6)

    python scripts/validate_objective.py                          # 16 trials on each of the two sets (hours on CPU)
    python scripts/validate_objective.py --trials 2 --sets relaclass max_docs=200   # a quick look

For each set (relaclass-amazon-1000; amazon-531's generated documents) it runs one search of
`--trials` trials (`tune/search.py --no-asha`, so every trial finishes, on the default
config as scripts/bench_quality.py) and scores each trial's final model, for the record only, on the
held-out half of the gold: the documents at odd positions of the gold file (the even half is
the dev half, what `--dev` would use). For each label-free objective the trials report
(`silver_loss`: stage 3's best validation loss on the pseudo-labels, minimised; `silver_f1`:
the decoder's Example-F1 against the held-out pseudo-labels, maximised) it prints the Spearman
correlation between the objective (signed so that higher is better) and the held-out
Example-F1, and the regret: the best trial's held-out Example-F1 minus that of the trial the
objective picks. Target: correlation >= 0.5 and regret <= .01 on both sets.
Results: <out>/validate.json and one table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bench_quality import SHARED  # noqa: E402

from taxoclass.config import build_config  # noqa: E402
from taxoclass.metrics import evaluate_rankings  # noqa: E402
from taxoclass.pipeline import prepare_inputs  # noqa: E402
from taxoclass.rundir import PREDICTIONS, read_predictions  # noqa: E402
from tune.report import objective_check  # noqa: E402

SETS = {
    "relaclass": [f"data={SHARED / 'relaclass-amazon-1000'}"],
    "generated": ["--preset", "amazon-531", f"data={SHARED / 'amazon-531'}", "data_variant=generated"],
}
# the objectives every trial reports: (trials.csv column, mode)
OBJECTIVES = {"silver_loss": ("stage3/best_val_loss", "min"), "silver_f1": ("silver/example_f1", "max")}
HELD_OUT = "heldout/example_f1"


def held_out_f1(search_dir: Path, trial: str, gold: dict) -> float | None:
    """Example-F1 of a trial's predictions on the gold documents at odd positions (`gold` caches them)."""
    run_dir = search_dir / "runs" / trial
    if not (run_dir / PREDICTIONS).is_file():
        return None
    if not gold:
        inputs = prepare_inputs(build_config(config_file=str(run_dir / "config.yaml"), environ={}))
        gold.update(ids=inputs.test.ids[1::2], golds=inputs.test.gold[1::2], taxonomy=inputs.taxonomy)
    ranked = read_predictions(run_dir / PREDICTIONS, gold["taxonomy"])
    return evaluate_rankings([ranked[d] for d in gold["ids"]], gold["golds"], gold["taxonomy"].levels)["example_f1"]


def validate_set(name: str, args, out: Path) -> dict:
    search_dir = out / f"validate-{name}"
    cmd = [sys.executable, str(REPO / "tune" / "search.py"), "--name", search_dir.name, "--num-samples", str(args.trials),
           "--no-asha", "--gpus-per-trial", str(args.gpus_per_trial), *SETS[name], f"output_dir={out}",
           *args.overrides]
    if (search_dir / "trials.csv").is_file():
        print(f"{name}: reusing {search_dir}", flush=True)
    else:
        print(f"{name}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    with open(search_dir / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    gold: dict = {}
    for row in rows:
        for column, _ in OBJECTIVES.values():
            row[column] = float(row[column]) if row.get(column) not in (None, "") else None
        row[HELD_OUT] = held_out_f1(search_dir, row["trial"], gold)
    result = {"trials": len(rows)}
    for objective, (column, mode) in OBJECTIVES.items():
        result[objective] = objective_check(rows, mode, held_out=HELD_OUT, objective=column)
    result["rows"] = [{k: row[k] for k in ("trial", HELD_OUT, *[c for c, _ in OBJECTIVES.values()])} for row in rows]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="relaclass,generated", help=f"comma-separated, from {', '.join(SETS)}")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--gpus-per-trial", type=float, default=0)
    ap.add_argument("--out", default="runs/validate-objective", help="output folder (a finished set's search is reused)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every trial")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = {name: validate_set(name, args, out) for name in args.sets.split(",")}
    (out / "validate.json").write_text(json.dumps(results, indent=1))
    print("\n| set | trials | objective | Spearman vs held-out Ex-F1 | regret | target met |\n|---|---|---|---|---|---|")
    for name, result in results.items():
        for objective in OBJECTIVES:
            check = result[objective]
            if check is None:
                print(f"| {name} | {result['trials']} | {objective} | - | - | fewer than 3 finished trials |")
                continue
            met = check["spearman"] >= 0.5 and check["regret"] <= 0.01
            print(f"| {name} | {check['trials']} | {objective} | {check['spearman']:.2f} | {check['regret']:.4f} | "
                  f"{'yes' if met else 'no'} |")


if __name__ == "__main__":
    main()
