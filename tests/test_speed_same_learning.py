"""The speed options keep what PPO learns: from the same seed, a trainer with the packed sampler and packed
scoring (the defaults) and one with both off (transformers' generate, padded batches) sample the same rollouts
and log the same rewards, KL, losses and weights after three steps, within float rounding."""

from __future__ import annotations

import pytest
import torch

from tests.rl_helpers import make_run, make_trainer


def test_fast_and_plain_trainers_learn_the_same(tiny_dir, tmp_path):
    run = make_run(tiny_dir("llama"), tmp_path, "causal")
    runs = []
    for fast in (True, False):
        tr = make_trainer(run, tmp_path / f"out{fast}", finetuning="lora", max_steps=3, temperature=0.8, kl_coef=0.2,
                          learning_rate=5e-2, ppo_epochs=2, fast_sampling=fast, pack_sequences=fast)
        tr.eos = sorted(set(tr.eos) | set(range(100, 140)))  # rows end at different steps
        texts, stats = [], []
        for _ in range(3):
            stats.append(tr.step())
            texts.append(tr._last_samples[0].texts)
        weights = {n: p.detach().clone() for n, p in tr.unwrapped.named_parameters() if p.requires_grad}
        runs.append((texts, stats, weights))
    (texts_a, stats_a, w_a), (texts_b, stats_b, w_b) = runs
    assert texts_a == texts_b
    assert len({t for step in texts_a for t in step}) > 3  # sampled, not one repeated answer
    for a, b in zip(stats_a, stats_b):
        for key in ("reward/score", "ppo/kl", "ppo/policy_loss", "ppo/value_loss", "ppo/entropy", "rollout/truncated"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
        assert a["work/decode_rows"] < b["work/decode_rows"] and a["work/scored_tokens"] < b["work/scored_tokens"]
    for n in w_a:  # Adam divides by sqrt(v): a gradient entry near 0 can move by more than its rounding, so by norm
        assert float((w_a[n] - w_b[n]).norm() / w_b[n].norm()) < 2e-4, n  # measured: 2e-5 at most
