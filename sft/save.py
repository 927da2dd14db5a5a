"""Writing the SFT result: adapter, merged model, tokenizer, ``detoxrl.json`` and the model card.

Layout of ``output_dir`` after training::

    adapter/          the PEFT adapter (or the full model for finetuning: full) + tokenizer
    merged/           the adapter folded into a full-precision base + tokenizer (loads with plain
                      transformers); for qlora/lora8bit the base is reloaded unquantized first
    detoxrl.json      what inference needs: family, prompt config, generation settings, base model
    resolved_config.yaml, README.md (model card with the dev metrics)

Each folder is written to a temp name and renamed, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import os
import shutil

from detoxrl.io import atomic_directory



def save_folder(model, tokenizer, path: str) -> None:
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def save_sharded(trainer, tokenizer, path: str) -> None:
    """``trainer.save_model`` (every process calls it: transformers gathers ZeRO-3/FSDP weights) into a folder the
    main process then renames to ``path`` in one step."""
    tmp = path + ".tmp"
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(tmp)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    trainer.accelerator.wait_for_everyone()


def save_merged(model, tokenizer, model_cfg, family: str, adapter_dir: str, path: str, reload: bool = False) -> None:
    """Fold the adapter into a full-precision base and save it (quantized bases, and ``reload``: bases sharded by
    ZeRO-3/FSDP, are reloaded unquantized and whole, with the saved adapter)."""
    from dataclasses import replace

    from peft import PeftModel

    from detoxrl.models.loading import load_model

    if model_cfg.quantized or reload:
        base = load_model(replace(model_cfg, finetuning="full", load_in_4bit=False, load_in_8bit=False),
                          apply_adapter=False).model
        model = PeftModel.from_pretrained(base, adapter_dir)
    save_folder(model.merge_and_unload(), tokenizer, path)


def write_model_card(output_dir: str, info: dict, metrics: dict) -> None:
    """The SFT run's card (``detoxrl/model_card.py``): settings, dev metrics and how to load it."""
    from detoxrl.model_card import PROJECT, cell, table, write_model_card as write

    auto = "AutoModelForSeq2SeqLM" if info["family"] == "seq2seq" else "AutoModelForCausalLM"
    use = (f"```python\nfrom transformers import AutoTokenizer, {auto}\nmodel = {auto}.from_pretrained(\"merged\")\n"
           "tokenizer = AutoTokenizer.from_pretrained(\"merged\")\n```\nThe prompt must be built the way training "
           "built it: see `detoxrl.json` (`prompt`).")
    metric_text = (table(["metric", "value"], [[k, cell(v)] for k, v in metrics.items()]) +
                   "\n\nCopy rate: output equals input after lowercasing and dropping punctuation. Lexicon toxicity: "
                   "share\nof texts with a word from the toxic word list. ChrF: sacrebleu chrF against all references, "
                   "0-1.")
    write(output_dir, info["base"], [], f"Trained with {PROJECT}'s supervised stage.", {
        "base model": f"`{info['base']}` ({info['family']})", "fine-tuning": info["finetuning"], "loss": info["loss"],
        "prompt format": info["prompt_format"], "train pairs": info["train_pairs"], "steps": info["steps"],
        "training time": f"{info['train_minutes']:.1f} min"},
        [(f"Dev metrics ({info['guard_n']} dev inputs, greedy decoding)", metric_text), ("Use", use)])
