"""A trial's objective, computed from its finished run dir; none of them reads the test set.

- `path_margin` (default, maximised): over a fixed sample of corpus documents (`SAMPLE_DOCS`),
  the mean gap between the score of the best root-to-leaf path and the runner-up's, the path
  decoder's own criterion (mean probability along the path). A model that separates the
  documents' paths clearly, where the documents are, is the better one (the cluster
  assumption behind entropy-based unsupervised model selection); unlike agreement with the
  teacher it does not reward staying at the zero-shot start. Chosen on the dev halves of
  `scripts/validate_objective.py`; it would not catch a model that sends every document to one
  path with confidence (none of the default space's trials does);
- `silver_loss` (minimised): stage 3's best validation loss on the held-out pseudo-labelled
  documents; reported at every stage-3 epoch, so ASHA can compare trials; its scale moves with
  `classifier.label_scope` (which labels it counts), and fitting the pseudo-labels better hurt
  the gold (docs/quality.md);
- `silver_f1` (maximised): the Example-F1 of the pipeline's own decoder (the final model,
  `evaluation.decoding`) against the pseudo-labels of those same held-out documents;
- `teacher_f1` (maximised): over the sample, the decoded model's Example-F1 against the best
  path of stage 1's scores, the teacher that made the pseudo-labels;
- `--dev FILE` (maximised): the Example-F1 on a labelled dev split of corpus documents.

Every trial reports all four (trials.csv, wandb); `--objective` says which one drives the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taxoclass.config import Config
from taxoclass.errors import ConfigError

OBJECTIVES = {"silver_loss": "min", "silver_f1": "max", "path_margin": "max", "teacher_f1": "max"}
SILVER_F1 = "silver/example_f1"
# where a trial reports each objective (trials.csv, wandb)
COLUMN = {"silver_loss": "stage3/best_val_loss", "silver_f1": SILVER_F1, "path_margin": "label_free/path_margin",
          "teacher_f1": "label_free/teacher_f1"}
DESCRIBE = {"silver_loss": "stage-3 best validation loss on held-out pseudo-labels (min)",
            "silver_f1": "decoded Example-F1 against held-out pseudo-labels (max)",
            "path_margin": "mean gap between the best and the runner-up root-to-leaf path on corpus documents (max)",
            "teacher_f1": "decoded Example-F1 against stage 1's best paths on corpus documents (max)"}
# chosen on the dev halves of scripts/validate_objective.py's searches (README, "Is the objective any good?")
DEFAULT_OBJECTIVE = "path_margin"
SAMPLE_DOCS = 1000  # corpus documents the corpus-wide objectives score: a fixed sample, the same in every trial


def _decoded_f1(bundle, taxonomy, cfg: Config, docs, golds: list[list[int]]) -> float:
    """Example-F1 of a loaded model, decoded as the pipeline decodes, on these documents."""
    import torch

    from taxoclass.decoding import decode
    from taxoclass.metrics import evaluate_rankings
    from taxoclass.stages.model import predict_scores

    # a trial's own process holds no GPU; these are a few hundred documents
    probs, paths = predict_scores(bundle.model, docs, torch.device("cpu"), cfg.evaluation.batch_size)
    ranked, _ = decode(probs, taxonomy, cfg.evaluation.decoding, cfg.evaluation.save_top_k, paths)
    return evaluate_rankings(ranked.tolist(), golds, taxonomy.levels)["example_f1"]


def silver_example_f1(run) -> float:
    """The decoder's Example-F1 against the pseudo-labels (positive targets) of stage 3's held-out
    documents (`run`: the finished run, opened read-only)."""
    silver = run.silver_validation()
    if not silver.rows:
        return float("nan")  # too few pseudo-labelled documents to hold any out
    # the pseudo-labels: the held-out documents' core classes with their ancestors (what either loss counts as positive)
    cores = run.mining().cores
    golds = [sorted(run.inputs.taxonomy.with_ancestors(cores[row])) for row in silver.rows]
    return _decoded_f1(run.bundle(), run.inputs.taxonomy, run.cfg, run.document_inputs("corpus", silver.rows), golds)


@dataclass
class CorpusView:
    """A finished run's final model and its stage-1 teacher on a fixed sample of corpus documents."""

    probs: np.ndarray  # the model's probabilities, documents x classes
    teacher: np.ndarray  # stage 1's scores of the same documents (the refined ones, which made the pseudo-labels)
    taxonomy: object
    paths: np.ndarray | None = None  # the model's score of each root-to-leaf path; None: their mean probability


def corpus_view(run) -> CorpusView:
    """With a frozen encoder the sample's document vectors come from the run's cache (stage 1's, which
    every trial of a search shares): no trial embeds them again."""
    import torch

    from taxoclass.stages.model import predict_scores

    cfg = run.cfg
    rows = np.sort(np.random.default_rng(cfg.seed).permutation(len(run.inputs.corpus.texts))[:SAMPLE_DOCS])
    docs = run.document_inputs("corpus", rows.tolist())
    probs, paths = predict_scores(run.bundle().model, docs, torch.device("cpu"), cfg.evaluation.batch_size)
    return CorpusView(probs, run.stage1()["corpus"][rows], run.inputs.taxonomy, paths)


def path_margin(view: CorpusView) -> float:
    """Mean over documents of the best root-to-leaf path's score minus the runner-up's (the path
    decoder's criterion, the model's own path score): how clearly the model decides."""
    from taxoclass.decoding import path_membership

    member = path_membership(view.taxonomy)
    by_path = view.paths if view.paths is not None else view.probs @ (member / member.sum(1, keepdims=True)).T
    scores = np.sort(by_path, axis=1)
    return float((scores[:, -1] - scores[:, -2]).mean()) if scores.shape[1] > 1 else float("nan")


def teacher_f1(view: CorpusView, decoding: str) -> float:
    """Example-F1 of the decoded model against the best path of stage 1's scores: how close the
    student stays to the teacher that labelled its data."""
    from taxoclass.decoding import decode, similarity_best_paths
    from taxoclass.metrics import evaluate_rankings

    ranked, _ = decode(view.probs, view.taxonomy, decoding, 3, view.paths)
    return evaluate_rankings(ranked.tolist(), similarity_best_paths(view.teacher, view.taxonomy),
                             view.taxonomy.levels)["example_f1"]


def label_free_objectives(cfg: Config, run_dir: Path) -> dict[str, float]:
    """Every objective of a finished run, by its column name: the run opened once (read only), its model loaded once."""
    from taxoclass.pipeline import open_finished

    run = open_finished(run_dir, cfg)  # a trial's own process holds no GPU: the model on the CPU
    view = corpus_view(run)
    silver = silver_example_f1(run)
    summary = run.summary()
    # a stage 3 that stepped aside trained on nothing: it has no validation loss
    return {COLUMN["silver_loss"]: summary.get("stage3/best_val_loss", float("nan")), SILVER_F1: silver,
            COLUMN["path_margin"]: path_margin(view), COLUMN["teacher_f1"]: teacher_f1(view, cfg.evaluation.decoding)}


def dev_example_f1(cfg: Config, run_dir: Path, dev: str) -> float:
    """Example-F1 on the labelled dev documents (doc_id<TAB>id,id; taken from the corpus)."""
    from taxoclass.data.readers import read_doc2labels
    from taxoclass.pipeline import open_finished

    run = open_finished(run_dir, cfg)
    inputs = run.inputs
    gold = read_doc2labels(Path(dev), inputs.taxonomy)
    position = {d: i for i, d in enumerate(inputs.corpus.ids)}
    ids = [d for d in gold if d in position]
    if not ids:
        raise ConfigError("--dev", f"none of the documents of {dev} is in the corpus")
    docs = run.document_inputs("corpus", [position[d] for d in ids])
    return _decoded_f1(run.bundle(), inputs.taxonomy, cfg, docs, [gold[d] for d in ids])
