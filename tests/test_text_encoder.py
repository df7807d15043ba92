"""Stage 1's document pass (`encode_texts`): token-budget batches, tokenization ahead of the model, autocast."""

import threading

import numpy as np
import pytest
import torch

from taxoclass.data.readers import load_dataset
from taxoclass.errors import ConfigError
from taxoclass.stages.text_encoder import encode_texts, load_encoder, pool
from taxoclass.stages.token_batches import ahead, budget_batches


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("bundled")


@pytest.fixture(scope="module")
def texts():
    """Demo reviews of many lengths, a one-word text and one far past the token limit."""
    corpus = load_dataset("demo").corpus.texts
    return [t.lower() for t in corpus[:30]] + ["ok", " ".join(corpus[30:40]).lower()]


@torch.no_grad()
def fixed_batches_reference(model, tokenizer, texts, max_length, batch_size):
    """The document pass before issue 28: batches of `batch_size` texts by character length, tokenized
    and padded per batch on the model's thread, in fp32."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out[idx] = pool(model(**enc).last_hidden_state, enc["attention_mask"], "mean").float().numpy()
    return out


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("batch_tokens", [0, 300])  # 0: batch_size x max_length; 300: many small batches of mixed shapes
def test_token_budget_batches_give_the_fixed_batch_vectors(minilm, texts, batch_tokens):
    model, tok = minilm
    want = fixed_batches_reference(model, tok, texts, max_length=128, batch_size=8)
    got = encode_texts(model, tok, texts, max_length=128, batch_size=8, batch_tokens=batch_tokens)
    assert got.shape == want.shape and got.dtype == np.float32
    assert cosines(got, want).min() > 0.999  # measured: 0.9999999; rows come back in the input's order
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_budget_batches_hold_each_text_once_within_the_budget():
    lengths = [5, 120, 7, 64, 64, 3, 300, 1, 16]
    batches = budget_batches(lengths, 128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [6]  # longer than the budget: alone, and first (longest first fails fast on memory)
    for b in batches[1:]:
        assert len(b) * max(lengths[i] for i in b) <= 128
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    assert len(budget_batches([4] * 100, 128)) == 4  # short texts travel many to a batch: 32 each


def test_ahead_yields_in_order_raises_the_producers_error_and_stops_with_its_consumer():
    assert list(ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("tokenizer broke")

    with pytest.raises(ValueError, match="tokenizer broke"):
        list(ahead(failing()))
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield len(produced)

    before = threading.active_count()
    items = ahead(endless(), depth=2)
    assert next(items) == 1
    items.close()  # the consumer stops: the producer thread ends instead of filling memory
    assert threading.active_count() == before and len(produced) <= 4


def test_autocast_runs_the_encoder_in_bf16_and_fp16_needs_cuda(minilm, texts):
    model, tok = minilm
    seen = []
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        half = encode_texts(model, tok, texts[:6], max_length=64, batch_size=8, amp="bf16")
        auto = encode_texts(model, tok, texts[:6], max_length=64, batch_size=8, amp="auto")  # off on the CPU
    finally:
        hook.remove()
    assert seen == [torch.bfloat16, torch.float32]
    assert cosines(half, auto).min() > 0.99  # bf16 keeps 8 bits of mantissa: close, not equal
    from taxoclass.stages.similarity import BiEncoderScorer

    with pytest.raises(ConfigError, match="^config key 'similarity.autocast': fp16 needs a CUDA device"):
        BiEncoderScorer("bundled", 64, 8, "cpu", amp="fp16")
