"""Stage 1 as one plain job, and the one function that runs it wherever it runs.

Features:
- `SimilarityJob`: what stage 1 needs, as data: the config (`similarity`, and `mining` for a pruned
  search; a runtime reads its own section), the taxonomy and keywords, the corpus and test texts, the
  pipeline's vector store (`memo`), and where a runtime may keep a part-done stage 1 (`shards`, `fresh`);
- `run_similarity(job, embed, score)`: the one flow of both runtimes (`stages/similarity.py` holds the
  scorers): in this process, or with a runtime's workers embedding (`embed`) or scoring (`score`) the
  documents. The pipeline builds the job (`pipeline/build_jobs.py`) and stores what comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taxoclass.config import Config
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.stages.similarity import (
    PrunedSearch,
    SimilarityOutput,
    class_hypotheses,
    make_scorer,
    score_documents,
    scorer_type,
    scores_from_vectors,
)

# memo(texts, desc, compute) -> the texts' document vectors: the pipeline's store, which calls
# compute() only for texts whose vectors it does not hold
Memo = Callable[[list[str], str, Callable[[], np.ndarray]], np.ndarray]


@dataclass
class SimilarityJob:
    """Stage 1 as data: the config (`similarity`, `mining` for a pruned search; a runtime reads its own section),
    the taxonomy and keywords, the documents, and the pipeline's vector store (`memo`)."""

    cfg: Config
    taxonomy: Taxonomy
    keywords: dict[int, list[str]] | None
    corpus_texts: list[str]
    test_texts: list[str] | None
    device: object = "cpu"
    memo: Memo | None = None
    shards: Path | None = None  # where a runtime may keep a part-done stage 1 (Ray's shards)
    fresh: bool = False  # a forced stage 1: nothing part-done is reused
    run_dir: Path | None = None


# embed(texts, part) -> document vectors; score(texts, part) -> scores (documents x classes): a runtime's workers
Embed = Callable[[list[str], str], np.ndarray]


def run_similarity(job: SimilarityJob, embed: Embed | None = None, score: Embed | None = None,
                   scorer=None) -> SimilarityOutput:
    """Stage 1. A scorer that embeds documents (the bi-encoder) embeds each one once (through the job's `memo`, which
    keeps the vectors for the stages after it; `embed` where a runtime's workers embed them, else this process) and
    scores from the vectors; one that does not (the NLI cross-encoder) scores pairs (`score` where a runtime's workers
    score them)."""
    s, taxonomy = job.cfg.similarity, job.taxonomy
    embeds = scorer_type(s.backend).embeds_documents
    hyps = class_hypotheses(s, taxonomy, job.keywords)
    texts = {"corpus": job.corpus_texts, "test": job.test_texts}
    desc = {"corpus": "stage 1: corpus", "test": "stage 1: test set"}
    if not embeds and score is not None:
        corpus, test = score(job.corpus_texts, "corpus"), None if job.test_texts is None else score(job.test_texts, "test")
        passes = int((~np.isnan(corpus)).sum() + (0 if test is None else (~np.isnan(test)).sum()))
        return SimilarityOutput(corpus, test, passes)
    scorer = scorer or make_scorer(s, job.device)
    scorer.set_classes(hyps)
    if embeds:
        memo = job.memo or (lambda texts, desc, compute: compute())
        embed = embed or (lambda texts, part: scorer.vectors(texts, desc[part]))

        def vectors(part):
            return None if texts[part] is None else memo(texts[part], desc[part], lambda: embed(texts[part], part))

        corpus, test = vectors("corpus"), vectors("test")
        return scores_from_vectors(corpus, test, scorer.class_emb, taxonomy, s,
                                   biencoder_passes(hyps, job.corpus_texts, job.test_texts))
    search = PrunedSearch.of(job.cfg.mining)
    corpus = score_documents(scorer, job.corpus_texts, taxonomy, s, search, desc["corpus"])
    test = None if job.test_texts is None else score_documents(scorer, job.test_texts, taxonomy, s, search, desc["test"])
    return SimilarityOutput(corpus, test, scorer.encoder_passes)


def biencoder_passes(hyps: list[str], corpus_texts: list[str], test_texts: list[str] | None) -> int:
    """Stage 1's `encoder_passes` with the bi-encoder: each hypothesis and each document once, also when the
    vectors came from the cache or a Ray actor encoded the hypotheses again (a run's figure must not depend
    on either)."""
    return len(hyps) + len(corpus_texts) + len(test_texts or [])
