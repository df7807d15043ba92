"""`taxoclass predict`: classify new texts with a finished run's model.

Input: one text per line, or JSON lines with a `text` / `token` field (and an
optional `doc_id` / `id`). Output: one JSON object per text with the top-k classes
and their scores, or (`path=True`) the best root-to-leaf path by mean probability, the
path evaluation ranks first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from taxoclass.data.readers import JSON_ID_FIELDS, JSON_TEXT_FIELDS, json_type
from taxoclass.data.textfile import read_lines
from taxoclass.errors import DataError


def read_texts(path: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for number, line in read_lines(path):
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(path, f"malformed JSON line: {err.msg} at column {err.colno}", number) from None
            text = next((row[f] for f in JSON_TEXT_FIELDS if f in row), None) if isinstance(row, dict) else None
            if text is not None and not isinstance(text, str):
                raise DataError(path, f"the text field must be a string, got {json_type(text)}", number)
            if not isinstance(text, str) or not text.strip():
                raise DataError(path, f"no non-empty text field (one of {', '.join(JSON_TEXT_FIELDS)})", number)
            ids.append(next((str(row[f]) for f in JSON_ID_FIELDS if f in row), str(len(ids))))
            texts.append(text.strip())
        else:
            ids.append(str(len(ids)))
            texts.append(line.strip())
    if not texts:
        raise DataError(path, "no texts to classify (the file is empty)")
    return ids, texts


def predict_file(run_dir: Path, input_path: Path, top_k: int = 3, path: bool = False) -> Iterator[dict]:
    import numpy as np

    from taxoclass.decoding import best_paths, rank
    from taxoclass.stages.classifier import predict_probs
    from taxoclass.stages.model_io import load_checkpoint
    from taxoclass.stages.text_encoder import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "run dir not found")
    ids, texts = read_texts(Path(input_path))  # read before loading the model: bad input fails fast
    if top_k < 1:
        raise DataError(None, f"--top-k must be at least 1, got {top_k}")
    device = resolve_device("auto")
    bundle, taxonomy = load_checkpoint(run_dir / "model.pt", device)
    probs = predict_probs(bundle.model, bundle.docs(texts), device, bundle.cfg.evaluation.batch_size)
    if path:  # the path evaluation ranks first: the best root-to-leaf path by mean probability
        for doc_id, row, nodes in zip(ids, probs, best_paths(probs, taxonomy)):
            yield {"doc_id": doc_id, "path": [taxonomy.output_id(c) for c in nodes],
                   "names": [taxonomy.names[c] for c in nodes], "scores": [round(float(row[c]), 6) for c in nodes]}
        return
    ranked, scores = rank(probs, top_k)
    for doc_id, r, s in zip(ids, ranked, scores):
        yield {"doc_id": doc_id, "classes": [taxonomy.output_id(int(c)) for c in r],
               "names": [taxonomy.names[int(c)] for c in r], "scores": [round(float(x), 6) for x in np.asarray(s)]}
