"""The search's label-free objectives (taxoclass/search/objectives.py): golden numbers on a tiny taxonomy, and
computing them from a finished run leaves its run dir as the run wrote it."""

import numpy as np
import pytest
from conftest import write_dataset

from taxoclass.config import build_config
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.pipeline import run_pipeline
from taxoclass.search.objectives import (
    OBJECTIVES,
    ZMARGIN_WEIGHT,
    CorpusView,
    label_free_objectives,
    path_logits_of,
    path_margin,
    path_zmargin,
    teacher_f1,
    text_agreement,
)
from taxoclass.stages.text_encoder import texts_encoded


def _tiny_view(tmp_path):
    # a(0) -> c(2), a -> d(3); b(1) -> c; c -> e(4): root-to-leaf paths [a,d], [a,c,e], [b,c,e]
    tax = Taxonomy.load(write_dataset(tmp_path / "tiny"))
    a, b, c, d, e = (tax.index[str(i)] for i in range(5))

    def row(**p):
        out = np.zeros(len(tax))
        for name, value in p.items():
            out[{"a": a, "b": b, "c": c, "d": d, "e": e}[name]] = value
        return out

    probs = np.stack([row(a=.9, b=.1, c=.6, d=.2, e=.5),    # paths .55 / .667 / .4: [a,c,e] by .117
                      row(a=.2, b=.8, c=.3, d=.1, e=.4),    # .15 / .3 / .5: [b,c,e] by .2
                      row(a=.9, b=.1, c=.1, d=.8, e=.1)])   # .85 / .367 / .1: [a,d] by .483
    teacher = np.stack([row(a=.1, b=.9, c=.5, e=.5),        # teacher's path [b,c,e]
                        row(a=.9, d=.9),                    # [a,d]
                        row(a=.9, b=.1, c=.1, d=.8, e=.1)])  # [a,d]
    return CorpusView(probs, teacher, tax)


def test_path_margin_and_teacher_f1_golden(tmp_path):
    view = _tiny_view(tmp_path)
    assert path_margin(view) == pytest.approx(((2 / 3 - 0.55) + (0.5 - 0.3) + (0.85 - 1.1 / 3)) / 3)  # (.117 + .2 + .483) / 3
    # decoded top 3: {a,c,e} against {b,c,e}: 2/3; {b,c,e} against {a,d}: 0; {a,d,b} (b next by score, first of
    # the tie) against {a,d}: 2*2/(3+2) = .8
    assert teacher_f1(view, "path") == pytest.approx((2 / 3 + 0 + 0.8) / 3)
    # the flat decoder ranks by score alone: doc 1 {a,c,e} as before, doc 2 {b,e,c}, doc 3 {a,d,b}
    assert teacher_f1(view, "flat") == pytest.approx((2 / 3 + 0 + 0.8) / 3)
    confident = CorpusView(np.where(view.probs > 0.45, 0.99, 0.01), view.teacher, view.taxonomy)
    assert path_margin(confident) > path_margin(view)  # a model that separates its paths more decides more clearly


def test_path_zmargin_golden_and_free_of_the_scores_scale(tmp_path):
    view = _tiny_view(tmp_path)
    # doc 1 leads by 1 with path logits 2, 1, 0 (std sqrt(2/3)); doc 2 by 3 with 0, 0, 3 (std sqrt(2))
    view.path_logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    golden = (1 / np.sqrt(2 / 3) + 3 / np.sqrt(2)) / 2
    assert path_zmargin(view) == pytest.approx(golden)  # 1.673
    view.path_logits = 5 * view.path_logits - 7  # the prototypes' refinement or training rescale the logits
    assert path_zmargin(view) == pytest.approx(golden)


def test_path_logits_are_read_back_from_either_models_path_scores():
    from taxoclass.stages.model import PATH, ZERO_SHOT

    logits = np.array([[1.0, -0.5, 2.0]])
    softmax = np.exp(logits) / np.exp(logits).sum()
    sigmoid = 1 / (1 + np.exp(-logits))
    assert np.diff(path_logits_of(softmax, PATH)) == pytest.approx(np.diff(logits))  # a constant per document apart
    assert path_logits_of(sigmoid, ZERO_SHOT) == pytest.approx(logits)


def _text_view(labels, texts):
    paths = np.eye(3)[labels]  # one-hot path scores: the best path is the label
    return CorpusView(paths, paths, None, paths=paths, texts=texts)


def test_text_agreement_is_one_when_words_decide_the_paths_and_near_chance_when_they_do_not():
    rng = np.random.default_rng(0)
    topics = [["apple", "banana", "cherry", "grape"], ["engine", "wheel", "brake", "gear"], ["goal", "match", "team", "score"]]
    labels = np.repeat([0, 1, 2], 20)
    texts = [" ".join(rng.choice(topics[k], 3)) + " some words " + " ".join(rng.choice(["the", "a", "my"], 2)) for k in labels]
    assert text_agreement(_text_view(labels, texts), seed=0) == pytest.approx(1.0)
    shuffled = rng.permutation(labels)  # paths the words cannot tell: near chance
    assert abs(text_agreement(_text_view(shuffled, texts), seed=0)) < 0.3
    assert text_agreement(_text_view(np.zeros(60, dtype=int), texts), seed=0) == 0.0  # one path for all: nothing agrees by skill


def test_objectives_of_a_finished_run_read_its_cache_and_leave_the_run_dir_alone(tmp_path):
    cfg = build_config("debug", overrides=[f"output_dir={tmp_path}", "run_name=r"], environ={})
    summary = run_pipeline(cfg)
    run_dir = tmp_path / "r"
    before = {f: (run_dir / f).read_bytes() for f in ("metrics.jsonl", "config.yaml", "summary.json")}
    cache = sorted(p.name for p in (run_dir / "cache").iterdir())
    encoded = texts_encoded()
    values = label_free_objectives(cfg, run_dir)
    # the sample's vectors are stage 1's, from the cache, and the model is built from its stored class features
    assert texts_encoded() == encoded
    column = {name: o.column for name, o in OBJECTIVES.items()}
    assert set(values) == set(column.values())
    assert values[column["silver_loss"]] == summary["stage3/best_val_loss"]
    assert 0 <= values[column["teacher_f1"]] <= 1 and 0 <= values[column["path_margin"]] <= 1
    assert 0 <= values[column["lexical_f1"]] <= 1
    # the default objective is its two parts, weighted as objectives.py says
    assert values[column["text_margin"]] == pytest.approx(values[column["text_agreement"]]
                                                          + ZMARGIN_WEIGHT * values[column["path_zmargin"]])
    assert {f: (run_dir / f).read_bytes() for f in before} == before  # no attempt marker, no config rewritten
    assert sorted(p.name for p in (run_dir / "cache").iterdir()) == cache  # read only: nothing added to the cache
    assert label_free_objectives(cfg, run_dir) == values


def test_a_search_over_an_unranked_key_says_what_ranks_it(tmp_path):
    from taxoclass.search.objectives import DEV_BUDGET, unranked_note
    from taxoclass.search.space import read_sweep

    def varied(params: str) -> list[str]:
        (tmp_path / "s.yaml").write_text("parameters:\n" + params)
        return read_sweep(str(tmp_path / "s.yaml")).varied_keys()

    encoders = varied("  similarity.model: {values: [bundled, /models/mpnet]}\n  similarity.refine_weight: {min: 0.2, max: 0.8}\n")
    assert encoders == ["similarity.model", "similarity.refine_weight"]
    note = unranked_note(encoders, "text_margin")
    assert "text_margin cannot rank similarity.model" in note and f"--dev with about {DEV_BUDGET} labelled" in note
    # one encoder, or none varied: nothing to say
    assert unranked_note(varied("  similarity.model: {values: [bundled]}\n  similarity.refine_weight: {min: 0.2, max: 0.8}\n"),
                         "text_margin") is None
    assert unranked_note(varied("  similarity.model: {value: bundled}\n  classifier.epochs: {values: [1, 2]}\n"),
                         "text_margin") is None


def test_the_shipped_encoder_space_varies_the_encoder_and_gets_the_note():
    from conftest import REPO

    from taxoclass.search.objectives import unranked_note
    from taxoclass.search.space import read_sweep

    space = read_sweep(str(REPO / "tune" / "encoders.yaml"))
    assert space.varied_keys()[0] == "similarity.model" and len(space.params[0].values) == 2
    assert unranked_note(space.varied_keys(), "text_margin") is not None
