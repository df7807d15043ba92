"""The documents a run works on, read once from the dataset.

Features:
- `prepare_inputs(cfg)`: the dataset's taxonomy, corpus and test set (`Docs`: ids, texts, gold
  class indices when known), cut to `max_docs`, with the unlabelled test texts joining the corpus
  when `transductive`, and the keyword files `similarity.class_text` asks for;
- `content_digest`: a checksum of everything read, the root of every stage's cache key;
- `Inputs.describe()`: the counts the stages use, for the run's first line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from taxoclass.config import Config
from taxoclass.data.readers import Dataset, keyword_files, load_dataset, read_keywords
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.errors import DataError


@dataclass
class Docs:
    ids: list[str]
    texts: list[str]
    gold: list[list[int]] | None  # class indices, when known


@dataclass
class Inputs:
    dataset: Dataset
    corpus: Docs
    test: Docs | None
    keywords: dict[int, list[str]] | None

    @property
    def taxonomy(self) -> Taxonomy:
        return self.dataset.taxonomy

    @property
    def test_is_corpus(self) -> bool:
        """The transductive datasets: the test documents are the corpus (stage 1 scores them once)."""
        return self.test is not None and self.corpus.ids == self.test.ids and self.corpus.texts == self.test.texts

    def describe(self) -> str:
        """The documents the stages use (after `max_docs`), not only what the dataset holds."""
        ds = self.dataset

        def count(used: int, total: int, what: str) -> str:
            return f"{used} of {total} {what}" if used < total else f"{used} {what}"

        test = "no test set" if self.test is None else count(len(self.test.ids), len(ds.test), "test docs")
        return f"{ds.name} ({ds.variant}): {len(self.taxonomy)} classes, {count(len(self.corpus.ids), len(ds.corpus), 'corpus docs')}, {test}"


def prepare_inputs(cfg: Config) -> Inputs:
    ds = load_dataset(cfg.data, cfg.data_variant, cfg.test_corpus or None)
    c = ds.corpus
    gold = [ds.corpus_labels[d] for d in c.doc_ids] if ds.corpus_labels and all(d in ds.corpus_labels for d in c.doc_ids) else None
    corpus = Docs(list(c.doc_ids), list(c.texts), gold)
    test = None
    if ds.test is not None:
        test = Docs(list(ds.test.doc_ids), list(ds.test.texts), [ds.test_labels[d] for d in ds.test.doc_ids])
    if cfg.max_docs:
        corpus = Docs(corpus.ids[: cfg.max_docs], corpus.texts[: cfg.max_docs], corpus.gold[: cfg.max_docs] if corpus.gold else None)
        if test is not None:
            test = Docs(test.ids[: cfg.max_docs], test.texts[: cfg.max_docs], test.gold[: cfg.max_docs])
    if cfg.transductive and test is not None and not ds.transductive:
        # the unlabelled test texts join the training corpus (their labels are never used)
        corpus = Docs(corpus.ids + [f"test:{d}" for d in test.ids], corpus.texts + test.texts,
                      (corpus.gold + test.gold) if corpus.gold else None)
    keywords = None
    if cfg.similarity.class_text != "name":
        path = ds.root / "train" / f"{cfg.similarity.class_text}.txt"
        if path not in keyword_files(ds.root):
            raise DataError(path, "file not found (needed by similarity.class_text)")
        keywords = read_keywords(path, ds.taxonomy)
    return Inputs(ds, corpus, test, keywords)


def digest(*parts) -> str:
    """16 hex digits of the SHA-256 of `parts` as JSON: cache keys and checksums."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def content_digest(inputs: Inputs) -> str:
    """A checksum of everything read from the dataset: taxonomy, corpus, test texts and gold, keywords."""
    tax = inputs.taxonomy
    test = (inputs.test.ids, inputs.test.texts, inputs.test.gold) if inputs.test else None
    return digest(tax.ids, tax.names, tax.edges, inputs.corpus.ids, inputs.corpus.texts, test, inputs.keywords)
