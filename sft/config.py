"""``DetoxSFTConfig``: transformers' ``Seq2SeqTrainingArguments`` plus the detox loss options.

One config serves both families (the seq2seq trainer reads the generation fields; the causal one
ignores them). Loss fields (exact formulas in ``sft/losses.py``):

* ``loss``: ``ce`` | ``toxic_penalty`` (CE + ``gamma`` x toxic probability mass) | ``toxic_mask``;
* ``mask_strategy``: ``toxic_only`` | ``toxic_context`` (``context_window`` neighbours) | ``inverse_toxic``;
* ``no_span``: what a ``toxic_only``/``toxic_context`` pair with no toxic span does: ``keep`` its
  full loss, or ``skip`` it.

Identity-mapping guard: at every evaluation ``guard_samples`` dev inputs are decoded and the
copy rate, lexicon toxicity rate and ChrF are logged; above ``copy_warn`` a loud warning is logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from transformers import Seq2SeqTrainingArguments

from detoxrl.data import DataConfig


@dataclass
class SFTDataConfig(DataConfig):
    """The SFT stage's data: ``DataConfig`` with the measured 4,000-pair subsample (saved as ``DataConfig``)."""

    section: ClassVar[str] = "DataConfig"
    max_train_pairs: int | None = field(
        default=4000, metadata={"help": "Subsample the train split to at most this many pairs (null: all). 4,000: "
                                "the measured default (docs/sft.md)."})


@dataclass
class DetoxSFTConfig(Seq2SeqTrainingArguments):
    """Training arguments for ``sft/train.py`` (every transformers TrainingArguments field works too)."""

    output_dir: str = field(default="outputs/sft/default",
                            metadata={"help": "Where checkpoints and the final model go (rl/ppo.py starts from "
                                      "outputs/sft/default)."})
    loss: Literal["ce", "toxic_penalty", "toxic_mask"] = field(
        default="toxic_mask", metadata={"help": "ce | toxic_penalty | toxic_mask (see sft/losses.py)."}
    )
    gamma: float = field(default=0.15, metadata={"help": "toxic_penalty weight: L = CE + gamma * mean toxic mass."})
    mask_strategy: Literal["toxic_only", "toxic_context", "inverse_toxic"] = field(
        default="toxic_context", metadata={"help": "toxic_mask strategy: toxic_only | toxic_context | inverse_toxic."}
    )
    context_window: int = field(default=2, metadata={"help": "toxic_context: neighbours kept on each side."})
    no_span: Literal["keep", "skip"] = field(
        default="keep", metadata={"help": "toxic_only/toxic_context pair without a toxic span: keep full loss or skip."}
    )
    max_source_length: int = field(default=128, metadata={"help": "Prompt tokens kept (longer prompts are cut)."})
    max_target_length: int = field(default=96, metadata={"help": "Target tokens kept (longer targets are cut)."})
    eval_max_pairs: int = field(default=256, metadata={"help": "Dev pairs used for eval_loss (0: all)."})
    guard_samples: int = field(default=64, metadata={"help": "Dev inputs decoded by the identity guard per evaluation (0: off)."})
    guard_max_new_tokens: int = field(default=64, metadata={"help": "Longest guard rewrite, in tokens."})
    copy_warn: float = field(default=0.5, metadata={"help": "Warn loudly when the guard's copy rate exceeds this."})
    merge_adapter: bool = field(default=True, metadata={"help": "Also save a merged model (adapter folded into the base)."})
    # Sane defaults for this stage (transformers' own defaults differ).
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate (LoRA default)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Pairs per device per step."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Pairs per device per eval step."})
    max_steps: int = field(default=250, metadata={"help": "Optimizer steps (overrides num_train_epochs when > 0)."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up: steps, or a ratio of max_steps if < 1."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    eval_strategy: str = field(default="steps", metadata={"help": "When to evaluate: no | steps | epoch."})
    eval_steps: float | None = field(default=125, metadata={"help": "Evaluate (and run the guard) every N steps."})
    save_steps: float = field(default=125, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "Loggers: tensorboard | none | ..."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data-loading workers."})
    disable_tqdm: bool | None = field(
        default=False, metadata={"help": "Hide the progress bars (transformers would hide them whenever its logger "
                                 "is quieter than WARNING, which detoxrl's default verbosity is)."})
    dataloader_pin_memory: bool = field(
        default=False, metadata={"help": "Pin batches in page-locked memory (batches of token ids are small; on a "
                                 "CPU-only machine pinning only warns)."})
    seed: int = field(default=42, metadata={"help": "Random seed."})

    def __post_init__(self):
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0 (got {self.gamma})")
        if self.context_window < 0:
            raise ValueError(f"context_window must be >= 0 (got {self.context_window})")
        if self.max_source_length < 1 or self.max_target_length < 1:
            raise ValueError("max_source_length and max_target_length must be >= 1")
        if not 0.0 <= self.copy_warn <= 1.0:
            raise ValueError(f"copy_warn must be in [0, 1] (got {self.copy_warn})")
        if self.guard_samples < 0:
            raise ValueError(f"guard_samples must be >= 0 (got {self.guard_samples})")
        super().__post_init__()
