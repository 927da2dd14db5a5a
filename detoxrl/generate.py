"""Batched generation from a detox model: one code path for the SFT guard, evaluation, RL and inference.

Inputs are sorted by length so each batch pads little, generated in batches under
``torch.inference_mode``, and returned in the original order. Empty inputs give empty outputs
without a model call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from detoxrl.prompts import PromptFormatter


@dataclass
class GenerationSettings:
    """Decoding settings (each a YAML key / CLI flag where a stage exposes them)."""

    max_new_tokens: int = field(default=64, metadata={"help": "Longest rewrite, in tokens."})
    num_beams: int = field(default=1, metadata={"help": "Beam width (1 = greedy or sampling)."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy/beam search."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    gen_batch_size: int = field(default=32, metadata={"help": "Inputs per generation batch."})

    def generate_kwargs(self) -> dict:
        kw = {k: v for k, v in asdict(self).items() if k != "gen_batch_size"}
        if not self.do_sample:
            kw.pop("temperature")
            kw.pop("top_p")
        return kw


@torch.inference_mode()
def generate_rewrites(model, formatter: PromptFormatter, texts: list[str], settings: GenerationSettings | None = None,
                      progress: bool = False, max_input_length: int | None = None) -> list[str]:
    """Rewrite every text in ``texts``; returns the decoded outputs in input order."""
    settings = settings or GenerationSettings()
    tok = formatter.tokenizer
    outputs = [""] * len(texts)
    order = sorted((i for i, t in enumerate(texts) if t.strip()), key=lambda i: len(texts[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = range(0, len(order), settings.gen_batch_size)
    for start in tqdm(batches, desc="generating", disable=not progress, unit="batch"):
        idx = order[start : start + settings.gen_batch_size]
        kw = {"truncation": True, "max_length": max_input_length} if max_input_length else {}
        batch = formatter.encode_prompts([texts[i] for i in idx], **kw).to(device)
        out = model.generate(**batch, **settings.generate_kwargs(), pad_token_id=tok.pad_token_id)
        if formatter.family == "causal":
            out = out[:, batch["input_ids"].shape[1] :]
        for i, text in zip(idx, tok.batch_decode(out, skip_special_tokens=True)):
            outputs[i] = text.strip()
    model.train(was_training)
    return outputs
