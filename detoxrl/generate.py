"""Batched generation from a detox model: one code path for the SFT guard, evaluation, RL and inference.

Inputs are sorted by length so each batch pads little, generated in batches under
``torch.inference_mode``, and returned in the original order. Empty inputs give empty outputs
without a model call.

``generate_rewrites`` gives one rewrite per input (greedy by default); ``sample_candidates`` gives
``n`` sampled rewrites per input, with a flag for each that ended without EOS (what best-of-n
reranking, ``detoxrl/rerank.py``, scores). Sampling is seeded (``GenerationSettings.seed``) inside a
forked RNG, so the same inputs with the same settings give the same samples, and the caller's RNG
state is left as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (0.7: the PPO rollouts')."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    gen_batch_size: int = field(default=32, metadata={"help": "Inputs per generation batch."})
    best_of: int = field(
        default=1, metadata={"help": "Best-of-n: sample this many rewrites per input (with temperature and top_p) "
                             "and keep the one the reranking reward scores highest (1: off; > 1 samples, and "
                             "cannot be combined with num_beams > 1). See docs/best-of-n.md."})
    seed: int = field(default=42, metadata={"help": "Seed of sampled decoding (do_sample or best_of > 1)."})

    @property
    def samples(self) -> bool:
        """Whether these settings sample (``do_sample``, or best-of-n, which always samples)."""
        return self.do_sample or self.best_of > 1

    def generate_kwargs(self) -> dict:
        kw = {k: v for k, v in asdict(self).items() if k not in ("gen_batch_size", "best_of", "seed")}
        if not self.do_sample:
            kw.pop("temperature")
            kw.pop("top_p")
        return kw

    def sample_kwargs(self) -> dict:
        """``generate`` keywords of one sample per input (best-of-n draws ``best_of`` of them)."""
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                "top_p": self.top_p, "num_beams": 1}


def eos_ids(model, tokenizer) -> list[int]:
    """Every token id that ends a response: the generation config's EOS ids and the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def length_batches(texts: list[str], size: int) -> Iterator[list[int]]:
    """Indices of the non-blank ``texts``, sorted by length, in batches of ``size``."""
    order = sorted((i for i, t in enumerate(texts) if t.strip()), key=lambda i: len(texts[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run the block with torch's RNG seeded to ``seed``; the RNG state outside is restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _new_tokens(formatter: PromptFormatter, batch, out: torch.Tensor, skip_start: bool = False) -> torch.Tensor:
    """The generated part of ``generate``'s output: causal outputs repeat the prompt; seq2seq outputs start with
    the decoder start token (dropped when ``skip_start``: BART's is its EOS)."""
    if formatter.family == "causal":
        return out[:, batch["input_ids"].shape[1] :]
    return out[:, 1:] if skip_start else out


@torch.inference_mode()
def generate_rewrites(model, formatter: PromptFormatter, texts: list[str], settings: GenerationSettings | None = None,
                      progress: bool = False, max_input_length: int | None = None) -> list[str]:
    """Rewrite every text in ``texts``; returns the decoded outputs in input order."""
    settings = settings or GenerationSettings()
    tok = formatter.tokenizer
    outputs = [""] * len(texts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = list(length_batches(texts, settings.gen_batch_size))
    sampling = seeded(settings.seed, device) if settings.do_sample else contextlib.nullcontext()
    with sampling:
        for idx in tqdm(batches, desc="generating", disable=not progress, unit="batch"):
            kw = {"truncation": True, "max_length": max_input_length} if max_input_length else {}
            batch = formatter.encode_prompts([texts[i] for i in idx], **kw).to(device)
            out = model.generate(**batch, **settings.generate_kwargs(), pad_token_id=tok.pad_token_id)
            for i, text in zip(idx, tok.batch_decode(_new_tokens(formatter, batch, out), skip_special_tokens=True)):
                outputs[i] = text.strip()
    model.train(was_training)
    return outputs


@torch.inference_mode()
def sample_candidates(model, formatter: PromptFormatter, texts: list[str], n: int,
                      settings: GenerationSettings) -> tuple[list[list[str]], list[list[bool]]]:
    """``n`` sampled rewrites of every text in ``texts`` (one ``generate`` call, ``num_return_sequences=n``), and
    for each whether it ended without EOS within ``max_new_tokens`` (truncated). Blank texts give ``n`` empty
    rewrites without a model call. The caller batches (``detoxrl/rerank.py``) and seeds (``seeded``)."""
    tok = formatter.tokenizer
    candidates = [[""] * n for _ in texts]
    truncated = [[False] * n for _ in texts]
    idx = [i for i, t in enumerate(texts) if t.strip()]
    if not idx:
        return candidates, truncated
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batch = formatter.encode_prompts([texts[i] for i in idx]).to(device)
    eos = eos_ids(model, tok)
    out = model.generate(**batch, **settings.sample_kwargs(), num_return_sequences=n, pad_token_id=tok.pad_token_id,
                         eos_token_id=eos)
    model.train(was_training)
    new = _new_tokens(formatter, batch, out, skip_start=True)
    ended = torch.isin(new, torch.tensor(eos, device=new.device)).any(dim=1).tolist()
    decoded = tok.batch_decode(new, skip_special_tokens=True)
    for row, (text, done) in enumerate(zip(decoded, ended)):
        i, j = idx[row // n], row % n
        candidates[i][j], truncated[i][j] = text.strip(), not done
    return candidates, truncated
