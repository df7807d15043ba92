"""The search's label-free objectives (taxoclass/search/objectives.py): golden numbers on a tiny taxonomy, and
computing them from a finished run leaves its run dir as the run wrote it."""

import numpy as np
import pytest
from conftest import write_dataset

from taxoclass.config import build_config
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.pipeline import run_pipeline
from taxoclass.search.objectives import COLUMN, CorpusView, label_free_objectives, path_margin, teacher_f1
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
    assert set(values) == set(COLUMN.values())
    assert values[COLUMN["silver_loss"]] == summary["stage3/best_val_loss"]
    assert 0 <= values[COLUMN["teacher_f1"]] <= 1 and 0 <= values[COLUMN["path_margin"]] <= 1
    assert {f: (run_dir / f).read_bytes() for f in before} == before  # no attempt marker, no config rewritten
    assert sorted(p.name for p in (run_dir / "cache").iterdir()) == cache  # read only: nothing added to the cache
    assert label_free_objectives(cfg, run_dir) == values
