"""Document vectors, embedded once per cache: the encoder is the run's largest cost, so no stage pays it twice.

Features:
- `EncoderSpec`: what a document's vector depends on besides its text: the encoder, the pooling,
  the token limit, whether the text was lower-cased first (only where the tokenizer does not
  lower-case by itself: for an uncased model such as the bundled MiniLM both give the same tokens)
  and the precision the encoder ran in (`stage1_precision`: bf16 and fp32 vectors never share an entry);
- `VectorStore`: `vectors-<key>.npy` in the cache folder (float16, read memory-mapped), the key made
  from the spec and the texts, sealed by a checksum written last like every stage entry (`cache.py`);
  stage 1's bi-encoder writes the corpus and test vectors there, and stage 3 with a frozen encoder,
  stage 4, the evaluation and the search objectives read them whenever their spec is stage 1's;
  a stored file is checked against the texts and the encoder's width before it is used (`npyfile.py`),
  and one that does not fit is embedded again with a warning that says why;
- `why_embed`: the line the run log gives when the classifier has to embed documents itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from taxoclass.atomic import atomic_replace_with
from taxoclass.cache import problem, seal, warn_unusable
from taxoclass.config import Config
from taxoclass.npyfile import Unusable, load_npy
from taxoclass.pipeline.inputs import digest
from taxoclass.stages.similarity import classifier_encoder, embeds_documents


@dataclass(frozen=True)
class EncoderSpec:
    model: str
    pooling: str
    max_length: int
    lowercase: bool
    precision: str  # the autocast the encoder ran under: "off" (fp32), "bf16" or "fp16"

    @classmethod
    def of_similarity(cls, cfg: Config) -> EncoderSpec:
        s = cfg.similarity
        return cls(s.model, "mean", s.max_length, s.lowercase and not tokenizer_lowercases(s.model), stage1_precision(cfg))

    @classmethod
    def of_classifier(cls, cfg: Config) -> EncoderSpec:
        """The frozen classifier encoder embeds in stage 1's precision, so that it shares stage 1's vectors."""
        c = cfg.classifier
        return cls(classifier_encoder(cfg), c.pooling, c.max_length, False, stage1_precision(cfg))


def stage1_precision(cfg: Config) -> str:
    """`similarity.autocast` resolved where stage 1 embeds: on Ray's GPU actors with `ray.use_gpu`, else on
    `device` (`auto`: bf16 on CUDA, and on a CPU as `amp.py` decides). From the config and the machine
    alone, not the device a finished run is opened on, so that reading a run finds the entries it wrote."""
    from taxoclass.amp import resolve_amp
    from taxoclass.stages.text_encoder import resolve_device

    s = cfg.similarity
    if s.autocast != "auto":
        return s.autocast
    if cfg.runtime == "ray" and cfg.ray.use_gpu:
        import torch

        # a driver without CUDA cannot see the actors' cards (torch then answers fp16): they are taken to have bf16
        # units, as every card since Ampere does; behind such a driver an older card's fp16 vectors are keyed bf16
        return resolve_amp("auto", "cuda") if torch.cuda.is_available() else "bf16"
    return resolve_amp("auto", resolve_device(cfg.device))


@lru_cache(maxsize=8)
def tokenizer_lowercases(model: str) -> bool:
    """Whether the model's tokenizer lower-cases by itself (then lower-casing first changes nothing)."""
    from taxoclass.stages.text_encoder import load_tokenizer

    tok = load_tokenizer(model)
    return tok.tokenize("Taxonomy Of Classes") == tok.tokenize("taxonomy of classes")


@lru_cache(maxsize=8)
def encoder_width(model: str) -> int:
    """The width of the model's vectors (its hidden size), from its config: what a stored vector must have."""
    from transformers import AutoConfig

    from taxoclass.stages.text_encoder import resolve_model_path

    return int(AutoConfig.from_pretrained(resolve_model_path(model)).hidden_size)


def takes_stage1_vectors(cfg: Config) -> bool:
    """Whether the classifier's frozen encoder makes the vectors stage 1 made (and takes them from the cache)."""
    s = cfg.similarity
    return embeds_documents(s) and EncoderSpec.of_classifier(cfg) == EncoderSpec.of_similarity(cfg)


def why_embed(classifier: EncoderSpec, cfg: Config, miss: str) -> str:
    """Why the classifier cannot take stage 1's document vectors; `miss`: why the store had none (`VectorStore.miss`)."""
    if not embeds_documents(cfg.similarity):
        return f"stage 1's scorer (similarity.backend={cfg.similarity.backend}) makes no document vectors"
    theirs = EncoderSpec.of_similarity(cfg)
    keys = {"model": ("classifier.encoder", "similarity.model"), "pooling": ("classifier.pooling", "mean pooling"),
            "max_length": ("classifier.max_length", "similarity.max_length"),
            "lowercase": ("documents as written", "similarity.lowercase with a cased tokenizer")}
    differ = [f"{mine}={getattr(classifier, f)!r} against {other}={getattr(theirs, f)!r}" if f != "lowercase"
              else f"{mine} against {other}" for f, (mine, other) in keys.items() if getattr(classifier, f) != getattr(theirs, f)]
    if differ:
        return "not stage 1's vectors: " + "; ".join(differ)
    return f"stage 1's vectors cannot be used: {miss}"


class VectorStore:
    """Document vectors in the cache folder, one sealed `.npy` per (encoder spec, list of texts)."""

    def __init__(self, folder: Path, writable: bool = True):
        self.folder = Path(folder)
        self.writable = writable  # a finished run opened read only computes what is missing and keeps it to itself
        self.miss = ""  # why the last `get` computed the vectors (for the line that says so)

    def path(self, spec: EncoderSpec, texts: list[str]) -> Path:
        return self.folder / f"vectors-{digest('vectors', asdict(spec), texts)}.npy"

    def get(self, spec: EncoderSpec, texts: list[str], compute: Callable[[], np.ndarray], fresh: bool = False) -> np.ndarray:
        """The texts' vectors (float16, documents x dimensions): from the store, else (or when `fresh`, a
        forced stage 1) `compute()`, and kept."""
        path = self.path(spec, texts)
        checksum = path.with_suffix(".sha256")
        self.miss = "a forced stage 1 embeds them again"
        if not fresh:
            self.miss = problem(checksum, [path])
            if self.miss is None:
                try:  # sealed, but a file replaced together with its checksum may hold anything
                    return load_npy(path, len(texts), encoder_width(spec.model))
                except Unusable as err:
                    self.miss = str(err)
            if checksum.exists() or path.exists():  # never computed: an ordinary miss, said by the caller only
                warn_unusable(checksum, self.miss)
        vectors = np.ascontiguousarray(compute())
        if len(vectors) != len(texts):
            raise ValueError(f"{len(vectors)} vectors for {len(texts)} texts")
        if self.writable:
            def write(tmp):
                with open(tmp, "wb") as fh:
                    np.save(fh, vectors)

            atomic_replace_with(path, write)
            seal(checksum, [path])
        return vectors
