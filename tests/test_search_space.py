"""The default search space (taxoclass/search/space.py): every key in it moves the default pipeline's final scores.

A key the default config ignores (as `classifier.label_scope` was, once the path loss became the default) would
only spread the search's budget over settings that cannot differ. The fixture is a small corpus on which the
default pipeline does everything it can: stage 1 refines its prototypes, stage 3 trains (about 15 pseudo-labelled
documents per label path) and stage 4 self-trains.
"""

import json
import random

import pytest
from conftest import write_dataset

from taxoclass.config import build_config, get_value, with_values
from taxoclass.pipeline import run_pipeline
from taxoclass.search.space import DEFAULT_SPACE

# two topics, two subtopics each: root-to-leaf paths sports > football, sports > tennis, cooking > baking, cooking > grilling
LABELS = "0\tsports\n1\tcooking\n2\tfootball\n3\ttennis\n4\tbaking\n5\tgrilling\n"
EDGES = "0\t2\n0\t3\n1\t4\n1\t5\n"
WORDS = {2: "goal striker referee penalty stadium league kick midfielder offside pitch".split(),
         3: "racket serve volley court grand slam baseline backhand umpire deuce".split(),
         4: "oven dough flour bread cake yeast pastry bake sugar muffin".split(),
         5: "barbecue charcoal grill steak smoke ribs skewer burger marinade flame".split()}
PARENT = {2: 0, 3: 0, 4: 1, 5: 1}
FILLER = "we the a today really it was great some my friend and new about".split()


def _documents(prefix: str, per_leaf: int, rng: random.Random) -> tuple[str, str]:
    lines, gold = [], []
    for leaf, words in WORDS.items():
        others = [w for other, ws in WORDS.items() if other != leaf for w in ws]
        for i in range(per_leaf):
            # mostly the subtopic's words, some of another's: documents that are not all easy
            text = rng.sample(words, 4) + rng.sample(others, rng.randint(0, 3)) + rng.sample(FILLER, 4)
            rng.shuffle(text)
            lines.append(f"{prefix}{leaf}_{i}\t{' '.join(text)}")
            gold.append(f"{prefix}{leaf}_{i}\t{PARENT[leaf]},{leaf}")
    return "\n".join(lines) + "\n", "\n".join(gold) + "\n"


def _other_value(param, default):
    """A value of the space far from the default: the farther end of a range, another choice of a list."""
    if param.kind == "categorical":
        return next(v for v in param.values if v != default)
    low, high = (int(param.low), int(param.high)) if param.kind == "int_uniform" else (param.low, param.high)
    return low if abs(default - low) > abs(default - high) else high


def _final_scores(run_dir) -> list:
    return [json.loads(line)["scores"] for line in (run_dir / "predictions" / "test.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    rng = random.Random(0)
    corpus, _ = _documents("c", 30, rng)
    test, test_gold = _documents("t", 8, rng)
    data = write_dataset(root / "topics", labels=LABELS, edges=EDGES, corpus=corpus, test=test, test_labels=test_gold)

    done = {}

    def run(name, key=None, value=None):
        if name in done:
            return done[name]
        cfg = build_config(overrides=[f"data={data}", f"output_dir={root}", f"run_name={name}", f"cache_dir={root / 'cache'}",
                                      "similarity.template=This text is about {}.", "device=cpu"], environ={})
        if key:
            cfg = with_values(cfg, {key: value})
        done[name] = run_pipeline(cfg), _final_scores(root / name)
        return done[name]

    return run


def test_the_fixture_runs_every_stage_of_the_default_pipeline(fixture_runs):
    summary, _ = fixture_runs("default")
    assert summary["stage3/stepped_aside"] == 0 and summary["stage3/docs_per_label"] >= 10
    assert "stage4/runs_because" in summary and summary["stage4/batches"] > 0


@pytest.mark.parametrize("param", DEFAULT_SPACE, ids=[p.key for p in DEFAULT_SPACE])
def test_each_key_of_the_default_space_moves_the_final_scores(fixture_runs, param):
    _, default_scores = fixture_runs("default")
    value = _other_value(param, get_value(build_config(environ={}), param.key))
    _, scores = fixture_runs(f"{param.key}={value}", param.key, value)
    assert scores != default_scores, f"{param.key}={value} left every final score as the default's"
