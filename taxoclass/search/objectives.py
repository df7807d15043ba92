"""A trial's objective, computed from its finished run dir; none of them reads the test set.

- `text_margin` (default, maximised): `text_agreement` + `ZMARGIN_WEIGHT` x `path_zmargin`, below.
  Chosen on the dev halves of 24-trial random searches of the default space on four sets
  (20 Newsgroups, relaclass-amazon-1000, dbpedia-298, amazon-531; docs/search.md, "Is the objective
  any good?"): the best worst case over the four, where each part alone failed one set or two
  (`text_agreement` ranks 20 Newsgroups and relaclass, `path_zmargin` dbpedia and amazon);
- `text_agreement` (maximised): over a fixed sample of corpus documents (`SAMPLE_DOCS`), Cohen's
  kappa between the model's best paths and what a bag-of-words classifier fitted to the best
  paths of the other half of the sample predicts: a model whose decisions follow what the
  documents say, rather than noise of the training, is the better one;
- `path_zmargin` (maximised): over the sample, the best path's lead over the runner-up in units
  of the spread of the document's path logits (scale-free: trained and untrained models, and
  refinement settings, give scores of other scales);
- `path_margin` (maximised): the mean gap between the score of the best root-to-leaf path and
  the runner-up's, the path decoder's own criterion; the default before the search moved stage 1
  (its scale moves with the refinement: Spearman .04-.61 with the held-out score there);
- `silver_loss` (minimised): stage 3's best validation loss on the held-out pseudo-labelled
  documents; reported at every stage-3 epoch, so ASHA can compare trials; NaN when stage 3
  stepped aside;
- `silver_f1` (maximised): the Example-F1 of the pipeline's own decoder (the final model,
  `evaluation.decoding`) against the pseudo-labels of those same held-out documents;
- `teacher_f1` (maximised): over the sample, the decoded model's Example-F1 against the best
  path of stage 1's scores, the teacher that made the pseudo-labels;
- `lexical_f1` (maximised): over the sample, the decoded model's Example-F1 against a teacher that sees no
  encoder, the best path of a TF-IDF match of the documents' words with the class names (and keywords), where
  it matches anything: a candidate for ranking trials on different encoders (issue 33; docs/search.md);
- `--dev FILE` (maximised): the Example-F1 on a labelled dev split of corpus documents.

Every trial reports all of them (trials.csv, wandb); `--objective` says which one drives the search. Each is one
`Objective` record in `OBJECTIVES`: which way is better, its column, its description.

No objective here ranks encoders (docs/search.md, "Searching the encoder"): `UNRANKED_KEYS` and `unranked_note`
make a search that varies one say so, with the labelled documents (`DEV_BUDGET`) that rank them through `--dev`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taxoclass.config import Config
from taxoclass.errors import ConfigError


@dataclass(frozen=True)
class Objective:
    """One objective: which way is better, where a trial reports it (trials.csv, wandb), and what it is."""

    mode: str  # "max" or "min"
    column: str
    describe: str  # says max or min itself


SILVER_F1 = "silver/example_f1"
OBJECTIVES = {
    "silver_loss": Objective("min", "stage3/best_val_loss", "stage-3 best validation loss on held-out pseudo-labels (min)"),
    "silver_f1": Objective("max", SILVER_F1, "decoded Example-F1 against held-out pseudo-labels (max)"),
    "path_margin": Objective("max", "label_free/path_margin",
                             "mean gap between the best and the runner-up root-to-leaf path on corpus documents (max)"),
    "teacher_f1": Objective("max", "label_free/teacher_f1", "decoded Example-F1 against stage 1's best paths on corpus documents (max)"),
    "lexical_f1": Objective("max", "label_free/lexical_f1",
                            "decoded Example-F1 against the best paths of a TF-IDF match of the documents' words with the "
                            "class names, on corpus documents (max)"),
    "path_zmargin": Objective("max", "label_free/path_zmargin",
                              "mean lead of the best root-to-leaf path over the runner-up, in units of the spread of the "
                              "document's path logits, on corpus documents (max)"),
    "text_agreement": Objective("max", "label_free/text_agreement",
                                "Cohen's kappa between the best paths and what a bag-of-words model fitted to them on the other "
                                "half of the corpus sample predicts (max)"),
}
# chosen on the dev halves of scripts/validate_objective.py's searches (docs/search.md, "Is the objective any good?")
DEFAULT_OBJECTIVE = "text_margin"
# path_zmargin's share of text_margin: on the dev halves, 0.04-0.07 kept every set's Spearman >= .5 and regret <= .01;
# 0 failed amazon (regret .033), 0.08 relaclass (.016); the middle of that range
ZMARGIN_WEIGHT = 0.05
OBJECTIVES["text_margin"] = Objective("max", "label_free/text_margin", f"text_agreement + {ZMARGIN_WEIGHT} x path_zmargin (max)")
SAMPLE_DOCS = 2000  # corpus documents the corpus-wide objectives score: a fixed sample, the same in every trial
# Keys whose values no label-free objective ranks: across encoders, on relaclass, dbpedia-298's and amazon-531's
# generated documents and 20 Newsgroups, no objective chose the better encoder on all four sets (text_margin on one,
# lexical_f1 and path_zmargin on three; docs/search.md, "Searching the encoder"). A search that varies one with no
# --dev says so before its trials, with the labelled documents that ranked them (DEV_BUDGET).
UNRANKED_KEYS = ("similarity.model", "classifier.encoder")
# labelled corpus documents a --dev search needs to choose among encoders: at 200 the mean regret was at most .0056 on
# all four sets and the better encoder won 10, 10, 7 and 9 of 10 random draws; 400 lowered neither on relaclass and
# 20 Newsgroups; no budget up to 400 put the winner within .005 of the best trial in 9 of 10 draws on every set
# (scripts/label_budget.py, docs/search.md)
DEV_BUDGET = 200


def unranked_note(varied: list[str], objective: str) -> str | None:
    """One line when the search varies a key its label-free `objective` cannot rank, else None."""
    keys = [k for k in varied if k in UNRANKED_KEYS]
    if not keys:
        return None
    return (f"the label-free objective {objective} cannot rank {' or '.join(keys)} (docs/search.md#searching-the-encoder): "
            f"give --dev with about {DEV_BUDGET} labelled corpus documents (doc_id<TAB>class ids) to choose it")


def decoded_rankings(bundle, taxonomy, cfg: Config, docs) -> list[list[int]]:
    """A loaded model's ranked classes of these documents, decoded as the pipeline decodes."""
    import torch

    from taxoclass.decoding import decode
    from taxoclass.stages.model import predict_scores

    # a trial's own process holds no GPU; these are a few hundred documents
    probs, paths = predict_scores(bundle.model, docs, torch.device("cpu"), cfg.evaluation.batch_size)
    ranked, _ = decode(probs, taxonomy, cfg.evaluation.decoding, cfg.evaluation.save_top_k, paths)
    return ranked.tolist()


def _decoded_f1(bundle, taxonomy, cfg: Config, docs, golds: list[list[int]]) -> float:
    """Example-F1 of a loaded model, decoded as the pipeline decodes, on these documents."""
    from taxoclass.metrics import evaluate_rankings

    return evaluate_rankings(decoded_rankings(bundle, taxonomy, cfg, docs), golds, taxonomy.levels)["example_f1"]


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
    path_logits: np.ndarray | None = None  # each path's mean class logit, what either reading of the model ranks by
    texts: list[str] | None = None  # the documents' own words (the text view)
    class_texts: list[str] | None = None  # each class's name and keywords, in words (the lexical teacher)


def corpus_view(run) -> CorpusView:
    """With a frozen encoder the sample's document vectors come from the run's cache (stage 1's, which
    every trial of a search shares): no trial embeds them again."""
    import torch

    from taxoclass.stages.model import predict_scores

    cfg = run.cfg
    texts = run.inputs.corpus.texts
    rows = np.sort(np.random.default_rng(cfg.seed).permutation(len(texts))[:SAMPLE_DOCS])
    docs = run.document_inputs("corpus", rows.tolist())
    model = run.bundle().model
    probs, paths = predict_scores(model, docs, torch.device("cpu"), cfg.evaluation.batch_size)
    return CorpusView(probs, run.stage1()["corpus"][rows], run.inputs.taxonomy, paths, path_logits_of(paths, int(model.output_mode)),
                      [texts[i] for i in rows], class_texts(run.inputs.taxonomy, run.inputs.keywords))


def class_texts(taxonomy, keywords: dict[int, list[str]] | None) -> list[str]:
    """Each class in words: its readable name, and its keywords where the set has them."""
    return [" ".join([name, *(keywords or {}).get(c, [])]) for c, name in enumerate(taxonomy.readable_names)]


def path_logits_of(paths: np.ndarray, output_mode: int) -> np.ndarray:
    """Each path's mean class logit from the model's path scores: the log of a path-loss model's softmax (up to
    a constant per document, which no difference between paths sees), the logit of an untrained model's
    sigmoid; a per-class (bce) model's mean probability has no such logit and is taken as it is."""
    from taxoclass.stages.model import PATH, ZERO_SHOT

    if output_mode == PATH:
        return np.log(np.maximum(paths, 1e-30))
    if output_mode == ZERO_SHOT:
        p = np.clip(paths, 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))
    return paths


def path_margin(view: CorpusView) -> float:
    """Mean over documents of the best root-to-leaf path's score minus the runner-up's (the path
    decoder's criterion, the model's own path score): how clearly the model decides."""
    from taxoclass.decoding import path_membership

    member = path_membership(view.taxonomy)
    by_path = view.paths if view.paths is not None else view.probs @ (member / member.sum(1, keepdims=True)).T
    scores = np.sort(by_path, axis=1)
    return float((scores[:, -1] - scores[:, -2]).mean()) if scores.shape[1] > 1 else float("nan")


def path_zmargin(view: CorpusView) -> float:
    """Mean over documents of the best path's lead over the runner-up in units of the spread (standard deviation)
    of the document's path logits: how clearly the model decides, whatever the scale of its scores, which moves
    with the prototypes' refinement and between a trained model (softmax over paths) and an untrained one."""
    logits = view.path_logits
    if logits is None or logits.shape[1] < 2:
        return float("nan")
    ranked = np.sort(logits, axis=1)
    return float(((ranked[:, -1] - ranked[:, -2]) / np.maximum(logits.std(axis=1), 1e-9)).mean())


TEXT_FOLDS = 2


def text_agreement(view: CorpusView, seed: int) -> float:
    """How well the documents' own words reproduce the model's decisions, an independent view of them: a bag of
    words (TF-IDF) and a logistic regression fitted to the best paths of half the sample predict the other half's
    (and the other way round); Cohen's kappa between those predictions and the model's best paths. A model whose
    paths follow what the documents say scores high; one that moved on noise, low (chance is 0)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import cohen_kappa_score

    best = view.paths.argmax(1) if view.paths is not None else view.probs.argmax(1)
    words = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=0.5, stop_words="english").fit_transform(view.texts)
    fold = np.random.default_rng(seed).integers(0, TEXT_FOLDS, len(best))
    predicted = np.empty_like(best)
    for f in range(TEXT_FOLDS):
        train, held = fold != f, fold == f
        if len(np.unique(best[train])) < 2:  # one path on that half: nothing to tell apart
            predicted[held] = best[train][0]
            continue
        with warnings.catch_warnings():  # many paths and few documents per path is this view's normal case, not a mistake
            warnings.filterwarnings("ignore", "The number of unique classes is greater than 50%", UserWarning)
            predicted[held] = LogisticRegression(C=10, max_iter=300).fit(words[train], best[train]).predict(words[held])
    return float(cohen_kappa_score(best, predicted)) if len(np.unique(best)) > 1 else 0.0


def lexical_f1(view: CorpusView, decoding: str) -> float:
    """Example-F1 of the decoded model against a teacher that sees no encoder: the best path of the TF-IDF cosine
    between each document's words and each class's name (and keywords), over the documents where that teacher
    finds any word of any class. Its mistakes are its own, the same for every trial, so a model that agrees with
    it more is, in expectation, the more accurate one, whichever encoder it came from."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from taxoclass.decoding import decode, similarity_best_paths
    from taxoclass.metrics import evaluate_rankings

    words = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(view.texts + view.class_texts)
    lexical = (words.transform(view.texts) @ words.transform(view.class_texts).T).toarray()
    fires = lexical.max(1) > 0
    if fires.sum() < 2:
        return float("nan")
    ranked, _ = decode(view.probs[fires], view.taxonomy, decoding, 3, None if view.paths is None else view.paths[fires])
    return evaluate_rankings(ranked.tolist(), similarity_best_paths(lexical[fires], view.taxonomy),
                             view.taxonomy.levels)["example_f1"]


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
    zmargin, agreement = path_zmargin(view), text_agreement(view, cfg.seed)
    values = {"silver_loss": summary.get("stage3/best_val_loss", float("nan")),  # NaN: a stage 3 that stepped aside
              "silver_f1": silver, "path_margin": path_margin(view), "teacher_f1": teacher_f1(view, cfg.evaluation.decoding),
              "lexical_f1": lexical_f1(view, cfg.evaluation.decoding), "path_zmargin": zmargin, "text_agreement": agreement,
              "text_margin": agreement + ZMARGIN_WEIGHT * zmargin}
    return {OBJECTIVES[name].column: value for name, value in values.items()}


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
