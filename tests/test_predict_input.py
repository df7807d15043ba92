"""`predict` reads every corpus format the dataset readers accept, with the same ids and texts (no model needed)."""

import gzip
import json

import pytest
from conftest import SHARED_DATA, needs_shared, run_cli, write_dataset

from taxoclass.data.readers import DEMO_DIR, load_dataset, read_corpus, read_jsonl
from taxoclass.errors import DataError
from taxoclass.predict import chunks, iter_texts, read_texts, scan_input


def _same(inputs, corpus, fmt):
    assert inputs.format == fmt
    assert inputs.ids == corpus.doc_ids and inputs.texts == corpus.texts


def test_tab_separated_corpus_files_round_trip(tmp_path):
    _same(read_texts(DEMO_DIR / "test" / "corpus.txt"), read_corpus(DEMO_DIR / "test" / "corpus.txt"), "tsv")
    gz = tmp_path / "corpus.txt.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("x1\tzipped text\n\nx2\tmore text\n")
    _same(read_texts(gz), read_corpus(gz), "tsv")
    generated = tmp_path / "generated_docs.txt"  # TELEClass generated documents: numeric ids
    generated.write_text("0\tone review\n1\ttwo reviews\n")
    inputs = read_texts(generated)
    assert inputs.ids == ["0", "1"] and inputs.texts == ["one review", "two reviews"]


@pytest.mark.parametrize("rows", [
    [{"asin": "A1", "token": "a thing", "labels": [0]}, {"asin": "A2", "text": "b thing", "labels": [1]}],
    [{"doc_id": "x", "text": "first"}, {"id": 7, "text": "second"}],
    [{"text": "no id here"}, {"token": "nor here"}],  # ids are the 0-based row counter, as the reader gives them
])
def test_json_lines_round_trip(tmp_path, rows):
    root = write_dataset(tmp_path / "js")
    path = root / "docs.jsonl"
    path.write_text("".join(json.dumps({"labels": [0], **r}) + "\n" for r in rows))
    corpus, _ = read_jsonl(path, load_dataset(root).taxonomy)
    _same(read_texts(path), corpus, "jsonl")


@needs_shared
@pytest.mark.parametrize("name, file", [("amazon-531", "train/generated_docs.txt"), ("amazon-531", "test/corpus_first10.txt"),
                                        ("relaclass-amazon-1000", "test_sampled_1000.json")])
def test_shared_corpora_round_trip(name, file):
    path = SHARED_DATA / name / file
    ds = load_dataset(path if path.suffix == ".json" else SHARED_DATA / name)
    corpus = ds.corpus if file != "test/corpus_first10.txt" else read_corpus(path)
    _same(read_texts(path), corpus, "jsonl" if path.suffix == ".json" else "tsv")


def test_plain_lines_keep_their_line_numbers(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("These headphones block the noise.\n\n  A tent for two.\tWith poles \n")
    inputs = read_texts(path)
    assert inputs.format == "plain"
    assert inputs.ids == ["1", "3"] and inputs.texts == ["These headphones block the noise.", "A tent for two.\tWith poles"]


@pytest.mark.parametrize("content, message", [
    ("{\"text\": \"fine\"}\nnot json\n", r"texts.txt:2: malformed JSON line"),
    ("{\"title\": \"x\"}\n", r"texts.txt:1: no text field"),
    ("a1\tfine\na1\tagain\n", r"texts.txt:2: duplicate document id 'a1'"),
    ("a1\tfine\nno tab here\n", r"texts.txt:2: expected 'doc_id<TAB>text'"),
    ("\n\n", r"texts.txt: no texts to classify"),
])
def test_bad_input_names_the_line(tmp_path, content, message):
    path = tmp_path / "texts.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_texts(path)


def test_input_is_checked_up_front_then_read_lazily(tmp_path):
    """`predict` checks and counts the whole file before the model loads, then streams it: the reader holds
    one text at a time (a bad last line is met only when reached)."""
    path = tmp_path / "texts.txt"
    path.write_text("a1\tfirst\na2\tsecond\na1\tthe first id again\n")
    with pytest.raises(DataError, match=r"texts.txt:3: duplicate document id 'a1'"):
        scan_input(path)
    lazy = iter_texts(path, "tsv")
    assert next(lazy) == ("a1", "first") and next(lazy) == ("a2", "second")
    with pytest.raises(DataError, match=r"texts.txt:3: duplicate"):
        next(lazy)
    path.write_text("\n".join(f"line {i}" for i in range(10)) + "\n")
    assert scan_input(path) == ("plain", 10)
    assert [len(c) for c in chunks(iter_texts(path, "plain"), 4)] == [4, 4, 2]


def test_a_folder_as_input_is_named_a_folder(tmp_path):
    """Issue 29: `predict --input DIR` said 'file not found' for a folder that exists."""
    with pytest.raises(DataError) as err:
        scan_input(tmp_path)
    assert str(err.value) == f"{tmp_path}: a folder, not a file"
    res = run_cli("predict", "--run", tmp_path, "--input", tmp_path)  # the input is read before any model
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [f"taxoclass: error: {tmp_path}: a folder, not a file"]


def test_predict_help_says_what_path_answers(capsys):
    """Issue 35: `--path` was said to give the path's "mean score"; it gives its path_score, which is the mean only for a
    model trained with classifier.loss=bce (the path loss's is the path's probability)."""
    from taxoclass.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "mean score" not in text
    assert ("--path answer the best root-to-leaf path (what evaluation ranks first) with its classes' scores and its path_score "
            "(as above), and the runner-up path with its path_score, instead of top-k") in text
