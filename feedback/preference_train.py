"""Preference training on the store's pairs (``feedback/preference.py``): ``verdicts: dpo`` and ``verdicts: orpo``.

* **DPO** (TRL's ``DPOTrainer``), causal models: a fresh LoRA adapter on the current model; the reference is the
  same model with the adapter off, as TRL does it when it gets a ``peft_config`` and no ``ref_model``.
* **ORPO** (TRL's experimental ``ORPOTrainer``), causal and seq2seq models: the odds-ratio term on the pair plus
  the chosen text's likelihood, no reference model; a fresh LoRA adapter on the current model. It is what the
  strongest TextDetox 2024 system trained with (mt0-xl-detox-orpo).

The prompts are the model's own (``detoxrl.prompts``: the chat template of a causal run, the task prefix of a
seq2seq one), so the pairs train exactly what decoding sees. The new version is saved as an SFT run is
(``adapter/``, ``merged/``, ``detoxrl.json``).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from dataclasses import fields

from detoxrl.errors import UserError

log = logging.getLogger("detoxrl.feedback")
METHODS = ("dpo", "orpo")


def check_method(method: str, family: str, ref: str) -> None:
    """One line before any model loads when ``method`` cannot train ``family``."""
    if method == "dpo" and family != "causal":
        raise UserError(f"verdicts: dpo trains causal models only (TRL's DPOTrainer), and '{ref}' is seq2seq; use "
                        "verdicts: orpo, which takes encoder-decoder models")


def run_preference_step(method: str, cfg, pairs, base, out: str) -> dict:
    """Train ``method`` (``dpo`` | ``orpo``) on ``pairs`` (``PreferencePair``) from ``base`` (``CurrentModel``) into
    ``out``; returns the step's metrics."""
    import torch
    from datasets import Dataset

    from detoxrl.models.config import DetoxModelConfig
    from detoxrl.models.loading import load_model, peft_config
    from detoxrl.prompts import PromptFormatter

    check_method(method, base.family, base.ref)
    if not pairs:
        raise UserError(f"verdicts: {method} needs preference pairs (a rejected rewrite with a correction, or an "
                        "accepted and a rejected rewrite of the same input); the store has none")
    model_cfg = DetoxModelConfig(model_name_or_path=base.weights, finetuning="lora", lora_r=cfg.kto_lora_r,
                                 lora_alpha=cfg.kto_lora_alpha, lora_target_modules=list(cfg.kto_lora_target_modules))
    loaded = load_model(model_cfg, apply_adapter=False)
    tok, family = loaded.tokenizer, loaded.family
    formatter = PromptFormatter(base.prompt_config(), tok, family)
    # TRL appends EOS to both completions of a causal model, and tokenises a seq2seq model's as labels
    rows = [{"prompt": formatter.prompt(p.input), "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    random.Random(cfg.seed).shuffle(rows)
    common = dict(output_dir=os.path.join(out, f"{method}-run"), max_steps=cfg.pref_max_steps,
                  learning_rate=cfg.pref_learning_rate, per_device_train_batch_size=cfg.pref_batch_size,
                  beta=cfg.pref_beta, max_length=cfg.pref_max_length, bf16=False, fp16=False,
                  use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no",
                  logging_steps=max(1, cfg.pref_max_steps // 10), seed=cfg.seed, disable_tqdm=True,
                  dataloader_num_workers=0, warmup_steps=0.1, lr_scheduler_type="cosine", activation_checkpointing=False)
    peft = peft_config(model_cfg, loaded.model, family)
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=loaded.model, args=DPOConfig(**common),
                             train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft)
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer = ORPOTrainer(model=loaded.model, args=ORPOConfig(**common, max_completion_length=cfg.pref_max_length,
                                                                  is_encoder_decoder=family == "seq2seq"),
                              train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft)
    log.info("%s step: %d preference pairs, %d steps of %d (beta %g)", method.upper(), len(rows), cfg.pref_max_steps,
             cfg.pref_batch_size, cfg.pref_beta)
    result, minutes, last = train_adapter(trainer, tok, out, f"{method}-run")
    metrics = {"train_loss": result.training_loss, "train_minutes": round(minutes, 2), "pairs": len(rows),
               "steps": trainer.state.global_step}
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "log_odds_ratio"):
        if key in last:
            metrics[f"last_{key.replace('/', '_')}"] = last[key]
    write_step_card(out, base, family, formatter.format, f"feedback-{method}", metrics)
    return metrics



def train_adapter(trainer, tok, out: str, run_dir: str):
    """Train a TRL trainer's fresh LoRA adapter, save ``adapter/`` and ``merged/`` in ``out`` and drop its run
    folder; returns ``(train output, minutes, the last logged losses)``. Shared by the KTO, DPO and ORPO steps."""
    from sft.save import save_folder

    start = time.perf_counter()
    result = trainer.train()
    minutes = (time.perf_counter() - start) / 60
    model = trainer.accelerator.unwrap_model(trainer.model)
    save_folder(model, tok, os.path.join(out, "adapter"))
    save_folder(model.merge_and_unload(), tok, os.path.join(out, "merged"))
    shutil.rmtree(os.path.join(out, run_dir), ignore_errors=True)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    return result, minutes, logged[-1] if logged else {}


def write_step_card(out: str, base, family: str, prompt_format: str, stage: str, metrics: dict) -> None:
    """``out/detoxrl.json`` of a verdict step's model: the base's prompt and decoding, the step's metrics."""
    from detoxrl.generate import GenerationSettings
    from detoxrl.runcard import build_card, write_card

    generation = GenerationSettings(**{k: v for k, v in (base.card.get("generation") or {}).items()
                                       if k in {f.name for f in fields(GenerationSettings)}})
    write_card(out, build_card(family, base.card.get("base_model") or base.weights, base.prompt_config(),
                               prompt_format, generation, {"finetuning": "lora", "stage": stage, "metrics": metrics}))
