"""How many labelled documents does `--dev` need to pick the better trial? (issue 33)

    python scripts/label_budget.py /work/exp/val/validate.json              # the trials of validate_objective.py --encoders
    python scripts/label_budget.py --budgets 200,400 runs/val/validate.json  # other k

For each set of a `scripts/validate_objective.py` result (its trials: one search per encoder, the same random
draws of the default space), it draws k labelled corpus documents at random (k = 25, 50, 100, 200; 10 draws
each, seeded), scores every trial on them as `--dev` does (the Example-F1 of the trial's decoded model), takes
the trial with the best dev score, and counts how often that trial lands within .005 of the best trial on the
held-out half of the gold (odd positions). On a transductive set (the corpus is the test set: relaclass, the
generated amazon-531 and dbpedia-298) the drawn documents are also test documents: the held-out figures then
leave them out, every trial's and the best's alike, so that no trial is judged on a document it was picked
with. 20 Newsgroups draws from its unlabelled training posts, whose gold only this script reads.
Prints one table; the smallest k with at least 9 right picks of 10 on every set is what the search's note says.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "scripts"))

from validate_objective import better_encoder  # noqa: E402

from taxoclass.config import build_config  # noqa: E402
from taxoclass.metrics import example_f1  # noqa: E402
from taxoclass.pipeline import open_finished  # noqa: E402
from taxoclass.rundir import PREDICTIONS, read_predictions  # noqa: E402
from taxoclass.search.objectives import decoded_rankings  # noqa: E402

BUDGETS = (25, 50, 100, 200)
DRAWS = 10
POOL = 1000  # labelled corpus documents each trial is scored on once; the draws take subsets of them
NEAR = 0.005


def trial_scores(run_dir: Path, pool_seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """Per-document Example-F1 of one trial: on a pool of labelled corpus documents (by id) and on the
    held-out half of the test gold (by id)."""
    cfg = build_config(config_file=str(run_dir / "config.yaml"), environ={})
    run = open_finished(run_dir, cfg)
    inputs = run.inputs
    test_ranked = read_predictions(run_dir / PREDICTIONS, inputs.taxonomy)
    held = {d: example_f1(test_ranked[d], set(g)) for d, g in zip(inputs.test.ids[1::2], inputs.test.gold[1::2])}
    if inputs.test_is_corpus:
        golds, ids = inputs.test.gold, inputs.test.ids
        rows = np.sort(np.random.default_rng(pool_seed).permutation(len(ids))[:POOL])
        pool = {ids[i]: example_f1(test_ranked[ids[i]], set(golds[i])) for i in rows}
    else:
        corpus = inputs.corpus
        if corpus.gold is None:
            raise SystemExit(f"label_budget.py: {cfg.data}: the corpus has no gold labels to draw dev documents from")
        rows = np.sort(np.random.default_rng(pool_seed).permutation(len(corpus.ids))[:POOL]).tolist()
        ranked = decoded_rankings(run.bundle(), inputs.taxonomy, cfg, run.document_inputs("corpus", rows))
        pool = {corpus.ids[i]: example_f1(r, set(corpus.gold[i])) for i, r in zip(rows, ranked)}
    return pool, held


def budget_table(rows: list[dict], budgets=BUDGETS, seed: int = 0) -> dict[int, dict]:
    """For each k: right picks out of DRAWS, the mean regret, and how often the winner used the better encoder."""
    scored = [trial_scores(Path(r["run_dir"])) for r in rows]
    pool_ids = sorted(scored[0][0])
    rng = np.random.default_rng(seed)
    out = {}
    for k in budgets:
        right, regrets, encoder_right = 0, [], 0
        for _ in range(DRAWS):
            # a sorted list, not a set: a set's order (string hashes) changes between processes, and so would the
            # last bits of each mean and the pick between tied trials
            draw = sorted(rng.choice(pool_ids, size=min(k, len(pool_ids)), replace=False).tolist())
            drawn = set(draw)
            dev = [np.mean([pool[d] for d in draw]) for pool, _ in scored]
            held = [np.mean([v for d, v in h.items() if d not in drawn]) for _, h in scored]
            pick = int(np.argmax(dev))
            regret = max(held) - held[pick]
            right += regret <= NEAR
            regrets.append(regret)
            encoder_right += rows[pick]["encoder"] == better_encoder([r["encoder"] for r in rows], held)
        out[k] = {"right": int(right), "draws": DRAWS, "mean_regret": float(np.mean(regrets)),
                  "max_regret": float(np.max(regrets)), "encoder_right": int(encoder_right)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("validate", nargs="+", help="validate.json files of scripts/validate_objective.py")
    ap.add_argument("--out", default=None, help="write the table as JSON here too")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="comma-separated k (labelled documents a draw)")
    args = ap.parse_args()
    budgets = tuple(int(k) for k in args.budgets.split(","))
    tables = {}
    for path in args.validate:
        for name, result in json.loads(Path(path).read_text()).items():
            print(f"{name}: {result['trials']} trials", flush=True)
            tables[name] = budget_table(result["rows"], budgets)
    print(f"\n| set | k | picks within {NEAR} of the best (held-out) | mean regret | largest regret | winner on the better encoder |"
          "\n|---|---|---|---|---|---|")
    for name, table in tables.items():
        for k, t in table.items():
            print(f"| {name} | {k} | {t['right']} of {t['draws']} | {t['mean_regret']:.4f} | {t['max_regret']:.4f} "
                  f"| {t['encoder_right']} of {t['draws']} |")
    for what, key in (("right picks", "right"), ("picks of the better encoder", "encoder_right")):
        enough = [k for k in budgets if all(t[k][key] >= 9 for t in tables.values())]
        print(f"smallest k with at least 9 {what} of 10 on every set: {enough[0] if enough else 'none of ' + str(budgets)}")
    if args.out:
        Path(args.out).write_text(json.dumps(tables, indent=1))


if __name__ == "__main__":
    main()
