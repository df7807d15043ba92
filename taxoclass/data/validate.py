"""`taxoclass validate PATH`: load everything a dataset folder holds and print its counts.

Every check lives in the readers; this module reads the files no command would
otherwise touch (label files without a corpus, keyword files) and summarises, with the
labelled documents a corpus does not hold (the readers warn about them too).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from taxoclass.data.readers import Corpus, Dataset, keyword_files, load_dataset, read_doc2labels, read_keywords, unmatched_labels


def validate(path: str | Path, variant: str = "auto") -> str:
    ds = load_dataset(path, variant=variant)
    extra_lines = []
    for split in ("train", "test"):
        d2l = ds.root / split / "doc2labels.txt"
        if d2l.is_file():
            labels = read_doc2labels(d2l, ds.taxonomy)
            line = f"{split}/doc2labels.txt: {len(labels)} documents, {_labels_per_doc(labels.values())}"
            corpus = _labelled_corpus(ds, split)
            missing = unmatched_labels(corpus, labels) if corpus is not None else []
            if missing:  # the readers warned on stderr too
                line += f"; {len(missing)} not in {corpus.source}, ignored (first: '{missing[0]}')"
            extra_lines.append(line)
    for kw in keyword_files(ds.root):
        terms = read_keywords(kw, ds.taxonomy)
        extra_lines.append(f"{kw.relative_to(ds.root)}: {len(terms)} classes with keywords")
    return "\n".join(summary_lines(ds) + extra_lines)


def _labelled_corpus(ds: Dataset, split: str) -> Corpus | None:
    """The documents a TELEClass `split/doc2labels.txt` labels, when the folder holds them (a generated or
    JSON-lines dataset has its own labels; its doc2labels.txt belongs to a corpus the user may not have)."""
    if ds.variant != "teleclass":
        return None
    return ds.corpus if split == "train" else ds.test


def summary_lines(ds: Dataset) -> list[str]:
    tax = ds.taxonomy
    per_level = ", ".join(f"level {lv}: {n}" for lv, n in enumerate(tax.level_counts()))
    lines = [
        f"dataset {ds.name} at {ds.root} (layout: {ds.variant})",
        f"classes: {len(tax)} ({per_level}); leaves: {len(tax.leaves)}",
        f"edges: {len(tax.edges)}; multi-parent classes: {len(tax.multi_parent)}",
        f"corpus: {len(ds.corpus)} documents from {ds.corpus.source}",
    ]
    if ds.test is not None:
        same = " (the corpus itself: transductive)" if ds.transductive else ""
        lines.append(f"test: {len(ds.test)} documents{same}, {_labels_per_doc(ds.test_labels[d] for d in ds.test.doc_ids)}")
    else:
        lines.append("test: none (no test/corpus.txt)")
    return lines


def _labels_per_doc(label_lists) -> str:
    sizes = Counter(len(x) for x in label_lists)
    total = sum(sizes.values())
    if not total:
        return "no labels"
    mean = sum(k * v for k, v in sizes.items()) / total
    return f"labels per document: mean {mean:.2f}, min {min(sizes)}, max {max(sizes)}"
