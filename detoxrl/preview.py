"""``detox-preview``: the data preview plus model smoke check on the embedded defaults.

It proves the ground both stages stand on, end to end and offline:

1. loads, cleans and splits the configured data and prints the counts and a few pairs;
2. builds the toxic vocabulary and maps it onto the policy tokenizer (coverage);
3. loads the policy with the configured fine-tuning type, counts trainable parameters and
   rewrites a few dev inputs with the one prompt builder (an untrained policy: a smoke check,
   not a result);
4. loads the similarity encoder and scores those rewrites against their inputs.

Everything it found is written to ``<output_dir>/preview.json`` beside the resolved config.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

from detoxrl.config import DetoxParser, run_cli, save_resolved_config
from detoxrl.data import DataConfig, load_detox_data
from detoxrl.generate import GenerationSettings, generate_rewrites
from detoxrl.io import atomic_write_text
from detoxrl.log import setup_logging
from detoxrl.models.config import DetoxModelConfig
from detoxrl.models.embedded import MINILM_ID
from detoxrl.models.loading import load_model
from detoxrl.models.refs import resolve_model
from detoxrl.prompts import PromptConfig, PromptFormatter
from detoxrl.vocab import VocabConfig, load_lexicon, toxic_token_ids

log = logging.getLogger("detoxrl")


@dataclass
class PreviewConfig:
    """What the preview shows and where it writes."""

    output_dir: str = field(default="outputs/preview", metadata={"help": "Folder for preview.json and the resolved config."})
    num_samples: int = field(default=4, metadata={"help": "Dev pairs to show and to rewrite in the smoke check."})
    similarity_model: str = field(default=MINILM_ID, metadata={"help": "Sentence encoder for the similarity smoke check."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest smoke-check rewrite, in tokens."})

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 (got {self.num_samples})")


def run(args=None) -> dict:
    setup_logging()
    parser = DetoxParser([PreviewConfig, DataConfig, VocabConfig, DetoxModelConfig, PromptConfig], prog="detox-preview")
    preview, data_cfg, vocab_cfg, model_cfg, prompt_cfg = parser.parse(args)
    report: dict = {}
    t0 = time.perf_counter()

    data = load_detox_data(data_cfg)
    report["data"] = {"source": data.source, "format": data.format, "raw_sources": data.raw_sources,
                      **data.clean_report.as_dict(), "train_pairs": len(data.train), "dev_pairs": len(data.dev)}
    print(f"\n== data: {data.source} ({data.format})\n{data.clean_report.format()}\n"
          f"train {len(data.train):,} pairs, dev {len(data.dev):,} pairs (grouped by source)")
    firsts = {p.group: p for p in reversed(data.dev)}  # one pair per source sentence
    samples = [firsts[g] for g in dict.fromkeys(p.group for p in data.dev)][: preview.num_samples]
    for pair in samples:
        print(f"  toxic:   {pair.source}\n  neutral: {pair.target}")

    lexicon = load_lexicon(vocab_cfg)
    print(f"\n== toxic vocabulary\n{lexicon.summary()}")
    report["vocab"] = {"summary": lexicon.summary(), "entries": len(lexicon),
                       "dev_source_rate": lexicon.toxic_rate([p.source for p in data.dev]),
                       "dev_target_rate": lexicon.toxic_rate([p.target for p in data.dev])}
    print(f"lexicon toxicity rate on dev: sources {report['vocab']['dev_source_rate']:.1%}, "
          f"references {report['vocab']['dev_target_rate']:.1%}")

    loaded = load_model(model_cfg)
    ids = toxic_token_ids(lexicon, loaded.tokenizer)
    print(f"{ids.report()}")
    trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in loaded.model.parameters())
    formatter = PromptFormatter(prompt_cfg, loaded.tokenizer, loaded.family)
    print(f"\n== policy: {loaded.source.describe()}\n{loaded.family} LM, finetuning={model_cfg.finetuning}, "
          f"trainable {trainable:,} of {total:,} parameters, prompt format '{formatter.format}'")
    outputs = generate_rewrites(loaded.model, formatter, [p.source for p in samples],
                                GenerationSettings(max_new_tokens=preview.max_new_tokens))
    report["model"] = {"ref": loaded.source.ref, "served_by": loaded.source.source, "path": loaded.source.path,
                       "family": loaded.family, "finetuning": model_cfg.finetuning, "trainable_params": trainable,
                       "total_params": total, "prompt_format": formatter.format, "token_coverage": ids.coverage}

    from sentence_transformers import SentenceTransformer

    enc_src = resolve_model(preview.similarity_model, what="similarity encoder")
    encoder = SentenceTransformer(enc_src.path, device="cpu")
    emb = encoder.encode([p.source for p in samples] + outputs, convert_to_tensor=True, normalize_embeddings=True)
    sims = (emb[: len(samples)] * emb[len(samples):]).sum(-1).clamp(0, 1).tolist()
    report["similarity_encoder"] = {"ref": enc_src.ref, "served_by": enc_src.source}
    print(f"\n== smoke check (untrained policy; similarity by {enc_src.describe()})")
    report["samples"] = []
    for pair, out, sim in zip(samples, outputs, sims):
        print(f"  in:  {pair.source}\n  out: {out}\n  sim: {sim:.2f}")
        report["samples"].append({"input": pair.source, "output": out, "similarity": round(sim, 4)})

    report["seconds"] = round(time.perf_counter() - t0, 1)
    os.makedirs(preview.output_dir, exist_ok=True)
    atomic_write_text(os.path.join(preview.output_dir, "preview.json"), json.dumps(report, indent=2, ensure_ascii=False))
    save_resolved_config(os.path.join(preview.output_dir, "resolved_config.yaml"),
                         preview, data_cfg, vocab_cfg, model_cfg, prompt_cfg)
    print(f"\npreview written to {preview.output_dir}/preview.json ({report['seconds']} s)")
    return report


def main(args=None) -> int:
    return run_cli(run, args)


if __name__ == "__main__":
    raise SystemExit(main())
