"""`taxoclass report` on run dirs written here (no pipeline run): what the plots hold, and summary.md."""

import json

import matplotlib
import pytest

from taxoclass.cli import _print_summary
from taxoclass.run_report import level_figure, load_runs, stage3_figure, stage4_figure, summary_markdown, write_report

matplotlib.use("Agg")

# what a one-epoch debug run logs: the first step and the end of the epoch, the per-epoch losses,
# then stage 4's updates (iteration 0 is stage 3's model) and its final stats repeating the last update
ROWS = [
    {"step": 1, "stage3/train_loss": 6.0, "stage3/learning_rate": 5e-5, "stage3/epoch": 1 / 3},
    {"step": 3, "stage3/train_loss": 5.1, "stage3/learning_rate": 0.0, "stage3/epoch": 1.0},
    {"step": 3, "stage3/epoch_train_loss": 5.4, "stage3/epoch_val_loss": 2.74, "stage3/best_val_loss": 2.74, "stage3/epoch": 1},
    {"step": None, "stage4/iteration": 0, "stage4/confidence_ratio": 0.63, "stage4/avg_max_prediction": 0.54, "stage4/val_loss": 2.74},
    {"step": None, "stage4/iteration": 1, "stage4/confidence_ratio": 0.66, "stage4/avg_max_prediction": 0.60, "stage4/val_loss": 2.80},
    {"step": None, "stage4/iteration": 2, "stage4/confidence_ratio": 0.80, "stage4/avg_max_prediction": 0.66, "stage4/val_loss": 2.90},
    {"step": None, "stage4/iteration": 2, "stage4/confidence_ratio": 0.80, "stage4/avg_max_prediction": 0.66, "stage4/val_loss": 2.90},
]
SUMMARY = {"test/example_f1": 0.7258, "zeroshot/bestpath_example_f1": 0.745, "zeroshot/path_example_f1": 0.51,
           "test/level_0_accuracy": 0.9, "test/level_1_accuracy": 0.8, "test/level_2_accuracy": 0.68,
           "zeroshot/level_0_accuracy": 0.63, "zeroshot/level_1_accuracy": 0.75, "zeroshot/level_2_accuracy": 0.72,
           "stage3/best_val_loss": 2.74, "stage4/best_iteration": 0, "stage4/stopped_by": "silver_val"}


def write_run(root, name, summary=SUMMARY, rows=ROWS):
    run = root / name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_short_run_draws_curves_not_dots(tmp_path):
    fig = stage3_figure(load_runs([write_run(tmp_path, "debug")]))
    loss_ax, epoch_ax, lr_ax = fig.axes
    assert _lines(loss_ax)["debug: logged steps"] == ([1, 3], [6.0, 5.1])
    assert _lines(lr_ax)["debug"] == ([1, 3], [5e-5, 0.0])
    assert _lines(epoch_ax)["debug: kept epoch 1"] == ([1], [2.74])
    assert any("2.74" in t.get_text() for t in epoch_ax.texts)  # a lone point says its value


def test_stage4_plots_the_silver_loss_and_marks_the_kept_iteration(tmp_path):
    fig = stage4_figure(load_runs([write_run(tmp_path, "demo")]))
    conf_ax, val_ax = fig.axes
    lines = _lines(val_ax)
    assert lines["demo"] == ([0, 1, 2], [2.74, 2.80, 2.90])  # the repeated final update counts once
    assert lines["demo: kept stage 3's model, stopped by silver_val"] == ([0], [2.74])
    assert _lines(conf_ax)["demo: confidence_ratio"][1] == [0.63, 0.66, 0.80]


def test_level_bars_are_grouped_on_their_level(tmp_path):
    other = {**SUMMARY, "test/level_0_accuracy": 0.5, "zeroshot/bestpath_level_0_accuracy": 0.7,
             "zeroshot/bestpath_level_1_accuracy": 0.6, "zeroshot/bestpath_level_2_accuracy": 0.5}
    fig = level_figure(load_runs([write_run(tmp_path, "a"), write_run(tmp_path / "b", "a", summary=other)]))
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [0, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["level 0 (top)", "level 1", "level 2"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["a: pipeline", "a: zero-shot", "a #2: pipeline", "a #2: zero-shot best path"]
    for level in (0, 1, 2):  # four bars per level, centred on its tick
        centres = [p.get_x() + p.get_width() / 2 for p in ax.patches if abs(p.get_x() - level) < 0.5]
        assert len(centres) == 4 and sum(centres) / 4 == pytest.approx(level)
    labels = [t.get_text() for t in ax.texts]
    assert "0.50" in labels and "0.70" in labels and len(labels) == 12


def test_summary_leads_with_the_best_path_zero_shot(tmp_path, capsys):
    runs = load_runs([write_run(tmp_path, "a")])
    md = summary_markdown(runs, [])
    assert "- a: test/example_f1=0.7258  zeroshot/bestpath_example_f1=0.7450  test/gain_over_zeroshot=0.974x" in md
    given = {**SUMMARY, "test/gain_over_zeroshot": 0.9}  # the pipeline's own ratio wins over the one computed here
    _print_summary(given)
    assert capsys.readouterr().out.splitlines()[0] == ("test/example_f1=0.7258  zeroshot/bestpath_example_f1=0.7450  "
                                                       "test/gain_over_zeroshot=0.900x")
    # and over the refined scores stage 3 starts from, computed when the summary predates the ratio
    _print_summary({**given, "zeroshot/enriched_bestpath_example_f1": 0.7})
    assert capsys.readouterr().out.splitlines()[0].endswith("test/gain_over_zeroshot=0.900x  test/gain_over_enriched=1.037x")
    out = write_report([tmp_path / "a", tmp_path / "a"], tmp_path / "rep")
    for name in ("stage3_loss.png", "stage4_confidence.png", "level_accuracy.png"):
        assert (out / name).stat().st_size > 0 and f"![{name}]({name})" in (out / "summary.md").read_text()


def _table_rows(md: str, first_header: str) -> list[dict]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def test_summary_has_the_hierarchical_and_per_level_tables(tmp_path):
    summary = {**SUMMARY, "test/hier_f1_micro": 0.8123, "test/path_hier_f1_macro": 0.7001, "test/level_1_precision_micro": 0.7777,
               **{f"test/level_{lv}_f1_macro": 0.61 + lv / 100 for lv in (0, 1, 2)}}
    md = summary_markdown(load_runs([write_run(tmp_path, "a", summary=summary)]), [])
    hier = _table_rows(md, "run | test/hier_precision_micro")
    assert hier == [{**hier[0], "run": "a", "test/hier_f1_micro": "0.8123", "test/path_hier_f1_macro": "0.7001",
                     "test/hier_precision_micro": "-"}]
    levels = _table_rows(md, "run | level")
    assert [(r["level"], r["f1_macro"]) for r in levels] == [("0", "0.6100"), ("1", "0.6200"), ("2", "0.6300")]
    assert levels[1]["precision_micro"] == "0.7777"


def test_a_ratio_over_a_baseline_that_scored_0_is_undefined(tiny_dataset, capsys):
    """Issue 29: `test/gain_over_enriched` was printed and stored as 6666666666.667x when the enriched baseline scored 0
    (a division by a floor of 1e-12)."""
    import numpy as np

    from taxoclass.data.readers import load_dataset
    from taxoclass.pipeline.summary import zero_shot_baselines

    taxonomy = load_dataset(tiny_dataset).taxonomy  # a(0) -> c(2), a -> d(3); b(1) -> c; c -> e(4)
    names = np.array([[0.1, 0.9, 0.2, 0.1, 0.1]], dtype=np.float32)  # the name-only scores find the gold class b
    enriched = np.array([[0.9, 0.0, 0.7, 0.8, 0.6]], dtype=np.float32)  # the refined ones rank a, d, c: no gold class
    out = zero_shot_baselines({"test": enriched, "names_test": names}, [[1]], taxonomy, pipeline_f1=0.5)
    assert out["zeroshot/enriched_bestpath_example_f1"] == 0 and out["zeroshot/bestpath_example_f1"] > 0
    assert "test/gain_over_enriched" not in out and out["test/gain_over_zeroshot"] == pytest.approx(0.5 / out["zeroshot/bestpath_example_f1"])
    _print_summary({"test/example_f1": 0.5, **out})
    assert capsys.readouterr().out.splitlines()[0].endswith(
        "test/gain_over_enriched=undefined (zeroshot/enriched_bestpath_example_f1=0)")
    # a summary written before (the ratio over the floor stored) reads the same
    _print_summary({"test/example_f1": 0.5, **out, "test/gain_over_enriched": 0.5 / 1e-12})
    assert capsys.readouterr().out.splitlines()[0].endswith("test/gain_over_enriched=undefined (zeroshot/enriched_bestpath_example_f1=0)")
