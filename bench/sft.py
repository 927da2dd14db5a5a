"""SFT benchmark: training tokens/s of our trainer (each loss) against TRL's plain ``SFTTrainer``,
and (``--quality``) the dev copy rate, lexicon toxicity and ChrF for ``ce`` and each mask strategy.

Speed: both sides train the default config's model (SmolLM2-135M-Instruct, LoRA r16 all-linear),
on the same ``steps x batch`` ParaDetox pairs for exactly one epoch, with the same prompt strings
(chat template), batch size, learning rate and ``gradient_checkpointing=False``; TRL gets the pairs
as prompt/completion text with its completion-only loss. Tokens = prompt + completion tokens of
those pairs (identical on both sides), divided by the wall time of ``trainer.train()``.

    python bench/sft.py                      # speed, 20 steps of 16
    python bench/sft.py --quality --steps 250  # + dev metrics per loss (about 25 min per loss on CPU)
    python bench/sft.py --losses ce --finetuning lora qlora --no-trl   # QLoRA vs LoRA speed (what auto picks)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from detoxrl.config import DetoxParser  # noqa: E402
from detoxrl.data import group_references, load_detox_data  # noqa: E402
from detoxrl.log import setup_logging  # noqa: E402
from detoxrl.models.loading import load_model  # noqa: E402
from detoxrl.prompts import PromptFormatter  # noqa: E402
from detoxrl.vocab import load_lexicon, toxic_token_ids  # noqa: E402
from sft.features import FeatureBuilder, PairCollator  # noqa: E402
from sft.train import CONFIGS  # noqa: E402
from sft.trainer import DetoxCausalTrainer, IdentityGuard  # noqa: E402

LOSSES = {"ce": [], "toxic_penalty": [], "toxic_mask/toxic_only": ["toxic_only"],
          "toxic_mask/toxic_context": ["toxic_context"], "toxic_mask/inverse_toxic": ["inverse_toxic"]}


def configs(extra: list[str]):
    return DetoxParser(CONFIGS, prog="bench/sft.py").parse(["--config", "configs/sft/default.yaml", "--report_to", "none",
                                                             "--eval_strategy", "no", "--save_strategy", "no",
                                                             "--disable_tqdm", "true", *extra])


def ours(loss_name: str, steps: int, batch: int, quality: bool, finetuning: str | None = None) -> dict:
    loss, strategy = (loss_name.split("/") + [None])[:2]
    extra = ["--loss", loss, "--max_steps", str(steps), "--per_device_train_batch_size", str(batch)]
    extra += ["--finetuning", finetuning] if finetuning else []
    data_cfg, vocab_cfg, model_cfg, prompt_cfg, args = configs(extra + (["--mask_strategy", strategy] if strategy else []))
    args.output_dir = tempfile.mkdtemp()
    args.label_names, args.remove_unused_columns = ["labels"], False
    data = load_detox_data(data_cfg)
    pairs = data.train[: steps * batch]
    lexicon = load_lexicon(vocab_cfg)
    loaded = load_model(model_cfg)
    fmt = PromptFormatter(prompt_cfg, loaded.tokenizer, loaded.family)
    features = FeatureBuilder(fmt, lexicon, args.loss, args.mask_strategy, args.context_window, args.no_span,
                              args.max_source_length, args.max_target_length).encode_all(pairs)
    tokens = sum(len(f["input_ids"]) for f in features)
    guard = None
    if quality:
        sources, refs = group_references(data.dev, 200, seed=0)
        guard = IdentityGuard(fmt, lexicon, sources, refs, 64)
    trainer = DetoxCausalTrainer(model=loaded.model, args=args, train_dataset=features,
                                 data_collator=PairCollator(loaded.tokenizer.pad_token_id, "causal"),
                                 processing_class=loaded.tokenizer, family="causal", guard=guard,
                                 toxic_ids=torch.tensor(toxic_token_ids(lexicon, loaded.tokenizer).ids, dtype=torch.long))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    out = {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens}
    if guard:
        out.update(guard.run(loaded.model))
    return out


def trl_sft(steps: int, batch: int) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data_cfg, vocab_cfg, model_cfg, prompt_cfg, args = configs(["--max_steps", str(steps)])
    data = load_detox_data(data_cfg)
    pairs = data.train[: steps * batch]
    loaded = load_model(model_cfg)
    fmt = PromptFormatter(prompt_cfg, loaded.tokenizer, loaded.family)
    ds = Dataset.from_dict({"prompt": [fmt.prompt(p.source) for p in pairs],
                            "completion": [fmt.target(p.target) for p in pairs]})
    cfg = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch,
                    learning_rate=args.learning_rate, lr_scheduler_type="cosine", gradient_checkpointing=False,
                    use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=10,
                    max_length=args.max_source_length + args.max_target_length, packing=False,
                    completion_only_loss=True, dataset_num_proc=None)
    trainer = SFTTrainer(model=loaded.model, args=cfg, train_dataset=ds, processing_class=loaded.tokenizer)
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--quality", action="store_true", help="also train ce + each mask strategy and score the dev set")
    p.add_argument("--losses", nargs="+", default=list(LOSSES))
    p.add_argument("--finetuning", nargs="+", default=[None],
                   help="fine-tuning types to time (e.g. lora qlora); default: the config's (auto)")
    p.add_argument("--trl", action=argparse.BooleanOptionalAction, default=True, help="also time TRL's SFTTrainer")
    a = p.parse_args()
    setup_logging()
    torch.manual_seed(0)
    results = {"trl SFTTrainer (ce)": trl_sft(a.steps, a.batch)} if a.trl else {}
    for finetuning in a.finetuning:
        for name in a.losses:
            label = f"detoxrl {name}" + (f" [{finetuning}]" if finetuning else "")
            results[label] = ours(name, a.steps, a.batch, a.quality, finetuning)
    base = next(iter(results.values()))["tokens_per_s"]
    print(f"\nSFT benchmark: {a.steps} steps x {a.batch} pairs, SmolLM2-135M-Instruct LoRA r16 all-linear, "
          f"{torch.get_num_threads()} threads")
    print(f"{'trainer':34} {'tokens/s':>9} {'vs row 1':>8} {'seconds':>8}" +
          (f" {'copy':>6} {'lex-tox':>8} {'in-tox':>7} {'ChrF':>6}" if a.quality else ""))
    for name, r in results.items():
        row = f"{name:34} {r['tokens_per_s']:9.1f} {r['tokens_per_s'] / base:7.2f}x {r['seconds']:8.1f}"
        if "copy_rate" in r:
            row += (f" {r['copy_rate']:6.1%} {r['lexicon_toxicity']:8.1%} {r['input_lexicon_toxicity']:7.1%}"
                    f" {r['chrf']:6.3f}")
        print(row)


if __name__ == "__main__":
    main()
