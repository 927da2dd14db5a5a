"""``DetoxPPOConfig``: transformers' ``TrainingArguments`` plus the RL stage's options (TRL-style Config).

Batch vocabulary (per process):

* ``rollout_batch_size`` prompts are sampled, answered and scored per PPO step;
* the rollout is split into ``num_mini_batches`` minibatches, one optimiser step each, for
  ``ppo_epochs`` passes;
* each minibatch is cut into ``gradient_accumulation_steps`` micro-batches of
  ``rollout_batch_size / (num_mini_batches * gradient_accumulation_steps)`` rollouts, which must
  be a whole number (``per_device_train_batch_size`` is not used by this stage).

With one micro-batch per rollout the first optimisation pass doubles as the pass that records the old
log-probs and values, which saves a forward pass per step (the ratio is 1 there by construction, so the
update is exactly PPO's). The default runs 4 minibatches of 16.

The defaults are the measured default run (docs/rl.md): 50 steps of 64 rollouts (32 sources x 2
responses) with the feature critic, from the SFT run ``outputs/sft/default`` (``PPOModelConfig``).
``configs/rl/default.yaml`` adds nothing to them; ``configs/rl/value_head.yaml`` is the earlier default.

Only the ``TrainingArguments`` fields in ``TRAINING_ARGS_READ`` are read here (the loop is our own);
``--help`` lists those, and setting any other one is refused with one line (``unread_fields``).

The reward's own fields (``w_toxicity``, ``form``, ...) live in ``rewards.composite.RewardConfig``;
``--reward.weights.toxicity 2`` is accepted as an alias of ``--w_toxicity 2`` (see ``rl/ppo.py``).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

from transformers import TrainingArguments

from detoxrl.errors import ConfigError
from detoxrl.models.config import DetoxModelConfig
from rl.core import KLEstimator
from rl.critics import CRITIC_FIELDS, NO_CRITIC, CriticConfig

# The TrainingArguments fields this stage reads (rl/trainer.py, rl/trl_algos.py, rl/checkpoint.py, the hub push);
# bf16 and gradient_checkpointing are passed to TRL's GRPO/RLOO only (PPO takes mixed precision from accelerate).
TRAINING_ARGS_READ = frozenset({
    "output_dir", "learning_rate", "max_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "adam_beta1",
    "adam_beta2", "adam_epsilon", "max_grad_norm", "gradient_accumulation_steps", "logging_steps", "save_steps",
    "save_total_limit", "report_to", "seed", "use_cpu", "resume_from_checkpoint", "push_to_hub", "hub_model_id",
    "hub_private_repo", "hub_token", "bf16", "gradient_checkpointing", "disable_tqdm"})


@dataclass
class PPOModelConfig(DetoxModelConfig):
    """The RL stage's policy: a fresh LoRA adapter (r 16 on every linear layer, no dropout) on the SFT run's merged
    weights (saved as ``DetoxModelConfig``)."""

    section: ClassVar[str] = "DetoxModelConfig"
    model_name_or_path: str | None = field(
        default="outputs/sft/default",
        metadata={"help": "The SFT run to start from (what `accelerate launch sft/train.py` writes), or a model "
                  "folder / hub id."})
    finetuning: Literal["auto", "full", "lora", "qlora", "lora8bit", "ia3"] = field(
        default="lora", metadata={"help": "lora (a new adapter on the SFT model) | full | qlora | lora8bit | ia3 | "
                                  "auto."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input (PPO turns dropout off)."})

# PPO's critic settings and the values they take for GRPO/RLOO, which have no critic (DetoxPPOConfig.__post_init__)
PPO_CRITIC_OFF = {"samples_per_prompt": 1, **{CRITIC_FIELDS[k]: v for k, v in NO_CRITIC.items()}}


def reward_alias(name: str) -> str:
    """``reward.weights.toxicity`` -> ``w_toxicity``; ``reward.form`` -> ``form``; ``critic.features`` ->
    ``value_features`` (``rl/critics.py``'s ``CRITIC_FIELDS``); other names unchanged."""
    parts = name.split(".")
    if parts[0] == "critic" and len(parts) == 2 and parts[1] in CRITIC_FIELDS:
        return CRITIC_FIELDS[parts[1]]
    if parts[:2] == ["reward", "weights"] and len(parts) == 3:
        return f"w_{parts[2]}"
    if parts[0] == "reward" and len(parts) == 2:
        return parts[1]
    return name


@dataclass
class DetoxPPOConfig(TrainingArguments):
    """Arguments for ``rl/ppo.py`` (every transformers TrainingArguments field works too)."""

    output_dir: str = field(default="outputs/rl/default", metadata={"help": "Where checkpoints and the final model go."})
    algorithm: Literal["ppo", "grpo", "rloo"] = field(
        default="ppo", metadata={"help": "ppo (ours, seq2seq and causal) | grpo | rloo (TRL's trainers, causal only). "
                                 "rft (rejection-sampling fine-tuning) hands over to rl/rft.py with its own flags "
                                 "(configs/rl/rft.yaml)."})
    policy_adapter: Literal["new", "continue"] = field(
        default="new",
        metadata={"help": "LoRA policies: 'new' puts a fresh adapter on the SFT model's merged weights (the reference is "
                  "then exactly the SFT model); 'continue' keeps training the SFT adapter (reference: a frozen copy "
                  "of that adapter)."})
    critic: Literal["shared", "separate"] = field(
        default="shared", metadata={"help": "shared: the value head reads the policy's hidden states. separate: its "
                                            "own copy of the SFT model (with its own adapter) feeds the value head."})
    # rollouts
    rollout_batch_size: int = field(default=64, metadata={"help": "Responses sampled and scored per PPO step, per process."})
    samples_per_prompt: int = field(
        default=2, metadata={"help": "ppo: responses to each training source in a rollout (rollout_batch_size / this "
                             "sources, each answered this many times; value_features lexicon+sibling needs >= 2)."})
    num_mini_batches: int = field(default=4, metadata={"help": "Optimiser steps per PPO epoch (minibatches of the rollout)."})
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each rollout."})
    max_prompt_length: int = field(default=96, metadata={"help": "Prompt tokens kept (longer prompts are cut from the left)."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest sampled response, in tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (log-probs use the same one)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0: off)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1: off)."})
    num_generations: int = field(default=4, metadata={"help": "grpo/rloo: completions per prompt (a group)."})
    use_vllm: bool = field(
        default=False, metadata={"help": "grpo/rloo: generate the completions with vLLM (TRL's use_vllm; needs `pip "
                                 "install vllm` and a GPU). ppo generates with transformers and refuses it."})
    vllm_mode: Literal["colocate", "server"] = field(
        default="colocate", metadata={"help": "grpo/rloo with use_vllm: colocate (vLLM runs in each training process "
                                      "and shares its GPU) | server (a separate `trl vllm-serve` process on "
                                      "port 8000 of this machine, TRL's default)."})
    max_new_tokens_ratio: float | None = field(
        default=None, metadata={"help": "ppo: cap each response at ceil(ratio x its source's tokens) + "
                                "max_new_tokens_extra new tokens (and at max_new_tokens); a response cut there counts "
                                "as truncated and its share is logged as rollout/capped (unset: no per-row cap)."})
    max_new_tokens_extra: int = field(default=8, metadata={"help": "ppo: tokens added to each per-row cap (see "
                                                               "max_new_tokens_ratio)."})
    # speed (docs/rl.md, Speed); each switch keeps what is learned the same within float rounding
    fast_sampling: bool = field(
        default=True, metadata={"help": "ppo, causal policies: sample rollouts with rl/sampling.py (the prompts' "
                                "shared prefix run once, finished rows leave the batch); false: transformers' generate."})
    pack_sequences: bool = field(
        default=True, metadata={"help": "ppo, causal policies: score rollouts (reference, old log-probs, update) packed "
                                "into one sequence, shared prompt prefix once and no padding; false: padded batches."})
    max_packed_tokens: int = field(
        default=2048, metadata={"help": "ppo: tokens per packed sequence (more rows go into further sequences; "
                                "attention costs the square of this)."})
    # KL
    kl_estimator: KLEstimator = field(default="k1", metadata={"help": "Per-token KL estimator: k1 (logp - logp_ref) | k3."})
    kl_coef: float = field(
        default=0.05, metadata={"help": "KL coefficient, in score units per nat whatever reward_norm is: the KL is "
                                "divided by the same scale as the score (the initial one when adaptive)."})
    adaptive_kl: bool = field(default=False, metadata={"help": "Adapt kl_coef towards target_kl (Ziegler et al.)."})
    target_kl: float = field(default=2.0, metadata={"help": "Adaptive KL: target sequence KL (nats)."})
    kl_horizon: float = field(default=1000.0, metadata={"help": "Adaptive KL: horizon, in rollouts."})
    # advantages and losses
    gamma: float = field(default=1.0, metadata={"help": "GAE discount."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten advantages over the rollout's valid tokens."})
    clip_range: float = field(default=0.2, metadata={"help": "Policy ratio clip epsilon."})
    clip_range_value: float = field(default=0.2, metadata={"help": "Value clip range."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value-loss weight."})
    value_learning_rate: float | None = field(
        default=1e-3, metadata={"help": "Learning rate of the critic (value head, and the critic model when "
                                "critic=separate), its own AdamW group (null: learning_rate). The feature critic "
                                "has no weights to train this way."})
    critic_warmup_steps: int = field(
        default=2, metadata={"help": "ppo: the first N steps train only the critic (actor frozen); they count in "
                             "max_steps."})
    value_replay_steps: int = field(
        default=4, metadata={"help": "ppo: after each step, refit the value head in closed form (ridge regression of the "
                             "returns on its input features) over the last N rollouts; 0: the head learns by AdamW "
                             "only (docs/rl.md, Critic)."})
    value_ridge: float | None = field(
        default=0.03, metadata={"help": "Ridge strength of that fit, relative to the mean feature variance (unset: "
                                "chosen at every fit as the one that best predicts the newest rollout)."})
    value_features: Literal["hidden", "lexicon", "lexicon+sibling"] = field(
        default="lexicon+sibling", metadata={"help": "ppo: what the critic reads. hidden: the value head on the last hidden state. "
                                    "lexicon: copy / toxic-lexicon features of the rewrite so far; lexicon+sibling: "
                                    "those and the other responses' scores to the same source. The last two are fitted "
                                    "by the replay fit (value_replay_steps >= 1; docs/rl.md, Critic)."})
    value_shrink: float = field(
        default=0.5, metadata={"help": "ppo, value_features lexicon*: values are m + value_shrink x (fit - m), m the "
                               "replay buffer's mean return (1: the fit itself)."})
    early_stop_kl: float | None = field(
        default=None, metadata={"help": "Stop a step's remaining PPO epochs once a minibatch's approximate KL passes this."})
    # reward shaping
    reward_norm: Literal["none", "whiten", "running"] = field(
        default="running", metadata={"help": "Score normalisation: none | whiten (per rollout) | running (mean/std so far)."})
    reward_clip: float | None = field(default=None, metadata={"help": "Clip the (normalised) score to +-this."})
    truncation_penalty: float = field(default=0.5, metadata={"help": "Subtracted from the score of a response with no EOS."})
    # evaluation and logging
    eval_samples: int = field(default=64, metadata={"help": "Dev sources decoded greedily before and after training (0: off)."})
    sample_every: int = field(default=10, metadata={"help": "Log a table of source / output / reward parts every N steps."})
    samples_logged: int = field(default=4, metadata={"help": "Rows in that table."})
    merge_adapter: bool = field(default=True, metadata={"help": "Also save a merged model (adapter folded in)."})
    # Sane defaults for this stage (transformers' own defaults differ).
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (LoRA default)."})
    max_steps: int = field(default=50, metadata={"help": "PPO steps (rollout + update)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Learning-rate schedule."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=25, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "tensorboard | none."})
    seed: int = field(default=42, metadata={"help": "Random seed."})
    disable_tqdm: bool | None = field(default=False, metadata={"help": "Hide the progress bars."})

    @classmethod
    def unread_fields(cls) -> frozenset[str]:
        """Inherited ``TrainingArguments`` fields this stage never reads: hidden from ``--help``, refused when set."""
        return frozenset(f.name for f in fields(TrainingArguments)) - TRAINING_ARGS_READ

    def __post_init__(self):
        for name in ("rollout_batch_size", "num_mini_batches", "ppo_epochs", "max_new_tokens", "max_prompt_length",
                     "gradient_accumulation_steps", "num_generations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.rollout_batch_size % (self.num_mini_batches * self.gradient_accumulation_steps):
            raise ValueError(
                f"rollout_batch_size {self.rollout_batch_size} does not divide into num_mini_batches "
                f"{self.num_mini_batches} x gradient_accumulation_steps {self.gradient_accumulation_steps}; "
                "pick values whose product divides it")
        for name in ("kl_coef", "vf_coef", "truncation_penalty", "clip_range", "clip_range_value"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if not 0 <= self.lam <= 1 or not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma and lam must be in [0, 1] (got {self.gamma}, {self.lam})")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"top_p must be in (0, 1] and top_k >= 0 (got {self.top_p}, {self.top_k})")
        if self.adaptive_kl and (self.target_kl <= 0 or self.kl_horizon <= 0):
            raise ValueError("adaptive_kl needs target_kl > 0 and kl_horizon > 0")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (got {self.max_steps})")
        if self.reward_clip is not None and not self.reward_clip > 0:
            raise ValueError(f"reward_clip must be > 0 or null (got {self.reward_clip}); clipping the score to "
                             f"+-{self.reward_clip} makes every rollout score the same")
        if self.eval_samples < 0:
            raise ValueError(f"eval_samples must be >= 0 (got {self.eval_samples}); 0 turns the dev evaluation off")
        if self.max_new_tokens_ratio is not None and not self.max_new_tokens_ratio > 0:
            raise ValueError(f"max_new_tokens_ratio must be > 0 or unset (got {self.max_new_tokens_ratio})")
        if self.max_new_tokens_ratio is not None and self.algorithm != "ppo":
            raise ValueError(f"max_new_tokens_ratio: algorithm {self.algorithm} (TRL) has no per-row cap; unset it")
        if self.max_new_tokens_extra < 0:
            raise ValueError(f"max_new_tokens_extra must be >= 0 (got {self.max_new_tokens_extra})")
        if self.max_packed_tokens < 1:
            raise ValueError(f"max_packed_tokens must be >= 1 (got {self.max_packed_tokens})")
        if self.algorithm != "ppo":  # the defaults set PPO's critic up; `--algorithm grpo` still works with them
            changed = {k: getattr(self, k) for k, v in PPO_CRITIC_OFF.items() if getattr(self, k) != v}
            defaults = {f.name: f.default for f in fields(self)}
            if any(getattr(self, k) != defaults[k] for k in changed):  # warn only about values someone set
                logging.getLogger("detoxrl").warning(
                    "%s ignored: algorithm %s has no critic and groups its completions by num_generations",
                    ", ".join(f"{k} {v}" for k, v in changed.items()), self.algorithm)
                for k in changed:
                    setattr(self, k, PPO_CRITIC_OFF[k])
        if self.algorithm == "ppo" and self.bf16:
            raise ValueError("bf16 is read by algorithm grpo/rloo only; PPO takes mixed precision from accelerate "
                             "(accelerate launch --mixed_precision bf16, or the accelerate config)")
        if self.algorithm == "ppo" and self.gradient_checkpointing:
            raise ValueError("gradient_checkpointing is read by algorithm grpo/rloo only; unset it")
        if self.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"vllm_mode must be colocate or server (got {self.vllm_mode})")
        if self.use_vllm and self.algorithm == "ppo":
            raise ConfigError("use_vllm is read by algorithm grpo/rloo only: algorithm ppo (ours) generates with "
                              "transformers; set algorithm grpo or rloo, or unset use_vllm")
        if self.use_vllm and importlib.util.find_spec("vllm") is None:
            raise ConfigError("use_vllm: vllm is not installed; pip install vllm (on a CUDA machine), or unset "
                              "use_vllm to generate with transformers")
        if self.samples_per_prompt < 1 or self.rollout_batch_size % self.samples_per_prompt:
            raise ValueError(f"samples_per_prompt {self.samples_per_prompt} must be >= 1 and divide rollout_batch_size "
                             f"{self.rollout_batch_size}")
        self.critic_config.check(self.samples_per_prompt, self.max_steps)  # the critic's own rules (rl/critics.py)
        super().__post_init__()

    @property
    def critic_config(self) -> CriticConfig:
        """The critic's settings as one section (``critic: {features: ..., replay_steps: ...}`` in a YAML)."""
        return CriticConfig.of(self)

    @property
    def mini_batch_size(self) -> int:
        return self.rollout_batch_size // self.num_mini_batches

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.gradient_accumulation_steps
