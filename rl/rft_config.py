"""``RFTConfig``: the options of rejection-sampling fine-tuning (``rl/rft.py``, ``algorithm: rft``).

One round: ``sources_per_round`` training sources (those the SFT run never trained on first) x
``samples_per_source`` samples from the current model (``temperature``, ``top_p``, ``max_new_tokens``) ->
the composite reward (minus ``truncation_penalty`` for a sample without EOS) -> per source, the best sample
if its score >= ``min_reward``, else nothing (``fallback: skip``) or the source's first human reference
(``fallback: reference``) -> the supervised stage (``sft/train.py`` with ``sft_config`` and the ``sft_*``
fields: loss, learning rate, batch size, epochs, any other field as ``sft_overrides: [name=value]``) trains
a fresh adapter on the kept pairs and merges it -> the next round samples from that model.

The defaults are the measured run of docs/rft.md (``configs/rl/rft.yaml`` adds only ``algorithm: rft`` and the
shared reward). Not a ``TrainingArguments``: the rounds' training arguments belong to the supervised stage, which each round
runs as it is (its checkpoints give the mid-round resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RFTConfig:
    """Every field is a YAML key and a CLI flag (see configs/rl/rft.yaml)."""

    model_name_or_path: str = field(
        default="outputs/sft/default", metadata={"help": "The SFT run the first round samples from (a run folder)."})
    output_dir: str = field(default="outputs/rl/rft", metadata={"help": "Where rounds and the final model go."})
    algorithm: Literal["rft"] = field(
        default="rft", metadata={"help": "rft (lets `rl/ppo.py --config` of this file hand over to rl/rft.py)."})
    rounds: int = field(default=2, metadata={"help": "Sample -> score -> select -> SFT rounds."})
    sources_per_round: int = field(
        default=1024, metadata={"help": "Training sources sampled per round (sources the SFT run never saw first)."})
    samples_per_source: int = field(default=4, metadata={"help": "k: samples per source; the best one may be kept."})
    min_reward: float = field(
        default=0.5, metadata={"help": "Keep a source's best sample when its score (reward - truncation penalty) "
                               "is >= this."})
    fallback: Literal["skip", "reference"] = field(
        default="reference", metadata={"help": "A source whose best sample is below min_reward: skip it, or train on its "
                                  "first human reference instead."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1: off)."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest sample, in tokens."})
    gen_batch_size: int = field(
        default=32, metadata={"help": "Sequences per generate call (samples_per_source of them per source)."})
    truncation_penalty: float = field(
        default=0.5, metadata={"help": "Subtracted from the reward of a sample that ended without EOS (as in PPO)."})
    # the supervised step of every round
    sft_config: str = field(
        default="configs/sft/default.yaml",
        metadata={"help": "The supervised stage's config the rounds start from (LoRA settings, lengths, ...)."})
    sft_loss: Literal["ce", "toxic_penalty", "toxic_mask"] = field(
        default="toxic_mask", metadata={"help": "Loss of the rounds' SFT (toxic_mask: the SFT default's, which weighs "
                                        "the rewritten toxic spans; ce: every target token alike)."})
    sft_learning_rate: float = field(
        default=5e-5, metadata={"help": "Peak learning rate of each round's SFT (5e-5: full fine-tuning's, "
                                "bench/sft_defaults.py)."})
    sft_batch_size: int = field(default=16, metadata={"help": "Pairs per SFT step."})
    sft_epochs: float = field(default=1.0, metadata={"help": "Passes over a round's kept pairs."})
    sft_save_steps: int = field(default=20, metadata={"help": "SFT checkpoint every N steps (mid-round resume)."})
    sft_eval_pairs: int = field(
        default=64, metadata={"help": "Dev pairs written beside a round's data for its eval_loss (>= 1)."})
    sft_overrides: list[str] = field(
        default_factory=lambda: ["finetuning=full"],
        metadata={"help": "Any other supervised-stage field as name=value (e.g. lora_r=8). Default: full fine-tuning "
                  "(faster per step than LoRA on a CPU)."})
    # evaluation, logging, checkpoints
    eval_samples: int = field(
        default=64, metadata={"help": "Dev sources decoded greedily before and after the rounds (0: off)."})
    save_total_limit: int = field(
        default=1, metadata={"help": "Round checkpoints (models) kept; the newest is always kept."})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard | none (round stats and SFT logs)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "latest / true: continue the run in output_dir (also mid-round), or a "
                                "checkpoint-<round> folder."})
    seed: int = field(default=42, metadata={"help": "Seed: round r samples with seed + r and trains with seed + r."})

    def __post_init__(self):
        for name in ("rounds", "sources_per_round", "samples_per_source", "max_new_tokens", "gen_batch_size",
                     "sft_batch_size", "sft_save_steps", "sft_eval_pairs", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.truncation_penalty < 0 or self.eval_samples < 0:
            raise ValueError("truncation_penalty and eval_samples must be >= 0")
        if not self.sft_epochs > 0:
            raise ValueError(f"sft_epochs must be > 0 (got {self.sft_epochs})")
        for item in self.sft_overrides:
            if "=" not in item or not item.split("=", 1)[0].strip():
                raise ValueError(f"sft_overrides: '{item}' is not name=value (e.g. lora_r=8)")
            if item.split("=", 1)[0].strip() in RESERVED_SFT_FIELDS:
                raise ValueError(f"sft_overrides: '{item.split('=', 1)[0].strip()}' is set by RFT itself; use its "
                                 "sft_* field or remove it")


# Supervised-stage fields each round sets itself (from the fields above or the round's data and model).
RESERVED_SFT_FIELDS = frozenset({
    "dataset", "dataset_format", "model_name_or_path", "output_dir", "resume_from_checkpoint", "loss",
    "learning_rate", "per_device_train_batch_size", "num_train_epochs", "max_steps", "save_steps", "seed",
    "max_train_pairs", "deduplicate", "eval_strategy", "guard_samples", "eval_max_pairs", "report_to"})
