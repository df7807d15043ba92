import gzip
import json

import pytest
from conftest import SHARED_DATA, needs_shared, run_cli, write_dataset

from taxoclass.data.readers import load_dataset, read_keywords
from taxoclass.data.validate import validate
from taxoclass.errors import DataError


def test_teleclass_layout(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    assert ds.variant == "teleclass"
    assert ds.corpus.doc_ids == ["d1", "d2"]
    assert ds.test.doc_ids == ["t1", "t2"]
    assert ds.test_labels == {"t1": [0, 2, 4], "t2": [1]}
    assert not ds.transductive


def test_gzipped_corpus(tmp_path):
    root = write_dataset(tmp_path / "gz")
    (root / "train" / "corpus.txt").unlink()
    with gzip.open(root / "train" / "corpus.txt.gz", "wt") as fh:
        fh.write("x1\tzipped text\n")
    ds = load_dataset(root)
    assert ds.corpus.texts == ["zipped text"]


def test_generated_documents(tmp_path):
    root = write_dataset(tmp_path / "gen")
    (root / "train" / "corpus.txt").unlink()
    (root / "train" / "generated_docs.txt").write_text("0\tone\n1\ttwo\n")
    (root / "train" / "generated_doc2label.json").write_text(json.dumps(
        {"0": {"core_classes": "4", "with ancestors": ["0", "2", "4"]}, "1": {"core_classes": "3", "with ancestors": ["0", "3"]}}))
    ds = load_dataset(root)
    assert ds.variant == "generated" and ds.transductive
    assert ds.test_labels == {"0": [0, 2, 4], "1": [0, 3]}


def test_json_lines(tmp_path):
    root = write_dataset(tmp_path / "js")
    (root / "train" / "corpus.txt").unlink()
    (root / "docs.json").write_text('{"asin": "A1", "token": "a thing", "labels": [0, 2]}\n{"asin": "A2", "text": "b", "labels": ["1"]}\n')
    ds = load_dataset(root)
    assert ds.variant == "jsonl" and ds.corpus.doc_ids == ["A1", "A2"]
    assert ds.test_labels == {"A1": [0, 2], "A2": [1]}
    assert load_dataset(root / "docs.json").corpus.doc_ids == ["A1", "A2"]  # the file itself works too


def test_keywords(tmp_path):
    root = write_dataset(tmp_path / "kw")
    path = root / "kw.txt"
    path.write_text("a:red_apple,pear\ne_class:x\n")
    assert read_keywords(path, load_dataset(root).taxonomy) == {0: ["red apple", "pear"], 4: ["x"]}
    path.write_text("a:red\nnope:x\n")
    with pytest.raises(DataError, match=r"kw.txt:2: unknown class name 'nope'"):
        read_keywords(path, load_dataset(root).taxonomy)


@pytest.mark.parametrize(
    "files, message",
    [
        ({"train/corpus.txt": "d1\tx\nd1\ty\n"}, "train/corpus.txt:2: duplicate document id 'd1' (first on line 1)"),
        ({"train/corpus.txt": "d1\tx\nd2\t   \n"}, "train/corpus.txt:2: empty text for document 'd2'"),
        ({"train/corpus.txt": b"d1\tcaf\xe9\n"}, "train/corpus.txt:1: bytes that are not UTF-8"),
        ({"train/corpus.txt": "d1 no tab\n"}, "train/corpus.txt:1: expected 'doc_id<TAB>text'"),
        ({"test/corpus.txt": "t1\tx\n", "test/doc2labels.txt": "t1\t0,7\n"}, "test/doc2labels.txt:1: label names unknown class id '7'"),
        ({"test/corpus.txt": "t1\tx\nt2\ty\n", "test/doc2labels.txt": "t1\t0\n"}, "no labels for document 't2'"),
        ({"test/corpus.txt": "t1\tx\n"}, "test/doc2labels.txt: file not found"),
        ({"docs.json": '{"token": "x", "labels": [0]}\n{"token": "y", "labels": [1]\n'}, "docs.json:2: malformed JSON line"),
        ({"docs.json": '{"body": "x", "labels": [0]}\n'}, "docs.json:1: no text field (one of token, text)"),
        ({"docs.json": '{"id": 1, "text": "x", "labels": [0]}\n{"id": 1, "text": "y", "labels": [0]}\n'},
         "docs.json:2: duplicate document id '1'"),
    ],
)
def test_corpus_errors(tmp_path, files, message):
    root = write_dataset(tmp_path / "bad")
    if any(name.endswith(".json") for name in files):
        (root / "train" / "corpus.txt").unlink()
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert message in str(err.value)


def test_no_corpus_at_all(tmp_path):
    root = write_dataset(tmp_path / "empty")
    (root / "train" / "corpus.txt").unlink()
    with pytest.raises(DataError, match="no corpus found"):
        load_dataset(root)


def test_cli_validate_error_is_one_line_and_exit_2(tmp_path):
    root = write_dataset(tmp_path / "cyc", edges="0\t2\n2\t0\n")
    res = run_cli("validate", root)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "label_hierarchy.txt:2: cycle in the class hierarchy: a -> c -> a" in lines[0]


def test_cli_validate_demo_counts():
    res = run_cli("validate", "demo")
    assert res.returncode == 0, res.stderr
    assert "classes: 41 (level 0: 4, level 1: 12, level 2: 25)" in res.stdout
    assert "multi-parent classes: 1" in res.stdout
    assert "corpus: 200 documents" in res.stdout and "test: 100 documents" in res.stdout


def test_demo_dataset_is_what_the_issue_asks():
    ds = load_dataset("demo")
    tax = ds.taxonomy
    assert len(tax) >= 30 and tax.num_levels == 3 and tax.multi_parent
    assert len(ds.corpus) + len(ds.test) >= 300
    texts = ds.corpus.texts + ds.test.texts
    assert len(set(texts)) == len(texts)
    lengths = sorted(len(t.split()) for t in texts)
    assert lengths[0] < 15 and lengths[-1] > 30  # varied length
    for doc_id in ds.test.doc_ids:  # gold sets are whole label paths: closed under ancestors
        gold = set(ds.test_labels[doc_id])
        assert tax.with_ancestors(gold) == gold


@needs_shared
@pytest.mark.parametrize(
    "name, variant, classes, docs",
    [("amazon-531", "generated", 531, 2555), ("dbpedia-298", "generated", 298, 1095), ("relaclass-amazon-1000", "jsonl", 322, 1000)],
)
def test_shared_datasets_load_as_they_are(name, variant, classes, docs):
    ds = load_dataset(SHARED_DATA / name)
    assert ds.variant == variant and len(ds.taxonomy) == classes
    assert len(ds.corpus) == docs and ds.transductive
    assert all(ds.test_labels[d] for d in ds.test.doc_ids)
    report = validate(SHARED_DATA / name)
    assert f"classes: {classes}" in report


@needs_shared
def test_amazon_531_real_test_reviews():
    ds = load_dataset(SHARED_DATA / "amazon-531", test_corpus=SHARED_DATA / "amazon-531" / "test" / "corpus_first10.txt")
    assert len(ds.test) == 10 and not ds.transductive
    assert ds.test_labels["0"] == [10, 64, 93]


# ---------------------------------------------------------------- issue 11: files that used to end in a traceback
@pytest.mark.parametrize("content, message", [
    (b"d1\tplain text, not gzip\n", "train/corpus.txt.gz: not a gzip file"),
    # mtime=0: the same bytes, and so the same test id, in every process (pytest -n's workers must collect alike)
    (gzip.compress(b"d1\tfirst\nd2\tsecond document with more words\n" * 50, mtime=0)[:-40],
     "train/corpus.txt.gz: truncated or corrupt gzip file"),
], ids=["plain text", "truncated"])
def test_bad_gzip_corpus_is_one_line(tmp_path, content, message):
    root = write_dataset(tmp_path / "gz")
    (root / "train" / "corpus.txt").unlink()
    (root / "train" / "corpus.txt.gz").write_bytes(content)
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert message in str(err.value)
    res = run_cli("validate", root)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_utf8_bom_is_read(tmp_path):
    bom = "\ufeff"
    root = write_dataset(tmp_path / "bom", labels=bom + "0\ta\n1\tb\n2\tc\n3\td\n4\te_class\n", corpus=bom + "d1\tfirst\n",
                         test=bom + "t1\tx\n", test_labels=bom + "t1\t0\n")
    ds = load_dataset(root)
    assert ds.taxonomy.ids[0] == "0" and ds.corpus.doc_ids == ["d1"] and ds.test_labels == {"t1": [0]}


def test_json_text_that_is_a_list(tmp_path):
    root = write_dataset(tmp_path / "js")
    (root / "train" / "corpus.txt").unlink()
    (root / "docs.json").write_text('{"text": "fine", "labels": [0]}\n{"text": ["a", "list"], "labels": [0]}\n')
    with pytest.raises(DataError, match=r"docs.json:2: the text field must be a string, got a list"):
        load_dataset(root)


def test_classes_whose_readable_names_collide(tmp_path):
    root = write_dataset(tmp_path / "names", labels="0\thome_audio\n1\tb\n2\tHome Audio\n3\td\n4\te_class\n")
    with pytest.raises(DataError, match=r"labels.txt:3: class name 'Home Audio' reads the same as 'home_audio' \(line 1\)"):
        load_dataset(root)


# ---------------------------------------------------------------- issue 19: labels for documents the corpus lacks
def test_labels_of_documents_not_in_the_corpus_are_a_warning(tmp_path, capfd):
    root = write_dataset(tmp_path / "extra", corpus="d1\tfirst document\nd2\tsecond document\n",
                         train_labels="d1\t0\nzz9\t1\nd2\t1\nzz8\t0\n", test="t1\tgreat thing\nt2\tbad thing\n",
                         test_labels="t1\t0,2,4\nx7\t1\nt2\t1\n")
    ds = load_dataset(root)
    assert ds.corpus_labels == {"d1": [0], "zz9": [1], "d2": [1], "zz8": [0]} and ds.test.doc_ids == ["t1", "t2"]
    warnings = capfd.readouterr().err.strip().splitlines()
    assert warnings == [
        f"taxoclass: warning: {root / 'train' / 'doc2labels.txt'}: 2 labelled documents are not in "
        f"{root / 'train' / 'corpus.txt'} and are ignored (first: 'zz9')",
        f"taxoclass: warning: {root / 'test' / 'doc2labels.txt'}: 1 labelled documents are not in "
        f"{root / 'test' / 'corpus.txt'} and are ignored (first: 'x7')",
    ]
    report = validate(root)  # the validator reports them in its counts too
    assert "train/doc2labels.txt: 4 documents" in report and f"2 not in {root / 'train' / 'corpus.txt'}, ignored (first: 'zz9')" in report
    assert f"1 not in {root / 'test' / 'corpus.txt'}, ignored (first: 'x7')" in report
    res = run_cli("validate", root)
    assert res.returncode == 0 and res.stderr.count("taxoclass: warning:") == 2 and res.stdout.strip().endswith("ok")


def test_matching_labels_and_a_chosen_test_subset_say_nothing(tiny_dataset, tmp_path, capfd):
    load_dataset(tiny_dataset)
    subset = tmp_path / "first.txt"  # test_corpus=FILE evaluates on part of test/doc2labels.txt's documents on purpose
    subset.write_text("t1\tgreat thing\n")
    assert load_dataset(tiny_dataset, test_corpus=subset).test.doc_ids == ["t1"]
    assert "warning" not in capfd.readouterr().err


def test_a_taxonomy_of_one_class_is_refused_before_stage_1(tmp_path):
    """Issue 29: one class, no edges, every test document labelled with it. All four stages ran, then scikit-learn
    raised a TypeError in the evaluation (exit status 1, a model and no summary)."""
    root = write_dataset(tmp_path / "one", labels="0\tonly\n", edges="", test="t1\tx\nt2\ty\n", test_labels="t1\t0\nt2\t0\n")
    message = f"{root / 'labels.txt'}: one class ('only'): nothing to choose between; a taxonomy needs at least 2 classes"
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert str(err.value) == message
    res = run_cli("run", "--preset", "debug", f"data={root}", f"output_dir={tmp_path / 'runs'}", "run_name=one")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [f"taxoclass: error: {message}"], res.stderr
    assert not (tmp_path / "runs" / "one").exists()  # refused before the run dir, let alone stage 1


@pytest.mark.parametrize("name", ["labels.txt", "train/corpus.txt"])
def test_a_dataset_file_given_as_the_dataset_is_named_so(tmp_path, name):
    """Issue 29: `taxoclass validate labels.txt` read the file as JSON lines and said 'malformed JSON line'."""
    root = write_dataset(tmp_path / "ds")
    res = run_cli("validate", root / name)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"taxoclass: error: {root / name}: not a dataset: give the dataset's folder (holding labels.txt, label_hierarchy.txt, "
        "train/corpus.txt) or its JSON-lines file (*.json, *.jsonl)"], res.stderr
