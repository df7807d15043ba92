"""`taxoclass predict` locally and on Ray Data: texts per second, and the number of actors.

    python scripts/bench_predict_ray.py                                  # trains the demo run once, 5,000 texts, 1 and 2 actors
    python scripts/bench_predict_ray.py --run runs/demo --texts 100000 --actors 1 2 4 --shard-size 10000

N plain lines of 5-15 words drawn (seeded) from the demo's reviews, predicted (top 3) by:
- the local path in this process (`Predictor.stream`, what `taxoclass predict` prints), model load included;
- `predict_on_ray` (what `taxoclass predict ... --output DIR runtime=ray` runs) into a new folder, once per
  actor count, on one local Ray instance started beforehand (its start is not counted; each run's actor
  start and model loads are).
Prints one row per path: the wall time and the texts per second over it. An actor holds one CPU, so Ray
runs its torch with one thread; the local process uses every core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench_predict import short_texts, train_demo  # the local benchmark's texts and model (scripts/ is on sys.path)

from taxoclass.config import build_config
from taxoclass.predict import Predictor, iter_texts


def local(run_dir: Path, source: Path) -> tuple[int, float]:
    t0 = time.time()
    records = sum(1 for _ in Predictor(run_dir, "cpu").stream(iter_texts(source, "plain"), top_k=3))
    return records, time.time() - t0


def on_ray(run_dir: Path, source: Path, out: Path, actors: int, shard_size: int) -> tuple[int, float]:
    from taxoclass.distributed.ray_predict import predict_on_ray

    cfg = build_config(overrides=["runtime=ray", f"ray.predict_actors={actors}", f"ray.predict_shard_size={shard_size}"],
                       environ={})
    t0 = time.time()
    done = predict_on_ray(cfg, run_dir, source, out, top_k=3, progress=False)
    return done["texts"], time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a finished run dir (default: train the demo run in a temporary folder)")
    ap.add_argument("--texts", type=int, default=5000, help="input size")
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="actor counts of the Ray path")
    ap.add_argument("--shard-size", type=int, default=1000, help="ray.predict_shard_size")
    args = ap.parse_args()
    import ray

    from taxoclass.distributed.ray_instance import start_local_ray

    with tempfile.TemporaryDirectory(prefix="bench-predict-ray-") as tmp:
        run_dir = Path(args.run) if args.run else train_demo(Path(tmp))
        source = Path(tmp) / "texts.txt"
        source.write_text("\n".join(short_texts(args.texts)) + "\n", encoding="utf-8")
        print(f"model: {run_dir}; {args.texts:,} texts; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the start")
        print("| path | actors | wall time (s) | texts/s |")
        print("|---|---|---|---|")
        n, wall = local(run_dir, source)
        print(f"| local | - | {wall:.1f} | {n / wall:.0f} |", flush=True)
        start_local_ray(max(args.actors), log_to_driver=False)
        try:
            for actors in args.actors:
                n, wall = on_ray(run_dir, source, Path(tmp) / f"out-{actors}", actors, args.shard_size)
                print(f"| Ray Data | {actors} | {wall:.1f} | {n / wall:.0f} |", flush=True)
        finally:
            ray.shutdown()  # only the instance started here; never `ray stop`
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
