"""`taxoclass report RUN_DIR [RUN_DIR ...]`: PNG plots and a Markdown summary, no wandb needed.

Reads each run dir's `metrics.jsonl` and `summary.json` and draws, one colour per run:
- `stage3_loss.png`: the training loss over steps (the logged steps and each epoch's mean),
  train and validation loss per epoch with the kept epoch marked, the learning rate;
- `stage4_confidence.png`: confidence ratio and average max prediction per target update,
  and the silver validation loss that decides which model stage 4 keeps, the kept
  iteration marked;
- `level_accuracy.png`: accuracy per taxonomy level, bars grouped per level (pipeline
  and zero-shot per run), each labelled with its value.
`summary.md` leads with the pipeline's Example-F1, the best-path zero-shot's and their ratio, then
tables of the main figures, of the hierarchical P/R/F1 (`hier_*`) and of the P/R/F1 per level.
metrics.jsonl holds every attempt on a run dir, each after an `{"attempt": N}` marker row: a
curve is drawn from the last attempt that logged it (a rerun that took stage 3 from the cache
keeps its curves).
"""

from __future__ import annotations

from pathlib import Path

from taxoclass.atomic import atomic_write_text
from taxoclass.pipeline.metrics_log import ATTEMPT

PIPELINE, ZEROSHOT_BEST, GAIN = "test/example_f1", "zeroshot/bestpath_example_f1", "test/gain_over_zeroshot"
ENRICHED_BEST, GAIN_ENRICHED = "zeroshot/enriched_bestpath_example_f1", "test/gain_over_enriched"
GAINS = ((GAIN, ZEROSHOT_BEST), (GAIN_ENRICHED, ENRICHED_BEST))  # (ratio, its baseline)
SUMMARY_KEYS = [PIPELINE, ZEROSHOT_BEST, GAIN, ENRICHED_BEST, GAIN_ENRICHED, "stage3/stepped_aside", "test/p_at_1", "test/p_at_3", "test/mrr", "test/accuracy", "zeroshot/example_f1",
                "zeroshot/path_example_f1", "stage2/core_precision", "stage3/best_val_loss", "stage4/best_iteration"]
HIER_KEYS = ["test/hier_precision_micro", "test/hier_recall_micro", "test/hier_f1_micro", "test/hier_f1_macro",
             "test/path_hier_f1_micro", "test/path_hier_f1_macro", "zeroshot/bestpath_path_hier_f1_micro"]
LEVEL_COLUMNS = ["precision_micro", "recall_micro", "f1_micro", "precision_macro", "recall_macro", "f1_macro"]


def headline(summary: dict) -> dict:
    """The pipeline against its strongest label-free baseline (the path decoder on the zero-shot scores)
    and against the refined scores stage 3 starts from (what training earned), same top-3 protocol; a
    ratio is computed here when the summary predates it."""
    keys = (PIPELINE, ZEROSHOT_BEST, GAIN, ENRICHED_BEST, GAIN_ENRICHED)
    out = {k: summary[k] for k in keys if isinstance(summary.get(k), (int, float))}
    for gain, base in GAINS:
        if out.get(base) == 0:
            out.pop(gain, None)  # undefined (a summary from before issue 29 stored the ratio over a floor of 1e-12)
        elif gain not in out and PIPELINE in out and out.get(base):
            out[gain] = out[PIPELINE] / out[base]
    return out


def headline_line(summary: dict) -> str:
    h = headline(summary)
    parts = [f"{k}={h[k]:.4f}" for k in (PIPELINE, ZEROSHOT_BEST) if k in h]
    for gain, base in GAINS:
        if gain in h:
            parts.append(f"{gain}={h[gain]:.3f}x")
        elif PIPELINE in h and h.get(base) == 0:
            parts.append(f"{gain}=undefined ({base}=0)")
    return "  ".join(parts)


def load_run(run_dir: Path) -> tuple[list[dict], dict]:
    """(metrics rows, each tagged with its attempt; summary), read only."""
    from taxoclass.pipeline import open_finished

    run = open_finished(run_dir)
    return run.metrics_rows(), run.summary()


def load_runs(run_dirs: list[Path]) -> dict[str, tuple[list[dict], dict]]:
    """{a label per run: (metrics rows, summary)}; the same name twice gets a #2."""
    runs = {}
    for d in map(Path, run_dirs):
        name = d.name or str(d)
        label, n = name, 1
        while label in runs:
            n += 1
            label = f"{name} #{n}"
        runs[label] = load_run(d)
    return runs


def series(rows: list[dict], x_key: str | None, y_key: str) -> tuple[list, list]:
    """(xs, ys) sorted by x, from the last attempt that logged the curve; a point logged twice at the
    same x (a stage's final stats repeat its last update) counts once, the later value winning."""
    points, last = {}, None
    for r in rows:
        if y_key in r and isinstance(r[y_key], (int, float)):
            x = r.get("step") if x_key is None else r.get(x_key)
            if isinstance(x, (int, float)):
                if r.get(ATTEMPT, 0) != last:  # a later attempt logged it again: its curve replaces the earlier one
                    points, last = {}, r.get(ATTEMPT, 0)
                points[x] = r[y_key]
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def _plot(ax, xs, ys, label, color, **kw):
    """A line with a marker on each point, so that a two-point curve and a lone point both show."""
    ax.plot(xs, ys, marker="o" if len(xs) <= 50 else None, markersize=4, label=label, color=color, **kw)
    if len(xs) == 1:  # nothing to connect: say the value
        ax.annotate(f"{ys[0]:.3g}", (xs[0], ys[0]), textcoords="offset points", xytext=(6, 4), fontsize=8, color=color)


def _finish(ax, title, xlabel, ylabel=None):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")


def _colors(runs):
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(runs)}


def stage3_figure(runs: dict):
    import matplotlib.pyplot as plt

    fig, (loss_ax, epoch_ax, lr_ax) = plt.subplots(1, 3, figsize=(17, 4.2))
    for run_name, (rows, summary) in runs.items():
        color = _colors(runs)[run_name]
        xs, ys = series(rows, None, "stage3/train_loss")
        if xs:
            _plot(loss_ax, xs, ys, f"{run_name}: logged steps", color, alpha=0.6)
        xs, ys = series(rows, None, "stage3/epoch_train_loss")
        if xs:
            _plot(loss_ax, xs, ys, f"{run_name}: epoch mean", color, linestyle="--")
        for key, style in (("stage3/epoch_train_loss", "--"), ("stage3/epoch_val_loss", "-")):
            xs, ys = series(rows, "stage3/epoch", key)
            if xs:
                _plot(epoch_ax, xs, ys, f"{run_name}: {key.split('/')[-1].removeprefix('epoch_')}", color, linestyle=style)
        best = summary.get("stage3/best_val_loss")
        val_xs, val_ys = series(rows, "stage3/epoch", "stage3/epoch_val_loss")
        if isinstance(best, (int, float)) and best in val_ys:  # the epoch whose weights stage 3 kept
            epoch_ax.plot([val_xs[val_ys.index(best)]], [best], marker="*", markersize=14, color=color, linestyle="none",
                          label=f"{run_name}: kept epoch {val_xs[val_ys.index(best)]:g}")
        xs, ys = series(rows, None, "stage3/learning_rate")
        if xs:
            _plot(lr_ax, xs, ys, run_name, color)
    _finish(loss_ax, "training loss", "global step", "loss")
    _finish(epoch_ax, "loss per epoch (validation: held-out pseudo-labels)", "epoch")
    epoch_ax.xaxis.get_major_locator().set_params(integer=True)
    _finish(lr_ax, "learning rate (encoder; the head when frozen)", "global step")
    fig.suptitle("Stage 3: classifier training")
    fig.tight_layout()
    return fig


def stage4_figure(runs: dict):
    import matplotlib.pyplot as plt

    fig, (conf_ax, val_ax) = plt.subplots(1, 2, figsize=(13, 4.2))
    for run_name, (rows, summary) in runs.items():
        color = _colors(runs)[run_name]
        for key, style in (("stage4/confidence_ratio", "-"), ("stage4/avg_max_prediction", "--")):
            xs, ys = series(rows, "stage4/iteration", key)
            if xs:
                _plot(conf_ax, xs, ys, f"{run_name}: {key.split('/')[-1]}", color, linestyle=style)
        xs, ys = series(rows, "stage4/iteration", "stage4/val_loss")
        if xs:
            _plot(val_ax, xs, ys, run_name, color)
        kept = summary.get("stage4/best_iteration")
        if isinstance(kept, (int, float)):
            how = f", stopped by {summary['stage4/stopped_by']}" if summary.get("stage4/stopped_by") else ""
            what = "stage 3's model" if kept == 0 else f"iteration {kept:g}"
            val_ax.axvline(kept, color=color, linestyle=":", alpha=0.8)
            if kept in xs:
                val_ax.plot([kept], [ys[xs.index(kept)]], marker="*", markersize=14, color=color, linestyle="none",
                            label=f"{run_name}: kept {what}{how}")
            else:
                val_ax.plot([], [], color=color, linestyle=":", label=f"{run_name}: kept {what}{how}")
    _finish(conf_ax, "confidence", "target update (iteration)")
    _finish(val_ax, "silver validation loss (iteration 0 = stage 3's model)", "target update (iteration)", "loss")
    for ax in (conf_ax, val_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Stage 4: self-training")
    fig.tight_layout()
    return fig


def _levels(summary: dict, prefix: str) -> dict[int, float]:
    """{N: value} of the summary's `<prefix>N_accuracy` keys."""
    out = {}
    for key, value in summary.items():
        level = key[len(prefix):].removesuffix("_accuracy")
        if key.startswith(prefix) and key.endswith("_accuracy") and level.isdigit():
            out[int(level)] = value
    return out


def level_series(runs: dict) -> list[tuple[str, str, dict[int, float]]]:
    """(label, run name, {level: accuracy}) per bar series: each run's pipeline, then its zero-shot
    (the best-path decoder's when the summary has it, else the flat ranking's)."""
    out = []
    for run_name, (_, summary) in runs.items():
        out.append((f"{run_name}: pipeline", run_name, _levels(summary, "test/level_")))
        best = _levels(summary, "zeroshot/bestpath_level_")
        out.append((f"{run_name}: zero-shot best path", run_name, best) if best else
                   (f"{run_name}: zero-shot", run_name, _levels(summary, "zeroshot/level_")))
    return [s for s in out if s[2]]


def level_figure(runs: dict):
    import matplotlib.pyplot as plt

    bars = level_series(runs)
    levels = sorted({lv for _, _, acc in bars for lv in acc})
    fig, ax = plt.subplots(figsize=(max(7, 2.2 * len(levels) * max(len(bars), 1) / 2), 4.5))
    width = 0.8 / max(len(bars), 1)
    colors = _colors(runs)
    for i, (label, run_name, acc) in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width  # the group of bars is centred on its level's tick
        shown = [lv for lv in levels if lv in acc]
        zero_shot = "zero-shot" in label
        drawn = ax.bar([lv + offset for lv in shown], [acc[lv] for lv in shown], width * 0.95, label=label,
                       color=colors[run_name], alpha=0.45 if zero_shot else 0.9, hatch="//" if zero_shot else None,
                       edgecolor=colors[run_name])
        ax.bar_label(drawn, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(levels, [f"level {lv}" + (" (top)" if lv == 0 else "") for lv in levels])
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy (best-ranked class of the level is gold)")
    ax.set_title("Accuracy per taxonomy level")
    ax.grid(axis="y", alpha=0.3)
    if bars:
        ax.legend(fontsize=8, loc="upper right", ncols=2 if len(bars) > 2 else 1)
    fig.tight_layout()
    return fig


def _cell(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def summary_markdown(runs: dict, images: list[str]) -> str:
    lines = ["# taxoclass report", "",
             "The pipeline against the best-path zero-shot baseline (the pipeline's path decoder on the stage-1 "
             "scores), Example-F1 of each, and their ratio:", ""]
    for run_name, (_, summary) in runs.items():
        lines.append(f"- {run_name}: {headline_line(summary) or 'no test metrics'}")
    lines += [""] + _table(["run"] + SUMMARY_KEYS, [[run_name] + [_cell({**summary, **headline(summary)}.get(k)) for k in SUMMARY_KEYS]
                                                    for run_name, (_, summary) in runs.items()])
    lines += ["", "Hierarchical precision / recall / F1 (docs/metrics.md):", ""]
    lines += _table(["run"] + HIER_KEYS, [[run_name] + [_cell(summary.get(k)) for k in HIER_KEYS] for run_name, (_, summary) in runs.items()])
    level_rows = [[run_name, level] + [_cell(summary.get(f"test/level_{level}_{c}")) for c in LEVEL_COLUMNS]
                  for run_name, (_, summary) in runs.items() for level in sorted(_levels(summary, "test/level_"))]
    if level_rows:
        lines += ["", "Per level, the top-3 set closed under ancestors:", ""]
        lines += _table(["run", "level"] + LEVEL_COLUMNS, level_rows)
    return "\n".join(lines + [""] + [f"![{name}]({name})" for name in images]) + "\n"


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(run_dirs)
    out = out or Path(run_dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for name, make in (("stage3_loss.png", stage3_figure), ("stage4_confidence.png", stage4_figure),
                       ("level_accuracy.png", level_figure)):
        fig = make(runs)
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        images.append(name)
    atomic_write_text(out / "summary.md", summary_markdown(runs, images))
    return out
