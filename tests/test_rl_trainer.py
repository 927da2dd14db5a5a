"""The PPO trainer on tiny models: alignment of log-probs, the reference, learning on a toy reward,
resume, the NaN stop, and the masks of rollouts."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from safetensors.torch import load_file

from detoxrl.errors import UserError
from rl.value_head import lm_forward
from tests.rl_helpers import CharShareReward, make_run, make_trainer


# Rollout masks and the padded-batch forward alignment are checked against plain forwards in test_rl_units.py.


# ---- reference ------------------------------------------------------------------------------------------------

def test_lora_reference_is_the_unchanged_sft_model(tiny_dir, tmp_path):
    run = make_run(tiny_dir("llama"), tmp_path, "causal")
    tr = make_trainer(run, tmp_path / "out", finetuning="lora", learning_rate=5e-2, max_steps=2)
    fmt = tr.policy.formatter
    batch = fmt.encode_prompts(["you are a stupid idiot"])
    response = torch.tensor([[7, 8, 9]])
    rmask = torch.ones(1, 3)

    def ref_lp():
        with tr.policy.reference() as ref:
            return tr.unwrapped.logprobs(ref, batch["input_ids"], batch["attention_mask"], response, rmask)

    before_ref = ref_lp()
    before_policy = tr.unwrapped(batch["input_ids"], batch["attention_mask"], response, rmask).logprobs.detach()
    torch.testing.assert_close(before_ref, before_policy)  # a fresh adapter starts as the SFT model
    tr.train()
    torch.testing.assert_close(ref_lp(), before_ref)  # the reference never moves
    after_policy = tr.unwrapped(batch["input_ids"], batch["attention_mask"], response, rmask).logprobs.detach()
    assert not torch.allclose(after_policy, before_policy)  # the policy does
    assert all(p.requires_grad for n, p in tr.unwrapped.named_parameters() if "lora_" in n)


def test_continued_adapter_keeps_a_frozen_copy_as_reference(tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = tiny_dir("llama")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    run = make_run(base_dir, tmp_path, "causal")
    peft.save_pretrained(os.path.join(run, "adapter"))
    tr = make_trainer(run, tmp_path / "out", finetuning="lora", policy_adapter="continue", learning_rate=5e-2,
                      max_steps=2)
    assert tr.policy.ref_adapter == "reference"
    batch = tr.policy.formatter.encode_prompts(["you are a stupid idiot"])
    args = (batch["input_ids"], batch["attention_mask"], torch.tensor([[7, 8, 9]]), torch.ones(1, 3))

    def ref_lp():
        with tr.policy.reference() as ref:
            return tr.unwrapped.logprobs(ref, *args)

    start = ref_lp()
    torch.testing.assert_close(tr.unwrapped(*args).logprobs.detach(), start)  # both are the SFT adapter
    tr.train()
    torch.testing.assert_close(ref_lp(), start)
    assert not torch.allclose(tr.unwrapped(*args).logprobs.detach(), start)
    trainable = {n for n, p in tr.unwrapped.named_parameters() if p.requires_grad}
    assert trainable and not any(".reference." in n for n in trainable)


# ---- learning --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,lr", [("llama", 3e-3), ("t5", 1e-2)])
def test_toy_reward_rises_within_30_steps(tiny_dir, tmp_path, kind, lr):
    """Reward: share of 'o' characters in the output. A random tiny model starts near 0.04."""
    tr = make_trainer(tiny_dir(kind), tmp_path, max_steps=30, rollout_batch_size=16, max_new_tokens=12,
                      learning_rate=lr)
    tr.train()
    rewards = [e["reward/total"] for e in tr.state.log_history]
    # against the untrained policy's rollout: with the zero-initialised value head t5 gains most in step 1
    first, last = rewards[0], sum(rewards[-5:]) / 5
    assert last > 0.15 and last > 3 * first, rewards


def _spy_step(tr):
    """Wrap ``tr.advantages`` to record, at the moment the trainer computes advantages (before any optimiser
    step of that PPO step), what it used next to independent no-grad forwards of the same rollout."""
    seen = []
    original = tr.advantages

    def spy(old, ref_logprobs, score, mask, step, scale=1.0):
        ro = tr._last_samples[0]
        temperature = tr.args.temperature
        with torch.no_grad():
            fresh = tr.unwrapped(*ro.tensors(), temperature=temperature)
            with tr.policy.reference() as ref:
                fresh_ref = tr.unwrapped.logprobs(ref, *ro.tensors(), temperature=temperature)
            # padded, not packed: an independent computation of what the trainer's packed passes give
            st = lm_forward(tr.unwrapped.policy, tr.policy.family, *ro.tensors(), tr.unwrapped.decoder_start_id,
                            want_hidden=False, pack=False)
            plain_lp = st.scatter(torch.log_softmax(st.logits.float() / temperature, -1).gather(
                -1, ro.response[st.rows, st.cols, None])[:, 0], ro.response.shape)
        seen.append(dict(ro=ro, old=old, ref=ref_logprobs, score=score.clone(), mask=mask, fresh=fresh,
                         fresh_ref=fresh_ref, plain_lp=plain_lp, kl_coef=tr.kl_ctl.value))
        return original(old, ref_logprobs, score, mask, step, scale)

    tr.advantages = spy
    return seen


class RecordingReward(CharShareReward):
    def __call__(self, sources, outputs):
        out = super().__call__(sources, outputs)
        self.last = out.total.clone()
        return out


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_one_step_uses_sampling_temperature_kl_truncation_and_running_norm(tiny_dir, tmp_path, estimator):
    """Inside the loop: old log-probs/values of the fused first pass equal a separate no-grad forward, the
    reference log-probs use the sampling temperature, the score is (reward - penalty * truncated) normalised by
    running moments, ``ppo/kl`` is the mean sequence KL of the chosen estimator, and the adaptive coefficient
    moves by Ziegler's rule. Every expectation is recomputed here, outside the trainer."""
    run = make_run(tiny_dir("llama"), tmp_path, "causal")
    reward = RecordingReward()
    tr = make_trainer(run, tmp_path / "out", reward=reward, finetuning="lora", max_steps=2, temperature=0.6,
                      kl_coef=0.3, kl_estimator=estimator, adaptive_kl=True, target_kl=0.001, kl_horizon=50,
                      truncation_penalty=0.25, reward_norm="running", learning_rate=5e-2)
    assert tr.fused
    tr.eos = sorted(set(tr.eos) | set(range(100, 140)))  # 40 EOS ids: some rows end, some are truncated
    seen = _spy_step(tr)
    coefs = [tr.kl_ctl.value]
    raws = []
    for _ in range(2):
        stats = tr.step()
        tr.state.log_history.append(stats)
        coefs.append(tr.kl_ctl.value)
        raws.append(reward.last - 0.25 * seen[-1]["ro"].truncated.float())
    for i, s in enumerate(seen):
        ro, m = s["ro"], s["mask"]
        torch.testing.assert_close(s["old"].logprobs, s["fresh"].logprobs, atol=1e-5, rtol=0)
        torch.testing.assert_close(s["old"].values, s["fresh"].values, atol=1e-5, rtol=0)
        torch.testing.assert_close(s["old"].logprobs * m, s["plain_lp"] * m, atol=1e-4, rtol=0)  # temperature 0.6
        torch.testing.assert_close(s["ref"], s["fresh_ref"], atol=1e-5, rtol=0)
        truncated = torch.tensor([not any(int(t) in tr.eos for t in row) for row in ro.response])
        assert torch.equal(ro.truncated.cpu(), truncated) and 0 < int(truncated.sum()) < len(truncated)
        pooled = torch.cat(raws[:i + 1]).double()  # running moments: every score seen so far
        expected = (raws[i].double() - pooled.mean()) / (pooled.std() + 1e-8)
        torch.testing.assert_close(s["score"].double(), expected, atol=1e-6, rtol=1e-6)
        d = s["old"].logprobs - s["ref"]
        per_token = d if estimator == "k1" else torch.expm1(-d) + d
        seq_kl = float((per_token * m).sum(1).mean())
        assert tr.state.log_history[i]["ppo/kl"] == pytest.approx(seq_kl, rel=1e-5, abs=1e-7)
        err = min(max(seq_kl / 0.001 - 1, -0.2), 0.2)
        assert coefs[i + 1] == pytest.approx(coefs[i] * (1 + err * 8 / 50), rel=1e-9)
        assert tr.state.log_history[i]["ppo/kl_coef"] == pytest.approx(coefs[i + 1])
    assert seen[1]["kl_coef"] == coefs[1] != coefs[0]  # step 2's rewards use the coefficient updated by step 1
    assert max(abs(x["ppo/kl"]) for x in tr.state.log_history) > 0  # the policy moved away from the reference


def test_minibatches_accumulation_and_early_stop_count_optimiser_steps(tiny_dir, tmp_path):
    """8 rollouts, 2 minibatches of 4, micro-batches of 2 (accumulation 2), 4 epochs: 8 optimiser steps per
    PPO step. With early_stop_kl=1e-9 the first minibatch (ratio 1 everywhere, KL 0) still updates and the
    second (KL > 0 after that update) stops the epochs: 2 optimiser steps per PPO step."""

    def count(early_stop_kl):
        tr = make_trainer(tiny_dir("llama"), tmp_path / str(early_stop_kl), max_steps=2, rollout_batch_size=8,
                          num_mini_batches=2, gradient_accumulation_steps=2, ppo_epochs=4, learning_rate=5e-2,
                          early_stop_kl=early_stop_kl)
        assert not tr.fused and tr.args.micro_batch_size == 2
        inner = tr.optimizer.optimizer
        calls = {"n": 0}
        step = inner.step

        def counting(*a, **k):
            calls["n"] += 1
            return step(*a, **k)

        inner.step = counting
        tr.train()
        return calls["n"], [e["ppo/early_stopped"] for e in tr.state.log_history]

    assert count(None) == (16, [0.0, 0.0])
    assert count(1e-9) == (4, [1.0, 1.0])


class OffsetReward(CharShareReward):
    """The toy reward plus 1: returns a zero-initialised critic (predicting 0) must learn to predict."""

    def __call__(self, sources, outputs):
        b = super().__call__(sources, outputs)
        return dataclasses.replace(b, total=b.total + 1.0)


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_value_loss_falls_and_the_value_head_learns(tiny_dir, tmp_path, critic):
    tr = make_trainer(tiny_dir("llama"), tmp_path, reward=OffsetReward(), max_steps=10, critic=critic,
                      learning_rate=3e-3, vf_coef=1.0)
    assert (tr.unwrapped.critic is not None) == (critic == "separate")
    head = {n: p.detach().clone() for n, p in tr.unwrapped.value_head.named_parameters()}
    backbone = tr.unwrapped.critic if critic == "separate" else tr.unwrapped.policy
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    tr.train()
    assert all(not torch.equal(p, head[n]) for n, p in tr.unwrapped.value_head.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in backbone.named_parameters())
    losses = [e["ppo/value_loss"] for e in tr.state.log_history]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses


# ---- checkpoints -----------------------------------------------------------------------------------------------

def test_resume_continues_the_same_trajectory(tiny_dir, tmp_path):
    """Running reward normalisation, an adaptive KL coefficient (> 0) and the optimiser all come back: steps 3-4
    of the resumed run repeat the uninterrupted run bit for bit."""
    kw = dict(max_steps=4, save_steps=2, reward_norm="running", kl_coef=0.2, adaptive_kl=True, target_kl=0.01,
              kl_horizon=20, learning_rate=1e-2)
    straight = make_trainer(tiny_dir("llama"), tmp_path / "a", save_total_limit=5, **kw)
    straight.train()
    ckpt = tmp_path / "a" / "checkpoint-2"
    assert {"adapter", "trainable.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
            "sampler_state.pt", "trainer_state.json"} <= set(os.listdir(ckpt))
    assert "model.safetensors" not in os.listdir(ckpt)  # the frozen base is not copied into every checkpoint
    coefs = [e["ppo/kl_coef"] for e in straight.state.log_history]
    assert len(set(coefs)) == 4 and coefs[0] != 0.2  # the coefficient really adapts at every step

    resumed = make_trainer(tiny_dir("llama"), tmp_path / "b", seed=123, **kw)
    resumed.train(resume_from=str(ckpt))
    assert resumed.state.step == 4
    keys = ("step", "reward/total", "reward/score", "ppo/policy_loss", "ppo/value_loss", "ppo/kl", "ppo/kl_coef")
    a = [tuple(e[k] for k in keys) for e in straight.state.log_history]
    b = [tuple(e[k] for k in keys) for e in resumed.state.log_history]
    assert b == a  # the history up to the checkpoint came back, and steps 3-4 repeat exactly
    assert resumed.kl_ctl.state_dict() == straight.kl_ctl.state_dict()
    assert resumed.moments.state_dict() == straight.moments.state_dict() and straight.moments.count == 32
    for (n, p), (_, q) in zip(straight.unwrapped.named_parameters(), resumed.unwrapped.named_parameters()):
        assert torch.equal(p, q), n
    assert resumed.optimizer.state_dict()["state"][0]["step"] == straight.optimizer.state_dict()["state"][0]["step"]


def test_nan_reward_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_dir, tmp_path):
    tr = make_trainer(tiny_dir("llama"), tmp_path, max_steps=4, save_steps=2, reward=CharShareReward(nan_at_call=3))
    with pytest.raises(UserError, match=r"rewards at step 3.*checkpoint-2"):
        tr.train()
    saved = load_file(str(tmp_path / "checkpoint-2" / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert not (tmp_path / "checkpoint-3").exists()


def test_save_total_limit_keeps_the_newest_checkpoints(tiny_dir, tmp_path):
    tr = make_trainer(tiny_dir("llama"), tmp_path, max_steps=7, save_steps=2, save_total_limit=2)
    tr.train()
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("checkpoint")) == ["checkpoint-4", "checkpoint-6"]
