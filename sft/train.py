"""Supervised detox stage: ``accelerate launch sft/train.py --config configs/sft/default.yaml``.

Reads top to bottom: parse configs -> data -> toxic vocabulary -> model -> features -> trainer
(seq2seq or causal) -> train (resumable) -> final guard on dev -> save adapter, merged model,
tokenizer, resolved config, ``detoxrl.json`` and a model card. Also installed as ``detox-sft``.

Runs as one process, under ``accelerate launch`` (configs in ``configs/accelerate/``), and as 2+
CPU processes with ``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 sft/train.py ...``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a file (accelerate launch sft/train.py): import the project, not sibling modules.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import logging
import random
import time
from dataclasses import dataclass

import torch

from detoxrl.config import DetoxParser, run_cli, save_resolved_config
from detoxrl.data import group_references, load_detox_data
from detoxrl.distributed import params_sharded
from detoxrl.errors import UserError
from detoxrl.generate import GenerationSettings
from detoxrl.log import setup_logging
from detoxrl.models.config import DetoxModelConfig
from detoxrl.models.loading import check_model_config, load_model
from detoxrl.resume import resolve_resume
from detoxrl.prompts import PromptConfig, PromptFormatter
from detoxrl.vocab import VocabConfig, load_lexicon, toxic_token_ids
from sft.config import DetoxSFTConfig, SFTDataConfig
from sft.features import FeatureBuilder, PairCollator
from detoxrl.hub_push import claim_push, push_run
from detoxrl.runcard import build_card, write_card
from sft.save import save_folder, save_merged, save_sharded, write_model_card
from sft.trainer import DetoxCausalTrainer, DetoxSeq2SeqTrainer, IdentityGuard

log = logging.getLogger("detoxrl")
CONFIGS = [SFTDataConfig, VocabConfig, DetoxModelConfig, PromptConfig, DetoxSFTConfig]


def parser() -> DetoxParser:
    """The stage's parser: ``parser().parse(argv)`` for a command line, ``parser().parse_mapping(values, yaml)`` from
    Python."""
    return DetoxParser(CONFIGS, prog="sft/train.py")


def parse(args=None):
    return parser().parse(args)


def check_quantization(model_cfg: DetoxModelConfig) -> None:
    """QLoRA / 8-bit need bitsandbytes: say so in one line before any model is loaded."""
    if not model_cfg.quantized:
        return
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(f"finetuning: {model_cfg.finetuning} needs bitsandbytes: pip install 'bitsandbytes>=0.50'") from None


def run(args=None) -> dict:
    """The stage from a command line (``args``; default ``sys.argv``)."""
    setup_logging()
    return run_configs(*parse(args))


def run_configs(data_cfg: SFTDataConfig, vocab_cfg: VocabConfig, model_cfg: DetoxModelConfig, prompt_cfg: PromptConfig,
                train_args: DetoxSFTConfig) -> dict:
    """The stage from its parsed configs (``parse``'s five, in order): train, check, save; returns the summary."""
    resume = resolve_resume(train_args.resume_from_checkpoint, train_args.output_dir, kind="sft")
    push = claim_push(train_args)
    trainer = build_sft(data_cfg, vocab_cfg, model_cfg, prompt_cfg, train_args)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    minutes = (time.perf_counter() - start) / 60
    summary = save_sft_run(trainer, result.training_loss, minutes)
    if push and trainer.is_world_process_zero():
        push_run(train_args.output_dir, train_args.hub_model_id, train_args.hub_private_repo, train_args.hub_token,
                 "detoxrl sft")
    return summary


@dataclass
class SFTRun:
    """What ``build_sft`` read besides the trainer, for ``save_sft_run`` (``trainer.sft_run``)."""

    configs: tuple
    formatter: PromptFormatter
    family: str
    train_pairs: int
    mask_stats: dict
    guard: IdentityGuard | None


def build_sft(data_cfg: SFTDataConfig, vocab_cfg: VocabConfig, model_cfg: DetoxModelConfig, prompt_cfg: PromptConfig,
              train_args: DetoxSFTConfig):
    """The supervised stage's trainer (``DetoxSeq2SeqTrainer`` or ``DetoxCausalTrainer``), ready to ``train()``:
    checks before any model loads, then the data, the toxic vocabulary, the model, the features, the guard."""
    check_quantization(model_cfg)
    check_model_config(model_cfg.model_name_or_path)  # a broken config.json fails before the data loads
    train_args.label_names = ["labels"]
    train_args.prediction_loss_only = True
    train_args.remove_unused_columns = False

    data = load_detox_data(data_cfg)
    lexicon = load_lexicon(vocab_cfg)
    from transformers import set_seed

    set_seed(train_args.seed)  # before the adapter is initialised (the Trainer seeds only after the model exists)
    loaded = load_model(model_cfg, gradient_checkpointing=train_args.gradient_checkpointing)
    model, tok, family = loaded.model, loaded.tokenizer, loaded.family
    formatter = PromptFormatter(prompt_cfg, tok, family)
    toxic = toxic_token_ids(lexicon, tok)
    log.info("%s", toxic.report())

    builder = FeatureBuilder(formatter, lexicon, train_args.loss, train_args.mask_strategy, train_args.context_window,
                             train_args.no_span, train_args.max_source_length, train_args.max_target_length)
    train_features = builder.encode_all(data.train)
    log.info("%s", builder.stats.format())
    mask_stats = builder.stats.as_dict()
    eval_pairs = data.dev
    if 0 < train_args.eval_max_pairs < len(eval_pairs):  # a seeded sample: the file is not shuffled
        eval_pairs = random.Random(train_args.seed).sample(eval_pairs, train_args.eval_max_pairs)
    eval_features = FeatureBuilder(formatter, lexicon, "ce", max_source_length=train_args.max_source_length,
                                   max_target_length=train_args.max_target_length).encode_all(eval_pairs)
    guard = None
    if train_args.guard_samples:
        sources, references = group_references(data.dev, train_args.guard_samples, train_args.seed)
        guard = IdentityGuard(formatter, lexicon, sources, references, train_args.guard_max_new_tokens,
                              train_args.copy_warn)

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    collator = PairCollator(tok.pad_token_id, family, getattr(base.config, "decoder_start_token_id", None))
    trainer_cls = DetoxSeq2SeqTrainer if family == "seq2seq" else DetoxCausalTrainer
    trainer = trainer_cls(model=model, args=train_args, train_dataset=train_features, eval_dataset=eval_features,
                          data_collator=collator, processing_class=tok, toxic_ids=torch.tensor(toxic.ids, dtype=torch.long),
                          guard=guard, family=family)
    # the logger, not trainer.log: a Trainer log before train() opens tensorboard's writer in ./runs, not output_dir
    log.info("toxic-mask statistics: %s", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in mask_stats.items() if isinstance(v, (int, float))))
    trainer.sft_run = SFTRun((data_cfg, vocab_cfg, model_cfg, prompt_cfg, train_args), formatter, family, len(data.train),
                             mask_stats, guard)
    return trainer


def save_sft_run(trainer, train_loss: float, minutes: float) -> dict:
    """The final evaluation (and guard), then adapter/, merged/, resolved config, detoxrl.json and the model card in
    ``output_dir``; returns the summary. Collective under ZeRO-3/FSDP (every process calls it)."""
    r = trainer.sft_run
    data_cfg, vocab_cfg, model_cfg, prompt_cfg, train_args = r.configs
    tok, family, formatter, mask_stats, guard = trainer.processing_class, r.family, r.formatter, r.mask_stats, r.guard
    metrics = final_eval_metrics(trainer)
    out = train_args.output_dir
    summary = {"train_loss": train_loss, "train_minutes": round(minutes, 2), **mask_stats,
               **{k: v for k, v in metrics.items() if isinstance(v, float)}}
    adapter_dir = os.path.join(out, "adapter")
    sharded = params_sharded(trainer.accelerator)
    if sharded:  # ZeRO-3/FSDP: transformers gathers the weights (collective), the merge reloads the base
        save_sharded(trainer, tok, adapter_dir)
    if trainer.is_world_process_zero():
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if not sharded:
            save_folder(unwrapped, tok, adapter_dir)
        if train_args.merge_adapter and model_cfg.finetuning != "full":
            save_merged(unwrapped, tok, model_cfg, family, adapter_dir, os.path.join(out, "merged"), reload=sharded)
        save_resolved_config(os.path.join(out, "resolved_config.yaml"), data_cfg, vocab_cfg, model_cfg, prompt_cfg,
                             train_args)
        write_card(out, build_card(family, model_cfg.model_name_or_path, prompt_cfg, formatter.format,
                                   GenerationSettings(max_new_tokens=train_args.guard_max_new_tokens),
                                   {"finetuning": model_cfg.finetuning, "stage": "sft", "metrics": summary}))
        card_metrics = {k.removeprefix("eval_"): v for k, v in metrics.items()
                        if k in ("eval_loss", "eval_copy_rate", "eval_lexicon_toxicity", "eval_input_lexicon_toxicity",
                                 "eval_chrf")}
        write_model_card(out, {"name": os.path.basename(os.path.abspath(out)), "base": model_cfg.model_name_or_path,
                         "family": family, "finetuning": model_cfg.finetuning, "loss": _loss_name(train_args),
                         "prompt_format": formatter.format, "train_pairs": f"{r.train_pairs:,}",
                         "steps": trainer.state.global_step, "train_minutes": minutes,
                         "guard_n": len(guard.sources) if guard else 0}, card_metrics)
        log.info("saved to %s: adapter/, %sREADME.md, detoxrl.json (%.1f min)", out,
                 "merged/, " if train_args.merge_adapter and model_cfg.finetuning != "full" else "", minutes)
    return summary


def final_eval_metrics(trainer) -> dict:
    """The metrics of an evaluation (and guard) at the last step, run now unless training just did one.

    The decision rests on ``eval_loss`` alone, which every rank logs, so all ranks take the same
    branch (only the main process runs the guard and logs its metrics).
    """
    step = trainer.state.global_step
    logged: dict = {}
    for entry in trainer.state.log_history:
        if entry.get("step") == step:
            logged.update({k: v for k, v in entry.items() if k.startswith("eval_")})
    return logged if "eval_loss" in logged else trainer.evaluate()


def _loss_name(a: DetoxSFTConfig) -> str:
    if a.loss == "toxic_penalty":
        return f"toxic_penalty (gamma={a.gamma})"
    if a.loss == "toxic_mask":
        return f"toxic_mask ({a.mask_strategy}, window={a.context_window}, no_span={a.no_span})"
    return "ce"


def main(args=None) -> int:
    return run_cli(run, args)


if __name__ == "__main__":
    raise SystemExit(main())
