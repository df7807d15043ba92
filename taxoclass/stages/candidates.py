"""The top-down candidate search of core class mining (METHOD.md, stage 2 (a)).

Written once as a generator so that both users drive the same code:
- stage 2 answers its requests from a full similarity row;
- stage 1 with pruning answers them by scoring only the requested pairs, so
  a cross-encoder never scores a class the search does not visit.

Protocol: the generator yields a list of class indices whose similarity it
needs and is sent back `{class: sim}`; it returns `(candidates, path_scores)`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from taxoclass.data.taxonomy import ROOT, Taxonomy

SearchGen = Generator[list[int], dict[int, float], tuple[list[int], dict[int, float]]]


def _top(classes, sim: dict[int, float], k: int) -> list[int]:
    return sorted(classes, key=lambda c: (-sim[c], c))[:k]


def candidate_search(taxonomy: Taxonomy, root_width: int = 2) -> SearchGen:
    """From ROOT take `root_width` children; a queued class at depth d takes its
    d+2 most similar children; the pool at that depth keeps the (d+1)^2 with the
    highest path score ps(c) = max over visited parents p of ps(p) * sim(c)."""
    sim: dict[int, float] = {}
    top_level = taxonomy.children(ROOT)
    sim.update((yield list(top_level)))
    queued = _top(top_level, sim, root_width)
    path_score = {c: sim[c] for c in queued}  # ps(ROOT) = 1
    candidates = list(queued)
    seen = set(candidates)
    depth = 1
    while True:
        expandable = [q for q in queued if taxonomy.children(q)]
        if not expandable:
            break
        needed = sorted({c for q in expandable for c in taxonomy.children(q)} - sim.keys())
        if needed:
            sim.update((yield needed))
        chosen = {c for q in expandable for c in _top(taxonomy.children(q), sim, depth + 2)}
        pool = {}
        for c in chosen:
            pool[c] = max(path_score[p] * sim[c] for p in taxonomy.parents(c) if p in path_score)
        kept = sorted(pool, key=lambda c: (-pool[c], c))[: (depth + 1) ** 2]
        queued = []
        for c in kept:
            path_score[c] = pool[c]
            if c not in seen:  # in a DAG a class can be reached twice
                seen.add(c)
                queued.append(c)
                candidates.append(c)
        depth += 1
    return candidates, path_score


def confidence_neighbours(taxonomy: Taxonomy, c: int, over: str = "parents") -> list[int]:
    """The classes conf(D, c) compares against: Par(c) and Sib(c) (paper), or with
    `over="ancestors"` every ancestor and Sib(c)."""
    above = taxonomy.ancestors(c) if over == "ancestors" else {p for p in taxonomy.parents(c) if p != ROOT}
    return sorted(above) + taxonomy.siblings(c)


def run_candidate_search(taxonomy: Taxonomy, root_width: int, lookup: Callable[[list[int]], dict[int, float]]):
    """Drive one search to the end, answering each request with `lookup`."""
    gen = candidate_search(taxonomy, root_width)
    request = next(gen)
    while True:
        try:
            request = gen.send(lookup(request))
        except StopIteration as stop:
            return stop.value
