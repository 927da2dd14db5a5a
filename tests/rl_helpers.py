"""Helpers for the RL tests: a run folder around a tiny model, toy rewards, a small trainer."""

from __future__ import annotations

import json
import shutil

import torch
from transformers import set_seed

from detoxrl.models.config import DetoxModelConfig
from rewards.composite import RewardBreakdown
from rl.config import DetoxPPOConfig
from rl.policy import load_policy
from rl.trainer import DetoxPPOTrainer

PROMPTS = ["you are a stupid idiot", "this is some bullshit", "what a stupid day", "nobody likes you"]


def make_run(model_dir: str, root, family: str) -> str:
    """An SFT-style run folder (``merged/`` + ``detoxrl.json``) around a tiny model folder."""
    run = root / "sft_run"
    shutil.copytree(model_dir, run / "merged")
    card = {"family": family, "base_model": model_dir, "stage": "sft",
            "prompt": {"prompt_format": "auto", "task_prefix": "detoxify: "},
            "generation": {"max_new_tokens": 8}}
    (run / "detoxrl.json").write_text(json.dumps(card))
    return str(run)


class CharShareReward:
    """Toy reward: the share of characters of the output that are ``char`` (dense enough to learn fast)."""

    def __init__(self, char: str = "o", nan_at_call: int | None = None):
        self.char, self.calls, self.nan_at_call = char, 0, nan_at_call

    def __call__(self, sources, outputs):
        self.calls += 1
        total = torch.tensor([o.count(self.char) / max(len(o), 1) for o in outputs])
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            total = torch.full_like(total, float("nan"))
        zeros, flags = torch.zeros(len(outputs)), torch.zeros(len(outputs), dtype=torch.bool)
        return RewardBreakdown(total, total, zeros, None, None, None, flags, flags, flags)


# The PPO settings the unit tests were written for (configs/rl/value_head.yaml's critic, one response per source,
# raw scores). The shipped default (the feature critic on 64 rollouts) has its own tests: test_feature_critic.py,
# test_value_fit.py, test_defaults.py.
VALUE_HEAD = dict(samples_per_prompt=1, num_mini_batches=1, value_features="hidden", value_replay_steps=0,
                  value_ridge=None, value_shrink=1.0, critic_warmup_steps=0, reward_norm="none",
                  value_learning_rate=None, max_packed_tokens=1024)
VALUE_HEAD_ARGV = [t for k, v in VALUE_HEAD.items() for t in (f"--{k}", "null" if v is None else str(v))]


def ppo_config(**kw) -> DetoxPPOConfig:
    """``DetoxPPOConfig`` with ``VALUE_HEAD`` under ``kw``."""
    return DetoxPPOConfig(**{**VALUE_HEAD, **kw})


def ppo_args(out, **kw) -> DetoxPPOConfig:
    base = dict(output_dir=str(out), max_steps=4, rollout_batch_size=8, max_new_tokens=6, report_to="none",
                save_steps=0, use_cpu=True, kl_coef=0.0, truncation_penalty=0.0, eval_samples=0, sample_every=0,
                disable_tqdm=True, learning_rate=1e-3)
    base.update(kw)
    return ppo_config(**base)


def make_trainer(model_dir: str, out, reward=None, finetuning: str = "full", seed: int = 0, policy_adapter="new",
                 critic="shared", lexicon=None, callbacks=None, strategy=None, **kw) -> DetoxPPOTrainer:
    """``critic``: the policy's critic model (shared | separate); ``strategy``: an ``rl.critics.Critic`` instance."""
    set_seed(seed)
    mc = DetoxModelConfig(model_name_or_path=model_dir, finetuning=finetuning, lora_r=4, lora_alpha=8,
                          lora_target_modules=["all-linear"])
    policy = load_policy(mc, policy_adapter, critic)
    return DetoxPPOTrainer(ppo_args(out, **kw), policy, reward or CharShareReward(), PROMPTS, lexicon=lexicon,
                           callbacks=callbacks, critic=strategy)


def straight_and_resumed(run: str, tmp_path, **kw) -> tuple[DetoxPPOTrainer, DetoxPPOTrainer]:
    """A run trained straight through (checkpoint every ``save_steps``), and one resumed from its ``checkpoint-2``
    with another seed, which must then repeat it. The checkpoint holds the replay buffer."""
    import os

    straight = make_trainer(run, tmp_path / "a", save_total_limit=5, **kw)
    straight.train()
    ckpt = tmp_path / "a" / "checkpoint-2"
    assert "value_replay.safetensors" in os.listdir(ckpt)
    resumed = make_trainer(run, tmp_path / "b", seed=123, **kw)
    resumed.train(resume_from=str(ckpt))
    return straight, resumed
