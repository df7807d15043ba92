"""scripts/build_20newsgroups.py: the conversion from scikit-learn's raw posts to the dataset folder, on posts written
in memory (the download itself needs a network), read back with the project's own reader and compared with the
shared copy's taxonomy files where they are present."""

from __future__ import annotations

import gzip
import importlib.util

import pytest
from conftest import REPO, SHARED_DATA

from taxoclass.data.readers import load_dataset
from taxoclass.data.validate import validate

spec = importlib.util.spec_from_file_location("build_20newsgroups", REPO / "scripts" / "build_20newsgroups.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

SHARED_20NG = SHARED_DATA / "20newsgroups"

HOCKEY = """From: fan@example.org (A Fan)
Subject: Re: RE: FLYERS notes 4/17
Organization: Nowhere
Lines: 3

The FLYERS closed out the season
\tlast night with their 8th   straight victory.
"""
FOR_SALE = "From: seller@example.org\nSubject: Maxtor drive geometry/jumpers\nLines: 0\n\n"
MAC = """From: someone@example.org
Subject: Noisy SE: What can I do?
  (long subject, folded)
Lines: 1

In article <1qk2@cae> vincent writes:
>The fan is loud.
"""
NO_SUBJECT = "From: x@example.org\nLines: 1\n\nJust a body, comp.graphics in it.\n"
EMPTY = "From: x@example.org\nLines: 0\n\n   \n"


def test_a_post_becomes_subject_and_body_on_one_line_without_headers():
    assert build.post_text(HOCKEY) == ("FLYERS notes 4/17. The FLYERS closed out the season last night with their 8th "
                                       "straight victory.")
    assert build.post_text(FOR_SALE) == "Maxtor drive geometry/jumpers."  # a subject alone ends with its period
    assert build.post_text(MAC) == ("Noisy SE: What can I do? (long subject, folded). In article <1qk2@cae> vincent "
                                    "writes: >The fan is loud.")
    assert build.post_text(NO_SUBJECT) == "Just a body, comp.graphics in it."
    assert build.post_text(EMPTY) == ""
    assert build.post_text("Subject: Re Aftermarket A/C units\n\nbody") == "Re Aftermarket A/C units. body"  # no colon: kept


def test_each_newsgroup_maps_to_its_full_path():
    assert build.label_path("rec.sport.hockey") == [7, 10, 12]
    assert build.label_path("comp.sys.mac.hardware") == [0, 3, 5]
    assert build.label_path("misc.forsale") == [26]
    assert build.label_path("talk.religion.misc") == [22, 25]
    assert len(build.NEWSGROUP_LEAF) == 20 and len(set(build.NEWSGROUP_LEAF.values())) == 20
    with pytest.raises(ValueError, match="unknown newsgroup"):
        build.label_path("comp.os.linux")


def test_the_built_folder_reads_back_with_the_projects_reader(tmp_path):
    train = ([HOCKEY, FOR_SALE, EMPTY, MAC], ["rec.sport.hockey", "misc.forsale", "sci.med", "comp.sys.mac.hardware"])
    test = ([NO_SUBJECT, HOCKEY], ["comp.graphics", "rec.sport.hockey"])
    files = build.build_files(train, test, seed=0)
    assert files == build.build_files(train, test, seed=0)  # a fixed shuffle
    folder = tmp_path / "20newsgroups"
    build.write_folder(folder, files)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "label_hierarchy.txt", "labels.txt", "test/corpus.txt.gz", "test/doc2labels.txt", "train/corpus.txt.gz",
        "train/doc2labels.txt"]
    ds = load_dataset(folder)
    assert ds.variant == "teleclass" and len(ds.taxonomy) == 27
    # the empty post is left out; ids follow the shuffled order
    assert ds.corpus.doc_ids == ["train_0", "train_1", "train_2"] and ds.test.doc_ids == ["test_0", "test_1"]
    by_text = dict(zip(ds.corpus.texts, ds.corpus.doc_ids))
    hockey = by_text[build.post_text(HOCKEY)]
    assert ds.corpus_labels[hockey] == [7, 10, 12]
    assert ds.corpus_labels[by_text["Maxtor drive geometry/jumpers."]] == [26]
    assert sorted(map(tuple, ds.test_labels.values())) == [(0, 1), (7, 10, 12)]
    report = validate(folder)
    assert "27" in report  # the taxonomy's classes are counted
    with gzip.open(folder / "train" / "corpus.txt.gz", "rb") as fh:
        assert fh.read().decode("utf-8").count("\n") == 3


@pytest.mark.skipif(not SHARED_20NG.is_dir(), reason=f"shared 20 Newsgroups copy not found at {SHARED_20NG}")
def test_the_taxonomy_and_paths_are_the_shared_copys():
    files = build.build_files(([HOCKEY], ["rec.sport.hockey"]), ([MAC], ["comp.sys.mac.hardware"]))
    assert files["labels.txt"] == (SHARED_20NG / "labels.txt").read_text(encoding="utf-8")
    assert files["label_hierarchy.txt"] == (SHARED_20NG / "label_hierarchy.txt").read_text(encoding="utf-8")
    # the shared gold holds exactly the 20 newsgroups' paths, in the same notation
    shared_paths = {line.split("\t")[1] for line in (SHARED_20NG / "train" / "doc2labels.txt").read_text().splitlines()}
    assert shared_paths == {",".join(map(str, build.label_path(g))) for g in build.NEWSGROUP_LEAF}
    # the ids and the text lines look alike: `train_N<TAB>Subject. body`
    with gzip.open(SHARED_20NG / "train" / "corpus.txt.gz", "rt", encoding="utf-8") as fh:
        first = fh.readline().rstrip("\n").split("\t")
    assert first[0] == "train_0" and len(first) == 2 and "\n" not in first[1]
    assert files["train/corpus.txt"].split("\t")[0] == "train_0"
