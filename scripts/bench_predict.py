"""`taxoclass predict` on many short texts: throughput, time to the first record, peak memory.

    python scripts/bench_predict.py                          # trains the demo run once, then 2,000 and 20,000 texts
    python scripts/bench_predict.py --run runs/demo --texts 1000 10000 100000

Each size is one `taxoclass predict --run RUN --input FILE` process on N plain lines of 5-15 words
drawn (seeded) from the demo's reviews; its records are read as they arrive. Prints one row per size:
the wall time of the whole command (start-up and model load included), the time to its first record,
the throughput in texts/s between the first and the last record (the steady state), and the process's
peak RSS (`wait4`). Memory should not grow with N: the input is read lazily and each chunk's records
are printed and forgotten.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from taxoclass.data.readers import load_dataset  # noqa: E402
from taxoclass.predict import CHUNK  # noqa: E402


def short_texts(n: int, seed: int = 0) -> list[str]:
    words = " ".join(load_dataset("demo").corpus.texts).split()
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(5, 15))) for _ in range(n)]


def train_demo(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "taxoclass.cli", "run", f"output_dir={folder}", "run_name=demo"], check=True,
                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder / "demo"


def measure(run_dir: Path, n: int, folder: Path) -> dict:
    path = folder / f"texts-{n}.txt"
    path.write_text("\n".join(short_texts(n)) + "\n", encoding="utf-8")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "taxoclass.cli", "predict", "--run", str(run_dir), "--input", str(path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = last = None
    records = 0
    for _ in proc.stdout:
        last = time.time()
        first = first or last
        records += 1
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    if os.waitstatus_to_exitcode(status) != 0 or records != n:
        raise SystemExit(f"predict failed on {n} texts ({records} records, status {status})")
    first_chunk = min(n, CHUNK)
    steady = (n - first_chunk) / (last - first) if last > first else float("nan")
    return {"texts": n, "wall_s": wall, "first_record_s": first - t0, "texts_per_s": steady,
            "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a finished run dir (default: train the demo run in a temporary folder)")
    ap.add_argument("--texts", type=int, nargs="+", default=[2000, 20000], help="input sizes")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        run_dir = Path(args.run) if args.run else train_demo(Path(tmp))
        print(f"model: {run_dir}; load average {os.getloadavg()[0]:.1f} at the start")
        print("| texts | wall time (s) | first record (s) | texts/s (steady) | peak RSS (MiB) |")
        print("|---|---|---|---|---|")
        for n in args.texts:
            r = measure(run_dir, n, Path(tmp))
            print(f"| {r['texts']:,} | {r['wall_s']:.1f} | {r['first_record_s']:.1f} | {r['texts_per_s']:.0f} | "
                  f"{r['peak_rss_mib']:.0f} |", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
