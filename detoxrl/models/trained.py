"""Load a detox model ready to generate, with its model card: the one loader of ``detox``,
``Detoxifier`` and ``detox-eval``.

``detoxrl.models.runs.read_run`` finds the weights and the card (``detoxrl.json``) of a reference: a
run folder (SFT or PPO output: its ``merged/`` model, else its ``adapter/``), its ``merged/`` or
``adapter/`` subfolder, a plain model folder, a hub id or an alias (``smollm2``). Here:

* a full model (merged, full fine-tuning, plain folder, hub id) loads through ``load_model``;
* an adapter without a merged sibling is applied to its base (loaded in full precision) with
  ``peft.PeftModel.from_pretrained`` and merged (``merge_and_unload``) for speed; the tokenizer is
  the adapter folder's own when it has one, else the base's.

The card's ``prompt`` is the format the model was trained on and its ``generation`` the decoding
defaults; without a card the caller's ``PromptConfig`` applies (the default picks the format by
model family) and ``GenerationSettings()``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from detoxrl.errors import UserError
from detoxrl.generate import GenerationSettings
from detoxrl.models.runs import RunInfo, read_run
from detoxrl.prompts import PromptConfig, PromptFormatter

log = logging.getLogger("detoxrl")


@dataclass
class TrainedModel:
    """A model ready to generate (eval mode, full precision unless asked), with what its card says."""

    model: Any
    formatter: PromptFormatter
    generation: GenerationSettings  # the card's decoding defaults, else GenerationSettings()
    card: dict  # the whole detoxrl.json ({} without one)
    what: str  # where the model came from, for logs and reports


def load_trained(ref: str, default_prompt: PromptConfig | None = None, dtype: str = "float32") -> TrainedModel:
    """Load ``ref`` (see the module docstring) on the CPU, in eval mode; the caller moves it to its device."""
    from detoxrl.models import loading
    from detoxrl.models.config import DetoxModelConfig

    run = read_run(ref)
    loaded = loading.load_model(DetoxModelConfig(model_name_or_path=run.weights, finetuning="full", dtype=dtype),
                                apply_adapter=False)
    model, tokenizer, what = loaded.model, loaded.tokenizer, loaded.source.describe()
    adapter = run.adapter_to_apply
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserError(f"adapter '{adapter}' does not fit its base '{run.weights}': {str(exc)[:200]}") from exc
        if os.path.isfile(os.path.join(adapter, "tokenizer_config.json")):
            tokenizer = loading.load_tokenizer(adapter)
        what = f"adapter {adapter} on {run.weights}"
    prompt = run.prompt_config() if "prompt" in run.card else (default_prompt or PromptConfig())
    formatter = PromptFormatter(prompt, tokenizer, loaded.family)
    card = f"card: stage {run.card.get('stage', '?')}" if run.card else "no detoxrl.json: default prompt and decoding"
    log.info("detox model: %s (%s, prompt format %s, %s)", what, loaded.family, formatter.format, card)
    return TrainedModel(model.eval(), formatter, run.generation(), run.card, what)
