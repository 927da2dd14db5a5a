"""The PPO trainer on tiny models: alignment of log-probs, the reference, learning on a toy reward,
resume, the NaN stop, and the masks of rollouts."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from detoxrl.errors import UserError
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
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > 0.15 and last > 3 * first, rewards


def test_fused_first_pass_has_ratio_one(tiny_dir, tmp_path):
    tr = make_trainer(tiny_dir("llama"), tmp_path, max_steps=2, ppo_epochs=1)
    assert tr.fused
    tr.train()
    for entry in tr.state.log_history:
        assert entry["ppo/approx_kl"] == 0.0 and entry["ppo/clipfrac"] == 0.0


def test_minibatches_and_accumulation_run_and_early_stop(tiny_dir, tmp_path):
    tr = make_trainer(tiny_dir("llama"), tmp_path, max_steps=2, rollout_batch_size=8, num_mini_batches=2,
                      gradient_accumulation_steps=2, ppo_epochs=4, learning_rate=5e-2, early_stop_kl=1e-9)
    assert not tr.fused and tr.args.micro_batch_size == 2
    tr.train()
    assert [e["ppo/early_stopped"] for e in tr.state.log_history] == [1.0, 1.0]


def test_separate_critic_feeds_the_value_head(tiny_dir, tmp_path):
    tr = make_trainer(tiny_dir("llama"), tmp_path, max_steps=1, critic="separate")
    assert tr.unwrapped.critic is not None
    before = {n: p.detach().clone() for n, p in tr.unwrapped.critic.named_parameters()}
    tr.train()
    moved = [n for n, p in tr.unwrapped.critic.named_parameters() if not torch.equal(p, before[n])]
    assert moved  # the value loss trains the critic backbone


# ---- checkpoints -----------------------------------------------------------------------------------------------

def test_resume_continues_the_same_trajectory(tiny_dir, tmp_path):
    straight = make_trainer(tiny_dir("llama"), tmp_path / "a", max_steps=4, save_steps=2, save_total_limit=5)
    straight.train()
    ckpt = tmp_path / "a" / "checkpoint-2"
    assert {"adapter", "trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pt",
            "trainer_state.json"} <= set(os.listdir(ckpt))

    resumed = make_trainer(tiny_dir("llama"), tmp_path / "b", max_steps=4, save_steps=2, seed=123)
    resumed.train(resume_from=str(ckpt))
    assert resumed.state.step == 4
    a = [(e["step"], e["reward/total"], e["ppo/policy_loss"]) for e in straight.state.log_history]
    b = [(e["step"], e["reward/total"], e["ppo/policy_loss"]) for e in resumed.state.log_history]
    assert b == a  # the history up to the checkpoint came back, and steps 3-4 repeat exactly
    for (n, p), (_, q) in zip(straight.unwrapped.named_parameters(), resumed.unwrapped.named_parameters()):
        torch.testing.assert_close(p, q, msg=n)
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
