"""Stage 1: document-class similarity (METHOD.md, stage 1).

Features:
- two scorers, one for each value of `similarity.backend` (`SCORERS`):
  - `BiEncoderScorer` (default): cosine between the document and the hypothesis
    made from the class name; N + C encoder passes, class hypotheses encoded once,
    documents once, in batches sized by a token budget (`similarity.batch_tokens`), on CUDA
    under autocast (`similarity.autocast`, bf16 by default) with tokenization ahead of the model;
  - `NLIScorer`: any Hugging Face sequence-classification NLI model; the
    entailment index is read from `id2label`; `softmax3` (3-way entailment
    probability) or `entail_vs_contra` (the zero-shot pipeline's normalisation);
- what a scorer can do, as properties of its class, which the stages around stage 1 read
  (`embeds_documents`, `prunes`, `refines`, `classifier_encoder`): no other module compares backend
  names, so a new scorer is a class here and a value of `similarity.backend` in config.py;
- top-down pruning for the cross-encoder: only the classes the stage-2 search
  visits, plus their parents and siblings (for the confidence), are scored;
  `similarity.pruning=false` scores all pairs. The bi-encoder always fills the
  whole matrix: its cost is N + C passes whatever the number of pairs;
- output: a float32 matrix (documents x classes), NaN where a pair was not scored;
- takes its own config section (`SimilarityConfig`), and from stage 2 only what the pruned
  search borrows (`PrunedSearch`: the root's width, what a confidence compares with);
- the stage as a job that any runtime runs: `jobs/similarity.py`.

Importing this module loads neither torch nor transformers (the pipeline reads the scorers'
properties when it starts): they are imported where a scorer is built or scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from taxoclass.config import STAGE1_ENCODER, Config, MiningConfig, SimilarityConfig
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.stages.candidates import candidate_search, confidence_neighbours

if TYPE_CHECKING:
    import torch

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

    embeds_documents = True  # one encoder pass per document: the vectors are stored, and shared with the stages after it
    prunable = False  # N + C encoder passes whatever the number of pairs: it always fills the whole matrix
    refinable = True  # class prototypes can be refined from its document vectors

    def __init__(self, model_name: str, max_length: int, batch_size: int, device, lowercase: bool = True,
                 batch_tokens: int = 0, amp: str = "auto"):
        from taxoclass.amp import check_amp
        from taxoclass.stages.text_encoder import load_encoder

        check_amp(amp, device, "similarity.autocast")
        self.model, self.tokenizer = load_encoder(model_name, key="similarity.model")
        self.model.to(device)
        self.max_length, self.batch_size, self.device, self.lowercase = max_length, batch_size, device, lowercase
        self.batch_tokens, self.amp = batch_tokens, amp
        self.encoder_passes = 0

    @classmethod
    def from_config(cls, s: SimilarityConfig, device) -> BiEncoderScorer:
        return cls(s.model, s.max_length, s.batch_size, device, s.lowercase, s.batch_tokens, s.autocast)

    def _encode(self, texts, desc=None, normalize: bool = True) -> np.ndarray:
        from taxoclass.stages.text_encoder import encode_texts

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

    embeds_documents = False  # a cross-encoder: one model pass per (document, class) pair, no document vectors
    prunable = True  # with `similarity.pruning`, only the pairs stage 2's search visits are scored
    refinable = False  # prototype refinement needs document vectors

    def __init__(self, model_name: str, max_length: int, batch_size: int, device, normalization: str = "softmax3",
                 lowercase: bool = True, amp: str = "auto"):
        from transformers import AutoModelForSequenceClassification

        from taxoclass.amp import check_amp, resolve_amp
        from taxoclass.stages.text_encoder import load_pretrained

        check_amp(amp, device, "similarity.autocast")
        self.amp = resolve_amp(amp, device)
        self.model, self.tokenizer = load_pretrained(model_name, "similarity.model", AutoModelForSequenceClassification)
        self.model.to(device).eval()
        self.entail, self.contra = nli_label_indices(self.model.config.id2label)
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.normalization, self.lowercase = normalization, lowercase
        self.encoder_passes = 0

    @classmethod
    def from_config(cls, s: SimilarityConfig, device) -> NLIScorer:
        return cls(s.model, s.max_length, s.batch_size, device, s.nli_normalization, s.lowercase, s.autocast)

    def set_classes(self, hypothesis_texts: list[str]) -> None:
        self.hypotheses = hypothesis_texts

    def score_pairs(self, docs: list[str], pairs: list[tuple[int, int]]) -> np.ndarray:
        """Entailment probability for each (doc index, class index) pair."""
        import torch

        from taxoclass.amp import amp_context
        from taxoclass.stages.text_encoder import length_sorted_batches

        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        premises = [docs[d].lower() if self.lowercase else docs[d] for d, _ in pairs]
        for idx in length_sorted_batches([len(p) for p in premises], self.batch_size):
            enc = self.tokenizer([premises[i] for i in idx], [self.hypotheses[pairs[i][1]] for i in idx], padding=True,
                                 truncation="only_first", max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
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
    import torch

    if normalization == "softmax3":
        return logits.softmax(-1)[:, entail]
    pair = torch.stack([logits[:, contra], logits[:, entail]], dim=-1)
    return pair.softmax(-1)[:, 1]


SCORERS = {"biencoder": BiEncoderScorer, "nli": NLIScorer}  # by `similarity.backend` (its values: config.py)


def scorer_type(backend: str) -> type[BiEncoderScorer] | type[NLIScorer]:
    """The scorer class of a `similarity.backend` value; its properties say what it can do before one is built."""
    return SCORERS[backend]


def make_scorer(s: SimilarityConfig, device):
    return scorer_type(s.backend).from_config(s, device)


def embeds_documents(s: SimilarityConfig) -> bool:
    """Whether stage 1 embeds each document once (vectors stored in the cache, shared with stage 3's frozen encoder)."""
    return scorer_type(s.backend).embeds_documents


def prunes(s: SimilarityConfig) -> bool:
    """Whether stage 1 scores only what stage 2's top-down search visits (its cache key then holds that search's settings)."""
    return scorer_type(s.backend).prunable and s.pruning


def refines(s: SimilarityConfig) -> bool:
    """Whether stage 1 refines class prototypes on the corpus: it needs document vectors, which a cross-encoder has not."""
    return scorer_type(s.backend).refinable and s.refine_rounds > 0


def classifier_encoder(cfg: Config) -> str:
    """The classifier's encoder as a model name: `classifier.encoder`, where `similarity` (the default) is stage 1's
    encoder, and after a stage 1 that embeds no documents (a cross-encoder) the bundled MiniLM."""
    c, s = cfg.classifier, cfg.similarity
    if c.encoder != STAGE1_ENCODER:
        return c.encoder
    return s.model if embeds_documents(s) else "bundled"


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
    if not (scorer.prunable and s.pruning):
        return scorer.score_all(docs, desc=desc).astype(np.float32)
    return score_pruned(scorer, docs, taxonomy, search.root_width, progress=desc is not None,
                        confidence_over=search.confidence_over)


def class_hypotheses(s: SimilarityConfig, taxonomy: Taxonomy, keywords: dict[int, list[str]] | None) -> list[str]:
    """Each class's hypothesis: the template filled with its name (and keywords)."""
    return hypotheses(s.template, class_texts(taxonomy, s.class_text, keywords))


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
