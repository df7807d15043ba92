"""Metrics of a predictions file against a dataset's test gold (`taxoclass evaluate`): the same figures, from the
same functions, as the run's summary.json."""

from __future__ import annotations

from pathlib import Path

from taxoclass.data.readers import Dataset
from taxoclass.errors import DataError
from taxoclass.hier_metrics import hierarchical_metrics
from taxoclass.metrics import evaluate_rankings, prefixed
from taxoclass.rundir import read_prediction_lines


def evaluate_predictions_file(path: Path, ds: Dataset, prefix: str = "test", max_docs: int = 0) -> dict:
    """The metrics of the predictions against the test set's gold; `max_docs`: against its first N documents only,
    what a run with `max_docs=N` predicts (as the run's own summary does)."""
    if ds.test is None or ds.test_labels is None:
        raise DataError(ds.root, "the dataset has no test set with labels to evaluate against")
    rows = read_prediction_lines(path, ds.taxonomy)
    doc_ids = ds.test.doc_ids[:max_docs] if max_docs else ds.test.doc_ids
    test_ids = set(doc_ids)
    for doc_id, (number, _) in rows.items():
        if doc_id not in test_ids:
            where = f"the first {max_docs} documents (--max-docs) of " if max_docs else ""
            raise DataError(path, f"prediction for document '{doc_id}', which is not in {where}the test set {ds.test.source}",
                            number)
    predictions = {doc_id: ranked for doc_id, (_, ranked) in rows.items()}
    missing = [d for d in doc_ids if d not in predictions]
    if missing:
        raise DataError(path, f"no prediction for {len(missing)} test documents (first: '{missing[0]}'){_cut_hint(doc_ids, rows)}")
    rankings = [predictions[d] for d in doc_ids]
    golds = [ds.test_labels[d] for d in doc_ids]
    metrics = {**evaluate_rankings(rankings, golds, ds.taxonomy.levels), **hierarchical_metrics(rankings, golds, ds.taxonomy)}
    return prefixed(metrics, prefix)


def _cut_hint(doc_ids: list[str], rows: dict) -> str:
    """When the predictions are of the test set's first N documents, what a run with max_docs=N predicts: how to
    evaluate them."""
    n = len(rows)
    if set(doc_ids[:n]) != set(rows):
        return ""
    return f"; they are of its first {n}, as a run with max_docs={n} predicts them: evaluate those with --max-docs {n}"


def format_metrics(metrics: dict) -> str:
    width = max(len(k) for k in metrics)
    rows = []
    for k, v in metrics.items():
        rows.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return "\n".join(rows)
