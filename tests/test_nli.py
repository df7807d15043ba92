"""The NLI cross-encoder path, with a tiny randomly initialised model built here."""

import math

import numpy as np
import pytest
import torch
from conftest import write_dataset
from test_stages import EDGES, LABELS

from taxoclass.config import MiningConfig
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.stages.core_mining import mine_core_classes
from taxoclass.stages.similarity import NLIScorer, entailment_probability, nli_label_indices, score_pruned
from taxoclass.stages.text_encoder import resolve_model_path

DOCS = ["a red apple on the table", "the cat sleeps", "bikes and helmets for the road", "strong coffee every morning",
        "this tent kept us dry in the storm"]


@pytest.fixture(scope="module")
def tiny_nli(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-nli")
    tok = AutoTokenizer.from_pretrained(resolve_model_path("bundled"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=3, initializer_range=0.5,  # spread-out scores
                        id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
                        label2id={"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2})
    BertForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_label_indices_come_from_id2label():
    assert nli_label_indices({0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}) == (2, 0)
    assert nli_label_indices({"0": "entailment", "1": "neutral", "2": "contradiction"}) == (0, 2)


def test_normalisations():
    logits = torch.tensor([[1.0, 0.0, -1.0]])  # entailment 0, neutral 1, contradiction 2
    e = math.e
    assert entailment_probability(logits, 0, 2, "softmax3").item() == pytest.approx(e / (e + 1 + 1 / e))
    assert entailment_probability(logits, 0, 2, "entail_vs_contra").item() == pytest.approx(e / (e + 1 / e))


def test_pruned_scoring_matches_all_pairs(tiny_nli, tmp_path):
    tax = Taxonomy.load(write_dataset(tmp_path / "t", labels=LABELS, edges=EDGES))
    scorer = NLIScorer(tiny_nli, max_length=32, batch_size=8, device="cpu")
    scorer.set_classes([f"This is about {n}." for n in tax.readable_names])
    full = scorer.score_all(DOCS)
    assert scorer.encoder_passes == len(DOCS) * len(tax)
    scorer.encoder_passes = 0
    pruned = score_pruned(scorer, DOCS, tax, root_width=2, progress=False)
    scored = ~np.isnan(pruned)
    assert scorer.encoder_passes == scored.sum() < full.size
    np.testing.assert_allclose(pruned[scored], full[scored], atol=1e-5)
    cfg = MiningConfig(root_width=2, positivity=True, floor=0.0)
    a, b = mine_core_classes(full, tax, cfg), mine_core_classes(pruned, tax, cfg)
    assert a.candidates == b.candidates and a.cores == b.cores
    assert np.concatenate(a.confidences) == pytest.approx(np.concatenate(b.confidences), abs=1e-5)
    assert full.std() > 0.01  # the random model separates documents, so the comparison means something
