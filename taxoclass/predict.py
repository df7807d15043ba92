"""`taxoclass predict` and its Python API: classify new texts with a finished run's model.

Input files, the format detected from the first non-blank line:
- JSON lines with a `text` / `token` field and an optional `doc_id` / `id` / `asin`
  (the readers' JSON-lines corpus, labels ignored);
- `doc_id<TAB>text` lines (the readers' `corpus.txt`, `generated_docs.txt`, also gzipped);
- plain text, one document per line, whose id is its line number.

Each record: the top-k classes with their scores, or (`path=True`) the best root-to-leaf
path by mean probability (the path evaluation ranks first) with its own score and the
runner-up path. Scores are independent per-class sigmoid probabilities, not a distribution.

    model = taxoclass.load("runs/demo")
    model.predict(["Noise-cancelling earbuds"], top_k=5, path=True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taxoclass.data.readers import parse_json_doc, read_corpus
from taxoclass.data.textfile import read_lines
from taxoclass.errors import DataError

FORMATS = {"jsonl": "JSON lines", "tsv": "id<TAB>text lines", "plain": "plain text lines"}


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


def read_texts(path: Path) -> InputTexts:
    path = Path(path)
    lines = list(read_lines(path))
    if not lines:
        raise DataError(path, "no texts to classify (the file is empty)")
    fmt = detect_format(lines[0][1])
    if fmt == "tsv":  # the very reader of the corpus files, so ids and texts round-trip
        corpus = read_corpus(path)
        return InputTexts(corpus.doc_ids, corpus.texts, fmt)
    if fmt == "jsonl":
        docs = [parse_json_doc(path, number, line, default_id=str(i)) for i, (number, line) in enumerate(lines)]
        return InputTexts([d[1] for d in docs], [d[2] for d in docs], fmt)
    return InputTexts([str(number) for number, _ in lines], [line.strip() for _, line in lines], fmt)


def path_scores(probs: np.ndarray, paths: list[list[int]]) -> np.ndarray:
    """(documents, paths): each root-to-leaf path's mean probability, the path decoder's criterion."""
    return np.stack([probs[:, p].mean(axis=1) for p in paths], axis=1)


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

    def probabilities(self, texts: list[str]) -> np.ndarray:
        from taxoclass.stages.model import predict_probs

        return predict_probs(self.bundle.model, self.bundle.docs(list(texts)), self.device, self.bundle.cfg.evaluation.batch_size)

    def predict(self, texts: list[str], top_k: int = 3, path: bool = False, ids: list[str] | None = None) -> list[dict]:
        """One record per text, as `taxoclass predict` prints them; ids default to "1", "2", ...
        (a plain input file's line numbers)."""
        check_top_k(top_k)
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts, not one string")
        ids = [str(i) for i in range(1, len(texts) + 1)] if ids is None else [str(i) for i in ids]
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if not texts:
            return []
        probs = self.probabilities(texts)
        return self._paths(ids, probs) if path else self._top_k(ids, probs, top_k)

    def _named(self, classes) -> dict:
        return {"names": [self.taxonomy.names[int(c)] for c in classes]}

    def _top_k(self, ids: list[str], probs: np.ndarray, top_k: int) -> list[dict]:
        from taxoclass.decoding import rank

        ranked, scores = rank(probs, top_k)
        return [{"doc_id": doc_id, "classes": [self.taxonomy.output_id(int(c)) for c in r], **self._named(r),
                 "scores": [round(float(x), 6) for x in s]} for doc_id, r, s in zip(ids, ranked, scores)]

    def _paths(self, ids: list[str], probs: np.ndarray) -> list[dict]:
        from taxoclass.decoding import best_paths, root_to_leaf_paths

        paths = root_to_leaf_paths(self.taxonomy)
        by_path = path_scores(probs, paths)
        out = []
        for i, (doc_id, best) in enumerate(zip(ids, best_paths(probs, self.taxonomy))):
            order = np.argsort(-by_path[i], kind="stable")
            runner = next((paths[j] for j in order if paths[j] != best), None)
            out.append({"doc_id": doc_id, "path": [self.taxonomy.output_id(c) for c in best], **self._named(best),
                        "scores": [round(float(probs[i, c]), 6) for c in best],
                        "path_score": round(float(probs[i, best].mean()), 6),
                        "runner_up": None if runner is None else {
                            "path": [self.taxonomy.output_id(c) for c in runner], **self._named(runner),
                            "path_score": round(float(probs[i, runner].mean()), 6)}})
        return out


def check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise DataError(None, f"--top-k must be at least 1, got {top_k}")


def load(run_dir: str | Path, device: str = "auto") -> Predictor:
    """The Python API: `taxoclass.load(run_dir).predict(texts, top_k=5, path=True)`."""
    return Predictor(run_dir, device)


def predict_file(run_dir: Path, input_path: Path, top_k: int = 3, path: bool = False) -> tuple[str, list[dict]]:
    """(the detected input format, the records). The input is read before the model loads: bad input fails fast."""
    if not Path(run_dir).is_dir():
        raise DataError(run_dir, "run dir not found")
    inputs = read_texts(Path(input_path))
    check_top_k(top_k)
    return inputs.format, Predictor(run_dir).predict(inputs.texts, top_k=top_k, path=path, ids=inputs.ids)
