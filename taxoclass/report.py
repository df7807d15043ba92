"""`taxoclass report RUN_DIR [RUN_DIR ...]`: PNG plots and a Markdown summary, no wandb needed.

Reads each run dir's `metrics.jsonl` and `summary.json` and draws, with one line (or bar)
per run: stage-3 train and validation loss, the learning rate, stage-4 confidence ratio and
average max prediction over iterations, and accuracy per taxonomy level. metrics.jsonl holds
every attempt on a run dir, each after an `{"attempt": N}` marker row: a curve is drawn from
the last attempt that logged it (a rerun that took stage 3 from the cache keeps its curves).
"""

from __future__ import annotations

import json
from pathlib import Path

from taxoclass.errors import DataError
from taxoclass.rundir import atomic_write_text

ATTEMPT = "_attempt"  # added to each metrics row on reading: the attempt that logged it
SUMMARY_KEYS = ["test/example_f1", "test/p_at_1", "test/p_at_3", "test/mrr", "test/accuracy", "zeroshot/example_f1",
                "zeroshot/path_example_f1", "stage2/core_precision", "stage3/best_val_loss", "stage4/confidence_ratio"]


def load_run(run_dir: Path) -> tuple[list[dict], dict]:
    metrics_path, summary_path = run_dir / "metrics.jsonl", run_dir / "summary.json"
    if not metrics_path.is_file():
        raise DataError(metrics_path, "not a run dir (no metrics.jsonl)")
    rows, attempt = [], 0
    for number, line in enumerate(metrics_path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(metrics_path, f"malformed JSON line: {err.msg}", number) from None
            if isinstance(row, dict) and "attempt" in row:  # a marker, not metrics
                attempt = row["attempt"]
                continue
            rows.append({**row, ATTEMPT: attempt})
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return rows, summary


def series(rows: list[dict], x_key: str | None, y_key: str) -> tuple[list, list]:
    """(x, y) points of one curve, from the last attempt that logged it."""
    points = []
    for r in rows:
        if y_key in r and r[y_key] is not None:
            x = r.get("step") if x_key is None else r.get(x_key)
            if x is not None:
                points.append((r.get(ATTEMPT, 0), x, r[y_key]))
    last = max((a for a, _, _ in points), default=0)
    points = [(x, y) for a, x, y in points if a == last]
    return [x for x, _ in points], [y for _, y in points]


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {d.name if d.name else str(d): load_run(d) for d in map(Path, run_dirs)}
    out = out or Path(run_dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    images = []

    def figure(name: str, title: str, panels: list[tuple[str, str | None, list[str]]]):
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        for ax, (sub_title, x_key, y_keys) in zip(axes[0], panels):
            for run_name, (rows, _) in runs.items():
                for y_key in y_keys:
                    xs, ys = series(rows, x_key, y_key)
                    if xs:
                        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=f"{run_name}: {y_key.split('/')[-1]}")
            ax.set_title(sub_title)
            ax.set_xlabel(x_key or "step")
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        images.append(name)

    figure("stage3_loss.png", "Stage 3: classifier training",
           [("train loss", None, ["stage3/train_loss"]), ("epoch losses", "stage3/epoch", ["stage3/epoch_train_loss", "stage3/epoch_val_loss"]),
            ("learning rate", None, ["stage3/learning_rate"])])
    figure("stage4_confidence.png", "Stage 4: self-training",
           [("confidence ratio", "stage4/iteration", ["stage4/confidence_ratio"]),
            ("average max prediction", "stage4/iteration", ["stage4/avg_max_prediction"])])

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(runs), 1)
    for i, (run_name, (_, summary)) in enumerate(runs.items()):
        levels = sorted(int(k.split("_")[1]) for k in summary if k.startswith("test/level_") and k.endswith("_accuracy"))
        ax.bar([lv + i * width for lv in levels], [summary[f"test/level_{lv}_accuracy"] for lv in levels], width, label=run_name)
    ax.set_xlabel("taxonomy level")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy per level")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "level_accuracy.png", dpi=100)
    plt.close(fig)
    images.append("level_accuracy.png")

    lines = ["# taxoclass report", "", "| run | " + " | ".join(SUMMARY_KEYS) + " |", "|---|" + "---|" * len(SUMMARY_KEYS)]
    for run_name, (_, summary) in runs.items():
        cells = [f"{summary[k]:.4f}" if isinstance(summary.get(k), (int, float)) else "-" for k in SUMMARY_KEYS]
        lines.append(f"| {run_name} | " + " | ".join(cells) + " |")
    lines += [""] + [f"![{name}]({name})" for name in images]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return out
