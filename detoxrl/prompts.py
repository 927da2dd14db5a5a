"""The one prompt format, shared by SFT, RL, evaluation and inference.

Three formats, chosen by ``prompt_format`` (``auto`` picks by model family and tokenizer):

* ``prefix`` (seq2seq default): ``"detoxify: " + text``. Without a task prefix mT5 learns to copy
  its input, the failure the seed setups report most.
* ``chat`` (causal models whose tokenizer has a chat template, e.g. SmolLM2-Instruct): the
  template applied to ``[system instruction, user text]`` with the generation prompt open.
* ``instruction`` (causal base models: LLaMA-2, Alpaca, GPT-2)::

      ### Instruction:
      <instruction>

      ### Input:
      <text>

      ### Response:

Targets: seq2seq targets are the plain text (the tokenizer appends EOS); causal targets are the
text followed by the tokenizer's EOS (``<|im_end|>`` for SmolLM2), so generation learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DEFAULT_SYSTEM = (
    "You rewrite toxic text into polite, non-toxic text that keeps the meaning. "
    "Reply with the rewritten text only."
)
DEFAULT_INSTRUCTION = "Rewrite the following text so that it is polite and non-toxic, keeping its meaning."
INSTRUCTION_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{text}\n\n### Response:\n"


@dataclass
class PromptConfig:
    """How inputs are turned into model prompts (the same for every stage)."""

    prompt_format: Literal["auto", "prefix", "chat", "instruction"] = field(
        default="auto",
        metadata={"help": "auto: prefix for seq2seq, chat for causal tokenizers with a chat template, "
                  "else instruction."},
    )
    task_prefix: str = field(default="detoxify: ", metadata={"help": "Prefix for the seq2seq format."})
    system_prompt: str = field(default=DEFAULT_SYSTEM, metadata={"help": "System message of the chat format."})
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "Instruction of the instruction format."})


def resolve_format(cfg: PromptConfig, tokenizer, family: str) -> str:
    """The concrete format ``auto`` stands for, and a check that it fits the model family."""
    fmt = cfg.prompt_format
    if fmt == "auto":
        if family == "seq2seq":
            return "prefix"
        return "chat" if getattr(tokenizer, "chat_template", None) else "instruction"
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_format: chat needs a tokenizer with a chat template; use instruction")
    return fmt


def build_prompt(text: str, cfg: PromptConfig, tokenizer, family: str) -> str:
    """The prompt string for one input ``text``."""
    fmt = resolve_format(cfg, tokenizer, family)
    if fmt == "prefix":
        return f"{cfg.task_prefix}{text}"
    if fmt == "instruction":
        return INSTRUCTION_TEMPLATE.format(instruction=cfg.instruction, text=text)
    messages = [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_target(text: str, tokenizer, family: str) -> str:
    """The training target string for one rewrite (causal: followed by EOS)."""
    if family == "seq2seq":
        return text
    return text + (tokenizer.eos_token or "")


def prompt_adds_special_tokens(cfg: PromptConfig, tokenizer, family: str) -> bool:
    """Whether to tokenize the prompt with ``add_special_tokens=True``.

    A rendered chat template already holds its special tokens; the other formats want the
    tokenizer's own (BOS for Llama, EOS for T5 inputs).
    """
    return resolve_format(cfg, tokenizer, family) != "chat"


@dataclass
class PromptFormatter:
    """``build_prompt``/``build_target`` bound to one tokenizer and family."""

    cfg: PromptConfig
    tokenizer: object
    family: str

    @property
    def format(self) -> str:
        return resolve_format(self.cfg, self.tokenizer, self.family)

    def prompt(self, text: str) -> str:
        return build_prompt(text, self.cfg, self.tokenizer, self.family)

    def target(self, text: str) -> str:
        return build_target(text, self.tokenizer, self.family)

    def prompt_ids(self, text: str, **kwargs) -> list[int]:
        """Token ids of one prompt, with the special tokens the prompt format calls for (kwargs: truncation)."""
        special = prompt_adds_special_tokens(self.cfg, self.tokenizer, self.family)
        return self.tokenizer(self.prompt(text), add_special_tokens=special, **kwargs)["input_ids"]

    def encode_prompts(self, texts: list[str], **kwargs):
        """Tokenize prompts for generation (left padding for causal models)."""
        if self.family == "causal":
            self.tokenizer.padding_side = "left"
        return self.tokenizer(
            [self.prompt(t) for t in texts],
            add_special_tokens=prompt_adds_special_tokens(self.cfg, self.tokenizer, self.family),
            return_tensors="pt",
            padding=True,
            **kwargs,
        )
