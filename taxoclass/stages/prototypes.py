"""Stage 1, enrichment: class prototypes refined from the corpus (ours, after X-Class).

The bundled bi-encoder scores a document against the embedding of its class *name* alone.
The corpus knows more: the documents whose best root-to-leaf path holds a class say how that
class is written about. Each round:

- scores = documents x prototypes (cosine), and each document's best path (`decoding.best_paths`);
- a class's members are the documents whose best path holds it; the more similar `share` of
  them (by their score for the class) give a centroid;
- prototype = normalize(weight * name vector + (1 - weight) * centroid); a class with no
  member keeps its name vector.

Label-free: no gold label is read. Measured on the dev halves (docs/quality.md): best-path
Example-F1 +4 to +7 % over the name vectors on relaclass, amazon-531 and dbpedia-298.
"""

from __future__ import annotations

import numpy as np

from taxoclass.data.taxonomy import Taxonomy
from taxoclass.decoding import best_paths, top_share


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def refine_prototypes(doc_emb: np.ndarray, name_emb: np.ndarray, taxonomy: Taxonomy, rounds: int, weight: float,
                      share: float) -> np.ndarray:
    """Prototypes (classes x dim, unit norm) after `rounds` refinements; the name vectors when rounds = 0."""
    names = _normalize(name_emb.astype(np.float32))
    protos = names.copy()
    for _ in range(rounds):
        scores = doc_emb @ protos.T
        members: list[list[int]] = [[] for _ in range(len(protos))]
        for i, path in enumerate(best_paths(scores, taxonomy)):
            for c in path:
                members[c].append(i)
        refined = protos.copy()
        for c, docs in enumerate(members):
            if not docs:
                continue
            docs = np.asarray(docs)
            top = top_share(docs, scores[docs, c], share)
            centroid = _normalize(doc_emb[top].mean(0))
            refined[c] = _normalize(weight * names[c] + (1 - weight) * centroid)
        protos = refined
    return protos
