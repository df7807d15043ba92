"""Does the search's label-free objective pick good models? (issues 12 and 27)

    python scripts/validate_objective.py                          # 24 trials on relaclass, dbpedia-298 and 20 Newsgroups
    python scripts/validate_objective.py --trials 3 --sets relaclass --out /tmp/val max_docs=80   # a quick look

For each set (relaclass-amazon-1000; the generated documents of dbpedia-298, or of amazon-531; 20 Newsgroups)
it runs one search of `--trials` trials over the default space (`taxoclass search --no-asha`, so every trial
finishes, on the default config as scripts/bench_quality.py), its trials drawn at random (`--sampler random`,
the default: a sample of the whole space, where the objective must rank trials it did not steer to; `tpe`
draws them as a search does) and scores each trial's final model, for the record only, on both halves of
the gold: the dev half (documents at even positions of the gold file), where the default objective was
chosen, and the held-out half (odd positions), which is only reported. For every label-free objective of
taxoclass/search/objectives.py (a trial that did not report one, e.g. from an older search, gets it
computed from its run dir by the same function) it prints the Spearman correlation between the
objective (signed so that higher is better) and the gold Example-F1, and the regret: the best
trial's Example-F1 minus that of the trial the objective picks.
Target (issue 27): correlation >= 0.5 and regret <= .01 on the held-out half of every set.
`--encoders bundled,DIR` (issue 33): one search per encoder, each drawing the same random settings, validated
together; the target then also asks that the objective's best trial use the encoder whose trials score higher
on average.
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

from bench_quality import HALVES, SHARED, half_scores  # noqa: E402

from taxoclass.config import build_config  # noqa: E402
from taxoclass.metrics import evaluate_rankings  # noqa: E402
from taxoclass.pipeline import prepare_inputs  # noqa: E402
from taxoclass.rundir import PREDICTIONS, read_predictions  # noqa: E402
from taxoclass.search.objectives import OBJECTIVES, label_free_objectives  # noqa: E402
from taxoclass.search.results import objective_check  # noqa: E402

SETS = {
    "relaclass": [f"data={SHARED / 'relaclass-amazon-1000'}"],
    # the generated sets: dbpedia's 1,095 documents cost what relaclass's 1,000 do; amazon's 2,555 twice that
    "dbpedia": ["--preset", "dbpedia-298", f"data={SHARED / 'dbpedia-298'}", "data_variant=generated"],
    "amazon": ["--preset", "amazon-531", f"data={SHARED / 'amazon-531'}", "data_variant=generated"],
    "20newsgroups": ["--preset", "20newsgroups", f"data={SHARED / '20newsgroups'}"],  # stage 1: about 10 minutes on 2 cores
}


def random_space(folder: Path) -> Path:
    """The default space as a sweep file drawn at random (`method: random`)."""
    import yaml

    from taxoclass.search.space import DEFAULT_SPACE

    params = {p.key: ({"values": list(p.values)} if p.kind == "categorical" else
                      {"distribution": p.kind, "min": int(p.low) if p.kind == "int_uniform" else p.low,
                       "max": int(p.high) if p.kind == "int_uniform" else p.high}) for p in DEFAULT_SPACE}
    path = folder / "random-space.yaml"
    path.write_text(yaml.safe_dump({"method": "random", "parameters": params}, sort_keys=False))
    return path


def gold_f1(run_dir: Path, gold: dict) -> dict[str, float]:
    """A trial's Example-F1 on each half of the gold (`gold` caches the labels between trials)."""
    if not gold:
        inputs = prepare_inputs(build_config(config_file=str(run_dir / "config.yaml"), environ={}))
        gold.update(ids=inputs.test.ids, golds=inputs.test.gold, taxonomy=inputs.taxonomy)
    ranked = read_predictions(run_dir / PREDICTIONS, gold["taxonomy"])
    out = {}
    for half, start in HALVES.items():
        ids, golds = gold["ids"][start::2], gold["golds"][start::2]
        out[half] = evaluate_rankings([ranked[d] for d in ids], golds, gold["taxonomy"].levels)["example_f1"]
    return out


def trial_objectives(row: dict, run_dir: Path) -> None:
    """Every objective's value into `row`: as the trial reported it, else computed from its run dir."""
    if any(row.get(o.column) in (None, "") for o in OBJECTIVES.values()):
        cfg = build_config(config_file=str(run_dir / "config.yaml"), environ={})
        row.update({k: v for k, v in label_free_objectives(cfg, run_dir).items() if row.get(k) in (None, "")})
    for o in OBJECTIVES.values():
        row[o.column] = float(row[o.column])


def encoder_tag(model: str) -> str:
    """A short name for an encoder, for folder names and tables: 'bundled' or the folder's (or hub name's) last part."""
    return Path(model).name or model


def search_rows(name: str, args, out: Path, encoder: str | None) -> list[dict]:
    """One search of the set (with `similarity.model=encoder` when given), run once and reused: its finished trials."""
    search_dir = out / (f"validate-{name}" if encoder is None else f"validate-{name}-{encoder_tag(encoder)}")
    space = ["--space", str(random_space(out))] if args.sampler == "random" else []
    model = [] if encoder is None else [f"similarity.model={encoder}"]
    cmd = [sys.executable, "-m", "taxoclass.cli", "search", "--name", search_dir.name, "--num-samples", str(args.trials),
           "--no-asha", "--gpus-per-trial", str(args.gpus_per_trial), *space, *SETS[name], f"output_dir={out}",
           *model, *args.overrides]
    if (search_dir / "trials.csv").is_file():
        print(f"{name}: reusing {search_dir}", flush=True)
    else:
        print(f"{name}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    with open(search_dir / "trials.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["finished"] == "True" and r["status"] == "ok"]
    for row in rows:
        row["run_dir"] = str(search_dir / "runs" / row["trial"])
        row["encoder"] = "bundled" if encoder is None else encoder_tag(encoder)
    return rows


def validate_set(name: str, args, out: Path) -> dict:
    """The set's trials (one search per encoder, each drawing the same random settings: the sampler's seed is
    the config's), every objective's Spearman and regret over all of them, and, with several encoders,
    which encoder each objective's best trial used against the encoder whose trials score higher on average."""
    encoders = args.encoders.split(",") if args.encoders else [None]
    rows = [row for encoder in encoders for row in search_rows(name, args, out, encoder)]
    gold: dict = {}
    for row in rows:
        run_dir = Path(row["run_dir"])
        row.update(gold_f1(run_dir, gold))
        trial_objectives(row, run_dir)
    result = {"trials": len(rows), "checks": {}}
    for objective, o in OBJECTIVES.items():
        result["checks"][objective] = {half: objective_check(rows, o.mode, held_out=half, objective=o.column)
                                       for half in HALVES}
        if len(encoders) > 1:
            for half in HALVES:
                if result["checks"][objective][half] is not None:
                    result["checks"][objective][half]["encoder_right"] = picks_better_encoder(rows, o.mode, o.column, half)
    result["rows"] = [{k: row[k] for k in ("trial", "encoder", "run_dir", *HALVES, *(o.column for o in OBJECTIVES.values()))} for row in rows]
    if len(encoders) > 1:  # each encoder's default trial (the default config on that encoder): names, enriched, pipeline
        result["encoders"] = {}
        for row in rows:
            if row.get("default") == "True":
                run_dir = Path(row["run_dir"])
                scores = half_scores(build_config(config_file=str(run_dir / "config.yaml"), environ={}), run_dir)
                shared = json.loads((run_dir.parents[1] / "timing.json").read_text())["shared_seconds"]
                result["encoders"][row["encoder"]] = {"halves": scores, "shared_seconds": shared}
    return result


def better_encoder(encoders: list[str], scores: list[float]) -> str:
    """The encoder whose trials score higher on average (`encoders[i]` ran the trial that scored `scores[i]`)."""
    by_encoder: dict[str, list[float]] = {}
    for encoder, score in zip(encoders, scores):
        by_encoder.setdefault(encoder, []).append(score)
    return max(by_encoder, key=lambda e: sum(by_encoder[e]) / len(by_encoder[e]))


def picks_better_encoder(rows: list[dict], mode: str, column: str, half: str) -> bool:
    """Whether the objective's best trial used the encoder whose trials score higher on `half` on average."""
    sign = 1 if mode == "max" else -1
    better = better_encoder([r["encoder"] for r in rows], [r[half] for r in rows])
    return max(rows, key=lambda r: sign * r[column])["encoder"] == better


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="relaclass,dbpedia,20newsgroups", help=f"comma-separated, from {', '.join(SETS)}")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--sampler", choices=["random", "tpe"], default="random", help="how the trials are drawn")
    ap.add_argument("--gpus-per-trial", type=float, default=0)
    ap.add_argument("--encoders", default=None,
                    help="comma-separated similarity.model values (e.g. bundled,DIR): one search per encoder with the same "
                         "random draws, validated together (issue 33)")
    ap.add_argument("--out", default="runs/validate-objective", help="output folder (a finished set's search is reused)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every trial")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = {name: validate_set(name, args, out) for name in args.sets.split(",")}
    (out / "validate.json").write_text(json.dumps(results, indent=1))
    mixed = bool(args.encoders)
    print("\n| set | trials | objective | dev: Spearman, regret | held-out: Spearman, regret |"
          + (" right encoder (dev, held-out) |" if mixed else "") + " target met (held-out) |"
          "\n|---|---|---|---|---|" + ("---|" if mixed else "") + "---|")
    for name, result in results.items():
        for objective, checks in result["checks"].items():
            cells = []
            for half in HALVES:
                check = checks[half]
                cells.append("-" if check is None else f"{check['spearman']:.2f}, {check['regret']:.4f}")
            held = checks["held-out"]
            met = "fewer than 3 finished trials" if held is None else \
                ("yes" if held["spearman"] >= 0.5 and held["regret"] <= 0.01 and held.get("encoder_right", True) else "no")
            if mixed:
                cells.append(", ".join("-" if checks[h] is None else ("yes" if checks[h]["encoder_right"] else "no")
                                       for h in HALVES))
            print(f"| {name} | {result['trials']} | {objective} | {' | '.join(cells)} | {met} |")
    if mixed:
        print("\n| set | encoder | half | names (best path) | enriched | pipeline | stages 1-2 before the trials (s) |"
              "\n|---|---|---|---|---|---|---|")
        for name, result in results.items():
            for encoder, e in result.get("encoders", {}).items():
                for half, h in e["halves"].items():
                    print(f"| {name} | {encoder} | {half} | {h['bestpath']:.4f} | {h['enriched']:.4f} | {h['pipeline']:.4f} "
                          f"| {e['shared_seconds']:.0f} |")


if __name__ == "__main__":
    main()
