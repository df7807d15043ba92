"""Dataset readers for every format this field uses, with file:line errors.

Features:
- a TELEClass folder as is: `labels.txt`, `label_hierarchy.txt`, `train/corpus.txt`
  or `train/corpus.txt.gz`, optional `train/doc2labels.txt`, `test/corpus.txt` +
  `test/doc2labels.txt`;
- the TELEClass generated documents (`train/generated_docs.txt` +
  `train/generated_doc2label.json`, gold = its "with ancestors" list);
- JSON lines with a `token` or `text` field and `labels` (RelaClass), which is
  both the unlabelled corpus and the test set;
- keyword files (`class_name:term,term`);
- `data=demo`, the built-in demo dataset shipped with the package.

`load_dataset(path)` picks the layout from what the folder holds (`variant=auto`);
`variant=teleclass|generated|jsonl` forces one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from taxoclass.data.taxonomy import Taxonomy
from taxoclass.data.textfile import read_lines, resolve_maybe_gz, split_tab
from taxoclass.errors import DataError, warn

DEMO_DIR = Path(__file__).resolve().parent / "demo"
VARIANTS = ("auto", "teleclass", "generated", "jsonl")
JSON_TEXT_FIELDS = ("token", "text")
JSON_ID_FIELDS = ("doc_id", "id", "asin")


@dataclass
class Corpus:
    doc_ids: list[str]
    texts: list[str]
    source: str  # the file it came from, for messages

    def __len__(self) -> int:
        return len(self.doc_ids)


@dataclass
class Dataset:
    name: str
    root: Path
    variant: str
    taxonomy: Taxonomy
    corpus: Corpus  # the unlabelled training corpus
    test: Corpus | None = None
    test_labels: dict[str, list[int]] | None = None  # doc_id -> class indices
    corpus_labels: dict[str, list[int]] | None = None  # gold for the corpus, never used in training
    transductive: bool = False  # corpus and test set are the same documents

    def describe(self) -> str:
        return f"{self.name} ({self.variant}): {len(self.taxonomy)} classes, {len(self.corpus)} corpus docs, " + (
            f"{len(self.test)} test docs" if self.test is not None else "no test set"
        )


def resolve_data_path(path: str | Path) -> Path:
    if str(path) == "demo":
        return DEMO_DIR
    return Path(path).expanduser()


def load_dataset(path: str | Path, variant: str = "auto", test_corpus: str | Path | None = None) -> Dataset:
    root = resolve_data_path(path)
    if variant not in VARIANTS:
        raise DataError(root, f"unknown dataset variant '{variant}' (choose from {', '.join(VARIANTS)})")
    if not root.exists():
        raise DataError(root, "no such file or folder")
    json_file = None
    if root.is_file():  # a JSON-lines file; the taxonomy sits beside it
        _check_json_lines_name(root)
        json_file, root = root, root.parent
        variant = "jsonl"
    taxonomy = Taxonomy.load(root)
    if variant == "auto":
        variant = _detect_variant(root)
    name = "demo" if root == DEMO_DIR else root.name
    if variant == "teleclass":
        ds = _load_teleclass(root, name, taxonomy)
    elif variant == "generated":
        docs = root / "train" / "generated_docs.txt"
        corpus = read_corpus(docs)
        labels = read_generated_labels(root / "train" / "generated_doc2label.json", taxonomy)
        _check_labelled(corpus, labels, root / "train" / "generated_doc2label.json")
        ds = Dataset(name, root, variant, taxonomy, corpus, corpus, labels, labels, transductive=True)
    else:
        json_file = json_file or _single_json_file(root)
        corpus, labels = read_jsonl(json_file, taxonomy)
        ds = Dataset(name, root, "jsonl", taxonomy, corpus, corpus, labels, labels, transductive=True)
    if test_corpus:
        _replace_test_set(ds, Path(test_corpus))
    return ds


def _check_json_lines_name(path: Path) -> None:
    """A file given as the dataset must be its JSON-lines file: `labels.txt` or a corpus file read as JSON
    lines would be reported as a malformed JSON line, which sends the user to the wrong problem."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if not name.endswith((".json", ".jsonl")):
        raise DataError(path, "not a dataset: give the dataset's folder (holding labels.txt, label_hierarchy.txt, "
                              "train/corpus.txt) or its JSON-lines file (*.json, *.jsonl)")


def _detect_variant(root: Path) -> str:
    if resolve_maybe_gz(root / "train" / "corpus.txt"):
        return "teleclass"
    if (root / "train" / "generated_docs.txt").is_file():
        return "generated"
    if _json_files(root):
        return "jsonl"
    raise DataError(
        root,
        "no corpus found: expected train/corpus.txt(.gz), train/generated_docs.txt or one JSON-lines file (*.json, *.jsonl)",
    )


def _json_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl"))


def _single_json_file(root: Path) -> Path:
    files = _json_files(root)
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise DataError(root, f"expected exactly one JSON-lines file, found {found}; pass the file itself as data=")
    return files[0]


def _load_teleclass(root: Path, name: str, taxonomy: Taxonomy) -> Dataset:
    corpus_path = resolve_maybe_gz(root / "train" / "corpus.txt")
    if corpus_path is None:
        raise DataError(root / "train" / "corpus.txt", "file not found (nor corpus.txt.gz)")
    corpus = read_corpus(corpus_path)
    corpus_labels = None
    train_d2l = root / "train" / "doc2labels.txt"
    if train_d2l.is_file():
        corpus_labels = read_doc2labels(train_d2l, taxonomy)
        warn_unmatched(corpus, corpus_labels, train_d2l)
    test = test_labels = None
    test_path = resolve_maybe_gz(root / "test" / "corpus.txt")
    if test_path is not None:
        test = read_corpus(test_path)
        test_labels = read_doc2labels(root / "test" / "doc2labels.txt", taxonomy)
        _check_labelled(test, test_labels, root / "test" / "doc2labels.txt")
        warn_unmatched(test, test_labels, root / "test" / "doc2labels.txt")
    return Dataset(name, root, "teleclass", taxonomy, corpus, test, test_labels, corpus_labels)


def _replace_test_set(ds: Dataset, path: Path) -> None:
    """`test_corpus=FILE`: evaluate on FILE's documents, gold from test/doc2labels.txt."""
    ds.test = read_corpus(path)
    labels_path = ds.root / "test" / "doc2labels.txt"
    ds.test_labels = read_doc2labels(labels_path, ds.taxonomy)
    _check_labelled(ds.test, ds.test_labels, labels_path)
    ds.transductive = False


def _check_labelled(corpus: Corpus, labels: dict[str, list[int]], labels_path: Path) -> None:
    for doc_id in corpus.doc_ids:
        if doc_id not in labels:
            raise DataError(labels_path, f"no labels for document '{doc_id}' of {corpus.source}")


def unmatched_labels(corpus: Corpus, labels: dict[str, list[int]]) -> list[str]:
    """The labelled document ids that are not in `corpus`, in the labels file's order: nothing uses their lines."""
    known = set(corpus.doc_ids)
    return [doc_id for doc_id in labels if doc_id not in known]


def warn_unmatched(corpus: Corpus, labels: dict[str, list[int]], labels_path: Path) -> list[str]:
    """A labels line for a document the corpus does not hold is ignored: say so, once, with the count and the first id."""
    missing = unmatched_labels(corpus, labels)
    if missing:
        warn(f"{labels_path}: {len(missing)} labelled documents are not in {corpus.source} and are ignored "
             f"(first: '{missing[0]}')")
    return missing


def read_corpus(path: Path) -> Corpus:
    """`doc_id<TAB>text` lines; duplicate ids and empty texts are errors."""
    path = Path(path)
    ids, texts = [], []
    for doc_id, text in iter_corpus(path):
        ids.append(doc_id)
        texts.append(text)
    if not ids:
        raise DataError(path, "no documents")
    return Corpus(ids, texts, str(path))


def iter_corpus(path: Path) -> Iterator[tuple[str, str]]:
    """`read_corpus` one document at a time, (doc_id, text), with the same checks: only the ids are kept."""
    path = Path(path)
    seen: dict[str, int] = {}
    for number, line in read_lines(path):
        doc_id, sep, text = line.partition("\t")
        doc_id = doc_id.strip()
        if not sep:
            raise DataError(path, "expected 'doc_id<TAB>text'", number)
        if not doc_id:
            raise DataError(path, "empty document id", number)
        if not text.strip():
            raise DataError(path, f"empty text for document '{doc_id}'", number)
        if doc_id in seen:
            raise DataError(path, f"duplicate document id '{doc_id}' (first on line {seen[doc_id]})", number)
        seen[doc_id] = number
        yield doc_id, text.strip()


def _class_indices(raw_ids, taxonomy: Taxonomy, path: Path, number: int | None) -> list[int]:
    out = []
    for raw in raw_ids:
        cid = str(raw).strip()
        if cid not in taxonomy.index:
            raise DataError(path, f"label names unknown class id '{cid}'", number)
        out.append(taxonomy.index[cid])
    if not out:
        raise DataError(path, "document has no labels", number)
    return sorted(set(out))


def read_doc2labels(path: Path, taxonomy: Taxonomy) -> dict[str, list[int]]:
    """`doc_id<TAB>id,id,id` lines -> {doc_id: sorted class indices}."""
    out, seen = {}, {}
    for number, line in read_lines(path):
        doc_id, raw = split_tab(path, number, line, 2, "'doc_id<TAB>id,id,id'")
        if doc_id in seen:
            raise DataError(path, f"duplicate document id '{doc_id}' (first on line {seen[doc_id]})", number)
        seen[doc_id] = number
        out[doc_id] = _class_indices([x for x in raw.split(",") if x.strip()], taxonomy, path, number)
    return out


def read_generated_labels(path: Path, taxonomy: Taxonomy) -> dict[str, list[int]]:
    """TELEClass `generated_doc2label.json`: gold = the "with ancestors" list."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(path, f"bytes that are not UTF-8 at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise DataError(path, f"malformed JSON: {err.msg}", err.lineno) from None
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object {doc_id: {...}}")
    out = {}
    for doc_id, entry in data.items():
        if not isinstance(entry, dict) or "with ancestors" not in entry:
            raise DataError(path, f"document '{doc_id}' has no \"with ancestors\" list")
        out[str(doc_id)] = _class_indices(entry["with ancestors"], taxonomy, path, None)
    return out


def read_jsonl(path: Path, taxonomy: Taxonomy) -> tuple[Corpus, dict[str, list[int]]]:
    """JSON lines with a text field (`token` or `text`) and `labels` (class ids)."""
    path = Path(path)
    ids, texts, labels, seen = [], [], {}, {}
    for number, line in read_lines(path):
        row, doc_id, text = parse_json_doc(path, number, line, default_id=str(len(ids)))
        if doc_id in seen:
            raise DataError(path, f"duplicate document id '{doc_id}' (first on line {seen[doc_id]})", number)
        seen[doc_id] = number
        raw_labels = row.get("labels")
        if not isinstance(raw_labels, list):
            raise DataError(path, "no 'labels' list", number)
        labels[doc_id] = _class_indices(raw_labels, taxonomy, path, number)
        ids.append(doc_id)
        texts.append(text)
    if not ids:
        raise DataError(path, "no documents")
    return Corpus(ids, texts, str(path)), labels


def parse_json_doc(path: Path, number: int, line: str, default_id: str) -> tuple[dict, str, str]:
    """One JSON-lines document: (the row, its id or `default_id`, its stripped text). Shared with `predict`."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(path, f"malformed JSON line: {err.msg} at column {err.colno}", number) from None
    if not isinstance(row, dict):
        raise DataError(path, "expected a JSON object per line", number)
    text = next((row[f] for f in JSON_TEXT_FIELDS if f in row), None)
    if text is None:
        raise DataError(path, f"no text field (one of {', '.join(JSON_TEXT_FIELDS)})", number)
    if not isinstance(text, str):
        raise DataError(path, f"the text field must be a string, got {json_type(text)}", number)
    if not text.strip():
        raise DataError(path, "empty text", number)
    doc_id = next((str(row[f]) for f in JSON_ID_FIELDS if f in row), default_id)
    return row, doc_id, text.strip()


def json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_keywords(path: Path, taxonomy: Taxonomy) -> dict[int, list[str]]:
    """`class_name:term,term` lines -> {class index: [terms with '_' as spaces]}."""
    by_name = {n: i for i, n in enumerate(taxonomy.names)}
    out = {}
    for number, line in read_lines(path):
        name, sep, terms = line.partition(":")
        if not sep:
            raise DataError(path, "expected 'class_name:term,term'", number)
        name = name.strip()
        if name not in by_name:
            raise DataError(path, f"unknown class name '{name}'", number)
        out[by_name[name]] = [t.strip().replace("_", " ") for t in terms.split(",") if t.strip()]
    return out


def keyword_files(root: Path) -> list[Path]:
    return [p for p in (root / "train" / "llm_enrichment.txt", root / "train" / "enrichment.txt") if p.is_file()]
