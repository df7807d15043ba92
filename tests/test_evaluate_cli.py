import json

import pytest
from conftest import run_cli

from taxoclass.data.readers import load_dataset
from taxoclass.errors import DataError
from taxoclass.evaluate import evaluate_predictions_file
from taxoclass.hier_metrics import hierarchical_metrics
from taxoclass.metrics import evaluate_rankings


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_recomputes_metrics(tiny_dataset, tmp_path):
    # t1 gold {0,2,4}: ranked 2,1,0 -> top-3 holds 2 gold; t2 gold {1}: ranked 1 first
    preds = _write(tmp_path / "p.jsonl", [
        {"doc_id": "t1", "ranked": [2, 1, 0, 3, 4], "scores": [0.9, 0.8, 0.7, 0.2, 0.1]},
        {"doc_id": "t2", "ranked": [1, 0, 2, 3, 4], "scores": [0.9, 0.5, 0.4, 0.3, 0.2]},
    ])
    ds = load_dataset(tiny_dataset)
    m = evaluate_predictions_file(preds, ds)
    assert m["test/example_f1"] == pytest.approx((2 * 2 / 6 + 2 * 1 / 4) / 2)
    assert m["test/p_at_1"] == pytest.approx(1.0)
    rankings, golds = [[2, 1, 0, 3, 4], [1, 0, 2, 3, 4]], [[0, 2, 4], [1]]
    expected = {**evaluate_rankings(rankings, golds, ds.taxonomy.levels), **hierarchical_metrics(rankings, golds, ds.taxonomy)}
    assert m == {f"test/{k}": v for k, v in expected.items()}
    # closed under ancestors (c has parents a and b): gold {a, b, c, e} and {b}; top-3 {a, b, c} twice
    assert m["test/hier_precision_micro"] == pytest.approx(4 / 6) and m["test/hier_recall_micro"] == pytest.approx(4 / 5)
    # t1 starts with c, not a top-level class: an empty path; t2's path is b alone
    assert m["test/path_hier_precision_micro"] == pytest.approx(1.0) and m["test/path_hier_recall_micro"] == pytest.approx(1 / 5)
    out = tmp_path / "m.json"
    res = run_cli("evaluate", "--predictions", preds, "--data", tiny_dataset, "--output", out)
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())["test/example_f1"] == pytest.approx(m["test/example_f1"])
    printed = dict(line.split() for line in res.stdout.splitlines())
    assert printed["test/example_f1"] == f"{m['test/example_f1']:.4f}" and printed["test/hier_f1_micro"] == f"{m['test/hier_f1_micro']:.4f}"


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"doc_id": "t1", "ranked": [0]}], "no prediction for 1 test documents (first: 't2')"),
        ([{"doc_id": "t1", "ranked": [0]}, {"doc_id": "t2", "ranked": [99]}], "p.jsonl:2: unknown class id '99'"),
        ([{"doc_id": "t1", "ranked": [0]}, {"doc_id": "zz", "ranked": [1]}], "prediction for document 'zz', which is not in the test set"),
        ([{"doc_id": "t1", "ranked": [0, 1], "scores": [0.5]}], "p.jsonl:1: 'scores' must be a list as long as 'ranked'"),
        ([{"doc_id": "t1", "ranked": [0, 0]}], "p.jsonl:1: a class appears twice"),
    ],
)
def test_evaluate_errors(tiny_dataset, tmp_path, rows, message):
    preds = _write(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError) as err:
        evaluate_predictions_file(preds, load_dataset(tiny_dataset))
    assert message in str(err.value)


def test_evaluate_cli_malformed_line(tiny_dataset, tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"doc_id": "t1", "ranked": [0]}\n{"doc_id": "t2", "ranked": [1]\n')
    res = run_cli("evaluate", "--predictions", preds, "--data", tiny_dataset)
    assert res.returncode == 2 and "p.jsonl:2: malformed JSON line" in res.stderr and "Traceback" not in res.stderr


def test_every_subcommand_has_help():
    for cmd in ["run", "stage", "evaluate", "predict", "validate", "config", "report"]:
        res = run_cli(cmd, "--help")
        assert res.returncode == 0 and "usage: taxoclass" in res.stdout, cmd


def test_evaluate_unknown_document_names_its_line(tiny_dataset, tmp_path):
    preds = _write(tmp_path / "p.jsonl", [{"doc_id": "t1", "ranked": [0]}, {"doc_id": "t2", "ranked": [1]}, {"doc_id": "zz", "ranked": [1]}])
    with pytest.raises(DataError, match=r"p.jsonl:3: prediction for document 'zz'"):
        evaluate_predictions_file(preds, load_dataset(tiny_dataset))


def test_evaluate_output_to_an_unwritable_path(tiny_dataset, tmp_path):
    preds = _write(tmp_path / "p.jsonl", [{"doc_id": "t1", "ranked": [0]}, {"doc_id": "t2", "ranked": [1]}])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = run_cli("evaluate", "--predictions", preds, "--data", tiny_dataset, "--output", blocker / "m.json")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "a-file/m.json: cannot write the metrics" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_evaluate_max_docs_below_0_is_refused_when_parsed(capsys):
    from taxoclass.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["evaluate", "--predictions", "p.jsonl", "--data", "demo", "--max-docs", "-1"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "taxoclass evaluate: error: argument --max-docs: expected at least 0, got -1")
