"""Stage 1: document-class similarity (METHOD.md, stage 1).

Features:
- one scorer interface (`score_pairs`) with two backends:
  - `BiEncoderScorer` (default): cosine between the document and the hypothesis
    made from the class name; N + C encoder passes, class hypotheses encoded once,
    documents once, in batches sized by a token budget (`similarity.batch_tokens`), on CUDA
    under autocast (`similarity.autocast`, bf16 by default) with tokenization ahead of the model;
  - `NLIScorer`: any Hugging Face sequence-classification NLI model; the
    entailment index is read from `id2label`; `softmax3` (3-way entailment
    probability) or `entail_vs_contra` (the zero-shot pipeline's normalisation);
- top-down pruning for the cross-encoder: only the classes the stage-2 search
  visits, plus their parents and siblings (for the confidence), are scored;
  `similarity.pruning=false` scores all pairs. The bi-encoder always fills the
  whole matrix: its cost is N + C passes whatever the number of pairs;
- output: a float32 matrix (documents x classes), NaN where a pair was not scored;
- takes its own config section (`SimilarityConfig`), and from stage 2 only what the pruned
  search borrows (`PrunedSearch`: the root's width, what a confidence compares with);
- `run_similarity(SimilarityJob)`: the stage as data, the one flow of both runtimes: in this process,
  or with a runtime's workers embedding (`embed`) or scoring (`score`) the documents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from taxoclass.config import Config, MiningConfig, SimilarityConfig
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.stages.amp import amp_context, check_amp, resolve_amp
from taxoclass.stages.candidates import candidate_search, confidence_neighbours
from taxoclass.stages.text_encoder import encode_texts, length_sorted_batches, load_encoder, load_pretrained

SEARCH_CHUNK = 64  # documents whose searches advance together (one scoring call per round)


@dataclass(frozen=True)
class PrunedSearch:
    """What a pruned (NLI) stage 1 borrows from stage 2's search: it scores what that search visits."""

    root_width: int = 2
    confidence_over: str = "parents"

    @classmethod
    def of(cls, mining: MiningConfig) -> PrunedSearch:
        return cls(mining.root_width, mining.confidence_over)


def class_texts(taxonomy: Taxonomy, mode: str, keywords: dict[int, list[str]] | None, max_keywords: int = 5) -> list[str]:
    """The text each class contributes to its hypothesis: its readable name, optionally with keywords."""
    names = taxonomy.readable_names
    if mode == "name" or not keywords:
        return names
    return [f"{n} ({', '.join(keywords[i][:max_keywords])})" if keywords.get(i) else n for i, n in enumerate(names)]


def hypotheses(template: str, texts: list[str]) -> list[str]:
    return [template.format(t) for t in texts]


VECTOR_DTYPE = np.float16  # stored document vectors: half the disk and memory, cosines moved by < 1e-3


def unit(vectors: np.ndarray | None) -> np.ndarray | None:
    """Rows scaled to unit length, in float32 (a cosine is then a dot product)."""
    if vectors is None:
        return None
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


class BiEncoderScorer:
    """Cosine similarity of mean-pooled, normalised sentence embeddings."""

    full_matrix = True

    def __init__(self, model_name: str, max_length: int, batch_size: int, device, lowercase: bool = True,
                 batch_tokens: int = 0, amp: str = "auto"):
        check_amp(amp, device, "similarity.autocast")
        self.model, self.tokenizer = load_encoder(model_name, key="similarity.model")
        self.model.to(device)
        self.max_length, self.batch_size, self.device, self.lowercase = max_length, batch_size, device, lowercase
        self.batch_tokens, self.amp = batch_tokens, amp
        self.encoder_passes = 0

    def _encode(self, texts, desc=None, normalize: bool = True) -> np.ndarray:
        texts = [t.lower() for t in texts] if self.lowercase else list(texts)
        self.encoder_passes += len(texts)
        return encode_texts(self.model, self.tokenizer, texts, max_length=self.max_length, batch_size=self.batch_size,
                            pooling="mean", device=self.device, normalize=normalize, desc=desc,
                            batch_tokens=self.batch_tokens, amp=self.amp)

    def set_classes(self, hypothesis_texts: list[str]) -> None:
        self.class_emb = self._encode(hypothesis_texts)

    def vectors(self, docs: list[str], desc: str | None = "stage 1: encoding documents") -> np.ndarray:
        """The documents' mean-pooled vectors, not normalised, as float16 (`VECTOR_DTYPE`): what is stored
        and shared with stage 3's frozen encoder, the evaluation and the search objectives."""
        return self._encode(docs, desc=desc, normalize=False).astype(VECTOR_DTYPE)

    def score_all(self, docs: list[str], desc: str | None = "stage 1: encoding documents") -> np.ndarray:
        """Cosines of documents that are not kept (the pipeline scores from `vectors`)."""
        return self._encode(docs, desc) @ self.class_emb.T


class NLIScorer:
    """P(document entails hypothesis) from a sequence-classification NLI model."""

    full_matrix = False

    def __init__(self, model_name: str, max_length: int, batch_size: int, device, normalization: str = "softmax3",
                 lowercase: bool = True, amp: str = "auto"):
        from transformers import AutoModelForSequenceClassification

        check_amp(amp, device, "similarity.autocast")
        self.amp = resolve_amp(amp, device)
        self.model, self.tokenizer = load_pretrained(model_name, "similarity.model", AutoModelForSequenceClassification)
        self.model.to(device).eval()
        self.entail, self.contra = nli_label_indices(self.model.config.id2label)
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.normalization, self.lowercase = normalization, lowercase
        self.encoder_passes = 0

    def set_classes(self, hypothesis_texts: list[str]) -> None:
        self.hypotheses = hypothesis_texts

    @torch.no_grad()
    def score_pairs(self, docs: list[str], pairs: list[tuple[int, int]]) -> np.ndarray:
        """Entailment probability for each (doc index, class index) pair."""
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        premises = [docs[d].lower() if self.lowercase else docs[d] for d, _ in pairs]
        for idx in length_sorted_batches([len(p) for p in premises], self.batch_size):
            enc = self.tokenizer([premises[i] for i in idx], [self.hypotheses[pairs[i][1]] for i in idx], padding=True,
                                 truncation="only_first", max_length=self.max_length, return_tensors="pt").to(self.device)
            with amp_context(self.amp, self.device):
                logits = self.model(**enc).logits.float()
            out[idx] = entailment_probability(logits, self.entail, self.contra, self.normalization).cpu().numpy()
        self.encoder_passes += len(pairs)
        return out

    def score_all(self, docs: list[str], desc: str | None = "stage 1: all pairs") -> np.ndarray:
        c = len(self.hypotheses)
        pairs = [(d, j) for d in range(len(docs)) for j in range(c)]
        return self.score_pairs(docs, pairs).reshape(len(docs), c)


def nli_label_indices(id2label: dict) -> tuple[int, int]:
    """(entailment, contradiction) indices from a model's `id2label`."""
    labels = {int(i): str(name).lower() for i, name in id2label.items()}
    entail = [i for i, n in labels.items() if n.startswith("entail")]
    contra = [i for i, n in labels.items() if n.startswith("contradict")]
    if len(entail) != 1 or len(contra) != 1:
        from taxoclass.errors import ConfigError

        raise ConfigError("similarity.model", f"not an NLI model: id2label {dict(labels)} has no single entailment/contradiction label")
    return entail[0], contra[0]


def entailment_probability(logits: torch.Tensor, entail: int, contra: int, normalization: str) -> torch.Tensor:
    if normalization == "softmax3":
        return logits.softmax(-1)[:, entail]
    pair = torch.stack([logits[:, contra], logits[:, entail]], dim=-1)
    return pair.softmax(-1)[:, 1]


def make_scorer(s: SimilarityConfig, device):
    if s.backend == "nli":
        return NLIScorer(s.model, s.max_length, s.batch_size, device, s.nli_normalization, s.lowercase, s.autocast)
    return BiEncoderScorer(s.model, s.max_length, s.batch_size, device, s.lowercase, s.batch_tokens, s.autocast)


def score_pruned(scorer: NLIScorer, docs: list[str], taxonomy: Taxonomy, root_width: int, progress: bool = True,
                 confidence_over: str = "parents") -> np.ndarray:
    """Score only what the top-down search of each document asks for, plus what the confidence
    of its candidates compares with (Par/Sib, or with `confidence_over="ancestors"` Anc/Sib).

    Searches of SEARCH_CHUNK documents advance in lockstep so that each round is one batched scoring call.
    """
    from tqdm.auto import tqdm

    sim = np.full((len(docs), len(taxonomy)), np.nan, dtype=np.float32)
    bar = tqdm(total=len(docs), desc="stage 1: pruned scoring", unit="doc", disable=not progress, leave=False)
    for start in range(0, len(docs), SEARCH_CHUNK):
        chunk = list(range(start, min(start + SEARCH_CHUNK, len(docs))))
        gens = {d: candidate_search(taxonomy, root_width) for d in chunk}
        requests = {d: next(g) for d, g in gens.items()}
        candidates = {}
        while requests:
            _score_into(scorer, docs, sim, [(d, c) for d, req in requests.items() for c in req if np.isnan(sim[d, c])])
            nxt = {}
            for d, req in requests.items():
                try:
                    nxt[d] = gens[d].send({c: float(sim[d, c]) for c in req})
                except StopIteration as stop:
                    candidates[d] = stop.value[0]
            requests = nxt
        neighbours = [(d, n) for d in chunk for c in candidates[d] for n in confidence_neighbours(taxonomy, c, confidence_over)]
        _score_into(scorer, docs, sim, sorted({(d, n) for d, n in neighbours if np.isnan(sim[d, n])}))
        bar.update(len(chunk))
    bar.close()
    return sim


def _score_into(scorer, docs, sim, pairs) -> None:
    if pairs:
        sim[tuple(np.array(pairs).T)] = scorer.score_pairs(docs, pairs)


@dataclass
class SimilarityOutput:
    corpus: np.ndarray  # the scores stages 2-4 use (after any refinement of the class prototypes)
    test: np.ndarray | None
    encoder_passes: int
    extra: dict = field(default_factory=dict)  # runtime counters (shards, actors)
    # with refined prototypes: the name-only scores (the fixed zero-shot baseline) and the prototypes
    names_corpus: np.ndarray | None = None
    names_test: np.ndarray | None = None
    prototypes: np.ndarray | None = None

    def arrays(self, test_is_corpus: bool) -> dict[str, np.ndarray]:
        """What the stage-1 cache stores; a test set that is the corpus is stored once."""
        named = {"corpus": self.corpus, "test": None if test_is_corpus else self.test, "names_corpus": self.names_corpus,
                 "names_test": None if test_is_corpus else self.names_test, "prototypes": self.prototypes}
        return {k: v for k, v in named.items() if v is not None}

    def stats(self) -> dict:
        values = self.corpus[~np.isnan(self.corpus)]
        scored_per_doc = float((~np.isnan(self.corpus)).sum(1).mean())
        return {
            "stage1/similarity_min": float(values.min()),
            "stage1/similarity_max": float(values.max()),
            "stage1/similarity_mean": float(values.mean()),
            "stage1/similarity_std": float(values.std()),
            "stage1/pairs_per_doc": scored_per_doc,
            "stage1/encoder_passes": int(self.encoder_passes),
        }


def score_documents(scorer, docs: list[str], taxonomy: Taxonomy, s: SimilarityConfig, search: PrunedSearch,
                    desc: str | None) -> np.ndarray:
    """Stage 1 for one list of documents (the unit a Ray Data actor runs too)."""
    if scorer.full_matrix or not s.pruning:
        return scorer.score_all(docs, desc=desc).astype(np.float32)
    return score_pruned(scorer, docs, taxonomy, search.root_width, progress=desc is not None,
                        confidence_over=search.confidence_over)


def refines(s: SimilarityConfig) -> bool:
    """Prototype refinement needs document embeddings: the bi-encoder has them, a cross-encoder does not."""
    return s.backend == "biencoder" and s.refine_rounds > 0


def class_hypotheses(s: SimilarityConfig, taxonomy: Taxonomy, keywords: dict[int, list[str]] | None) -> list[str]:
    """Each class's hypothesis: the template filled with its name (and keywords)."""
    return hypotheses(s.template, class_texts(taxonomy, s.class_text, keywords))


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
    """Stage 1. The bi-encoder embeds each document once (through the job's `memo`, which keeps the vectors for the
    stages after it; `embed` where a runtime's workers embed them, else this process) and scores from the vectors;
    the NLI cross-encoder scores pairs (`score` where a runtime's workers score them)."""
    s, taxonomy = job.cfg.similarity, job.taxonomy
    hyps = class_hypotheses(s, taxonomy, job.keywords)
    texts = {"corpus": job.corpus_texts, "test": job.test_texts}
    desc = {"corpus": "stage 1: corpus", "test": "stage 1: test set"}
    if s.backend != "biencoder" and score is not None:
        corpus, test = score(job.corpus_texts, "corpus"), None if job.test_texts is None else score(job.test_texts, "test")
        passes = int((~np.isnan(corpus)).sum() + (0 if test is None else (~np.isnan(test)).sum()))
        return SimilarityOutput(corpus, test, passes)
    scorer = scorer or make_scorer(s, job.device)
    scorer.set_classes(hyps)
    if s.backend == "biencoder":
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


def scores_from_vectors(corpus_vec: np.ndarray, test_vec: np.ndarray | None, name_emb: np.ndarray, taxonomy: Taxonomy,
                        s: SimilarityConfig, encoder_passes: int, extra: dict | None = None) -> SimilarityOutput:
    """Bi-encoder scores from document vectors: cosines with the class names, or with `refine_rounds`
    the prototypes refined on the corpus, every document scored against them and the name-only
    scores kept for the fixed zero-shot baseline."""
    from taxoclass.stages.prototypes import refine_prototypes

    corpus, test = unit(corpus_vec), unit(test_vec)

    def scores(emb, classes):
        return None if emb is None else (emb @ classes.T).astype(np.float32)

    if not refines(s):
        return SimilarityOutput(scores(corpus, name_emb), scores(test, name_emb), encoder_passes, extra or {})
    protos = refine_prototypes(corpus, name_emb, taxonomy, s.refine_rounds, s.refine_weight, s.refine_share)
    return SimilarityOutput(scores(corpus, protos), scores(test, protos), encoder_passes, extra or {},
                            names_corpus=scores(corpus, name_emb), names_test=scores(test, name_emb), prototypes=protos)
