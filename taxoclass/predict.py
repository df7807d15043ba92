"""`taxoclass predict` and its Python API: classify new texts with a finished run's model.

Input files, the format detected from the first non-blank line:
- JSON lines with a `text` / `token` field and an optional `doc_id` / `id` / `asin`
  (the readers' JSON-lines corpus, labels ignored);
- `doc_id<TAB>text` lines (the readers' `corpus.txt`, `generated_docs.txt`, also gzipped);
- plain text, one document per line, whose id is its line number.

Each record: the top-k classes with their scores, or (`path=True`) the best root-to-leaf
path by the model's own path score (the path evaluation ranks first) with its classes' scores,
its `path_score` and the runner-up path. What a score is depends on how the model was made
(`output_mode`: the path loss's distribution over paths, BCE's independent sigmoids, or an
untrained model's sigmoids; docs/run-dir.md, Predicting new texts).

Large inputs stream: the file is checked once (a bad line fails before the model loads) and
counted, then read again lazily, `CHUNK` texts at a time: each chunk is predicted, its records
handed on (printed) and forgotten, with a progress bar on stderr, so memory does not grow with
the number of texts. The steps are small functions (`scan_input`, `iter_texts`, `chunks`,
`Predictor.records`: one batch of ids and texts to its records) for a batch engine to call.

    model = taxoclass.load("runs/demo")
    model.predict(["Noise-cancelling earbuds"], top_k=5, path=True)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from taxoclass.data.readers import iter_corpus, parse_json_doc
from taxoclass.data.textfile import read_lines
from taxoclass.errors import DataError

FORMATS = {"jsonl": "JSON lines", "tsv": "id<TAB>text lines", "plain": "plain text lines"}
CHUNK = 512  # texts predicted, and their records handed on, at a time: the progress bar's step


@dataclass
class InputTexts:
    ids: list[str]
    texts: list[str]
    format: str  # a key of FORMATS


def detect_format(first_line: str) -> str:
    if first_line.lstrip().startswith("{"):
        return "jsonl"
    doc_id, sep, text = first_line.partition("\t")
    # an id is one token; a plain sentence with a stray tab has spaces before it
    return "tsv" if sep and doc_id.strip() and not any(ch.isspace() for ch in doc_id.strip()) and text.strip() else "plain"


def input_format(path: Path) -> str:
    first = next(iter(read_lines(Path(path))), None)
    if first is None:
        raise DataError(path, "no texts to classify (the file is empty)")
    return detect_format(first[1])


def iter_texts(path: Path, fmt: str) -> Iterator[tuple[str, str]]:
    """(doc_id, text) pairs of the file, read lazily; a bad line is a file:line DataError when reached."""
    path = Path(path)
    if fmt == "tsv":  # the very reader of the corpus files, so ids and texts round-trip
        yield from iter_corpus(path)
    elif fmt == "jsonl":
        for i, (number, line) in enumerate(read_lines(path)):
            _, doc_id, text = parse_json_doc(path, number, line, default_id=str(i))
            yield doc_id, text
    else:
        for number, line in read_lines(path):
            yield str(number), line.strip()


def scan_input(path: Path) -> tuple[str, int]:
    """(format, number of texts): every line is checked, none is kept."""
    fmt = input_format(path)
    return fmt, sum(1 for _ in iter_texts(path, fmt))


def read_texts(path: Path) -> InputTexts:
    """The whole file in memory (tests, small inputs); `iter_texts` streams it."""
    fmt = input_format(path)
    pairs = list(iter_texts(path, fmt))
    return InputTexts([i for i, _ in pairs], [t for _, t in pairs], fmt)


def chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class Predictor:
    """A finished run's model, loaded once: `taxoclass.load(run_dir)`."""

    def __init__(self, run_dir: str | Path, device: str = "auto"):
        from taxoclass.stages.model_io import load_checkpoint
        from taxoclass.stages.text_encoder import resolve_device

        self.run_dir = Path(run_dir)
        if not (self.run_dir / "model.pt").is_file():
            raise DataError(self.run_dir, "run dir not found" if not self.run_dir.is_dir() else "no model.pt (is the run finished?)")
        self.device = resolve_device(device)
        self.bundle, self.taxonomy = load_checkpoint(self.run_dir / "model.pt", self.device)

    def scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, path scores): texts x classes, texts x root-to-leaf paths, as the model reads them."""
        from taxoclass.stages.model import predict_scores

        # remember=False: a frozen encoder's embeddings of one chunk are never asked for again
        docs = self.bundle.docs(list(texts), remember=False)
        return predict_scores(self.bundle.model, docs, self.device, self.bundle.cfg.evaluation.batch_size)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return self.scores(texts)[0]

    def predict(self, texts: list[str], top_k: int = 3, path: bool = False, ids: list[str] | None = None,
                progress: bool = False) -> list[dict]:
        """One record per text, as `taxoclass predict` prints them; ids default to "1", "2", ...
        (a plain input file's line numbers)."""
        check_top_k(top_k)
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts, not one string")
        ids = [str(i) for i in range(1, len(texts) + 1)] if ids is None else [str(i) for i in ids]
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        return list(self.stream(zip(ids, texts), top_k, path, total=len(texts) if progress else None))

    def stream(self, pairs: Iterable[tuple[str, str]], top_k: int = 3, path: bool = False,
               total: int | None = None) -> Iterator[dict]:
        """Records of (doc_id, text) pairs, `CHUNK` at a time (the same chunks, so the same numbers, as
        `predict`); with `total`, a progress bar on stderr."""
        from tqdm.auto import tqdm

        with tqdm(total=total, disable=total is None, unit="text", desc="predict", dynamic_ncols=True) as bar:
            for chunk in chunks(pairs, CHUNK):
                yield from self.records([i for i, _ in chunk], [t for _, t in chunk], top_k, path)
                bar.update(len(chunk))

    def records(self, ids: list[str], texts: list[str], top_k: int = 3, path: bool = False) -> list[dict]:
        """One batch of texts to its records: the unit a batch engine maps over."""
        if not texts:
            return []
        probs, by_path = self.scores(texts)
        return self._paths(ids, probs, by_path) if path else self._top_k(ids, probs, top_k)

    def _named(self, classes) -> dict:
        return {"names": [self.taxonomy.names[int(c)] for c in classes]}

    def _top_k(self, ids: list[str], probs: np.ndarray, top_k: int) -> list[dict]:
        from taxoclass.decoding import rank

        ranked, scores = rank(probs, top_k)
        return [{"doc_id": doc_id, "classes": [self.taxonomy.output_id(int(c)) for c in r], **self._named(r),
                 "scores": [round(float(x), 6) for x in s]} for doc_id, r, s in zip(ids, ranked, scores)]

    def _paths(self, ids: list[str], probs: np.ndarray, by_path: np.ndarray) -> list[dict]:
        """The best root-to-leaf path by the model's own path score (the decoder's choice) and the runner-up."""
        from taxoclass.decoding import root_to_leaf_paths

        paths = root_to_leaf_paths(self.taxonomy)
        out = []
        for i, doc_id in enumerate(ids):
            order = np.argsort(-by_path[i], kind="stable")
            best, runner = paths[order[0]], (paths[order[1]] if len(order) > 1 else None)
            out.append({"doc_id": doc_id, "path": [self.taxonomy.output_id(c) for c in best], **self._named(best),
                        "scores": [round(float(probs[i, c]), 6) for c in best],
                        "path_score": round(float(by_path[i, order[0]]), 6),
                        "runner_up": None if runner is None else {
                            "path": [self.taxonomy.output_id(c) for c in runner], **self._named(runner),
                            "path_score": round(float(by_path[i, order[1]]), 6)}})
        return out


def check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise DataError(None, f"--top-k must be at least 1, got {top_k}")


def load(run_dir: str | Path, device: str = "auto") -> Predictor:
    """The Python API: `taxoclass.load(run_dir).predict(texts, top_k=5, path=True)`."""
    return Predictor(run_dir, device)


def predict_file(run_dir: Path, input_path: Path, top_k: int = 3, path: bool = False,
                 progress: bool = True) -> tuple[str, int, Iterator[dict]]:
    """(the detected input format, the number of texts, the records as they are computed). The input is
    checked before the model loads: bad input fails fast, and a model that cannot load fails before
    anything is printed."""
    if not Path(run_dir).is_dir():
        raise DataError(run_dir, "run dir not found")
    fmt, count = scan_input(Path(input_path))
    check_top_k(top_k)
    predictor = Predictor(run_dir)
    return fmt, count, predictor.stream(iter_texts(Path(input_path), fmt), top_k, path, total=count if progress else None)
