"""Quality benchmark: the full pipeline against its zero-shot baselines (issue: the engine, item 8).

    python scripts/bench_quality.py                       # all three sets, CPU-sized (frozen encoder)
    python scripts/bench_quality.py --sets relaclass --out /tmp/bench key=value ...
    python scripts/bench_quality.py --sets relaclass --seeds 42,1,2   # the seed-to-seed spread

For each set: the flat and greedy-path zero-shot Example-F1 of the stage-1 scores, the
target (1.25 x the stronger of the two), the same best-path decoder the pipeline uses
applied to the zero-shot scores (what training adds beyond decoding), and the
pipeline without and with self-training: Example-F1, P@1, P@3, MRR, mined-core precision.
Stages 1-3 are computed once per set (the second run reuses them from the cache).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from taxoclass.config import build_config  # noqa: E402
from taxoclass.pipeline import run_pipeline  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SETS = {
    "relaclass": (None, f"data={SHARED / 'relaclass-amazon-1000'}"),
    "amazon-531": ("amazon-531", f"data={SHARED / 'amazon-531'}"),
    "dbpedia-298": ("dbpedia-298", f"data={SHARED / 'dbpedia-298'}"),
}
# CPU-sized defaults: embed documents once and train the head only; 256-token documents
CPU_OVERRIDES = ["classifier.freeze_encoder=true", "similarity.max_length=256", "classifier.max_length=256",
                 "classifier.gnn_num_layers=3", "classifier.gnn_hidden_dim=512", "classifier.batch_size=64",
                 "self_training.batch_size=64", "self_training.update_interval=25", "self_training.max_batches=500"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="relaclass,amazon-531,dbpedia-298")
    ap.add_argument("--out", default="/tmp/taxoclass-bench-quality")
    ap.add_argument("--seeds", default="42", help="comma-separated; one row per set and seed")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rows = []
    for name, seed in [(n, int(sd)) for n in args.sets.split(",") for sd in args.seeds.split(",")]:
        preset, data = SETS[name]
        # stage 1 does not depend on the seed: one run dir per set shares its cache
        base = [data, f"output_dir={args.out}", f"run_name={name}", f"seed={seed}", *CPU_OVERRIDES, *args.overrides]
        no_st = run_pipeline(build_config(preset, overrides=base + ["self_training.enabled=false"], environ={}))
        with_st = run_pipeline(build_config(preset, overrides=base + ["self_training.enabled=true"], environ={}))
        target = 1.25 * max(no_st["zeroshot/example_f1"], no_st["zeroshot/path_example_f1"])
        rows.append({"set": name, "seed": seed, "flat": no_st["zeroshot/example_f1"], "greedy_path": no_st["zeroshot/path_example_f1"],
                     "target": target, "zs_bestpath": no_st["zeroshot/bestpath_example_f1"],
                     "core_precision": no_st.get("stage2/core_precision", float("nan")),
                     **{f"{tag}_{m}": s[f"test/{m}"] for tag, s in (("no_st", no_st), ("st", with_st))
                        for m in ("example_f1", "p_at_1", "p_at_3", "mrr")}})
        print(json.dumps(rows[-1]), flush=True)
    print()
    print("| set | seed | flat ZS | greedy path ZS | target | best-path ZS | core prec. | no self-training: Ex-F1 / P@1 / P@3 / MRR "
          "| with self-training (the full pipeline): Ex-F1 / P@1 / P@3 / MRR | full pipeline met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['seed']} | {r['flat']:.3f} | {r['greedy_path']:.3f} | {r['target']:.3f} | {r['zs_bestpath']:.3f} "
              f"| {r['core_precision']:.2f} "
              f"| {r['no_st_example_f1']:.3f} / {r['no_st_p_at_1']:.3f} / {r['no_st_p_at_3']:.3f} / {r['no_st_mrr']:.3f} "
              f"| {r['st_example_f1']:.3f} / {r['st_p_at_1']:.3f} / {r['st_p_at_3']:.3f} / {r['st_mrr']:.3f} "
              f"| {'yes' if r['st_example_f1'] >= r['target'] else 'no'} |")


if __name__ == "__main__":
    main()
