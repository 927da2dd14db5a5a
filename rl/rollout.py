"""Rollouts: sample responses to a batch of prompts and cut them at the first EOS.

``response_mask`` keeps every token up to and including the first EOS; a row with no EOS in its
token cap is ``truncated`` (all its tokens count, and the trainer subtracts ``truncation_penalty``
from its score). The cap is ``max_new_tokens``, or with ``max_new_tokens_ratio`` set a per-row cap
from the source's length (``length_caps``); a truncated row whose cap is below ``max_new_tokens`` is
also ``capped``, so a too-tight cap shows in the logs. Causal policies sample with ``rl/sampling.py``
(shared prompt prefix once, finished rows dropped); seq2seq ones, or ``fast_sampling: false``, with the
policy's own ``generate``. The prompts are built by the one prompt formatter shared with SFT and inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from detoxrl.generate import eos_ids  # noqa: F401  (its home is the core generation module)
from detoxrl.prompts import PromptFormatter
from rl.sampling import sample


def response_mask_from_eos(response: torch.Tensor, eos: list[int], caps: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, truncated)``: ``mask[b, t] = 1`` for ``t <= first EOS of row b`` (every ``t`` if none) and ``t < caps[b]``.

    Example: EOS id 2, row ``[5, 7, 2, 0, 0]`` gives ``[1, 1, 1, 0, 0]``; row ``[5, 7, 8]`` gives
    ``[1, 1, 1]`` and ``truncated = True``; with cap 2, row ``[5, 7, 2]`` gives ``[1, 1, 0]``, truncated.
    """
    is_eos = torch.isin(response, torch.tensor(eos, device=response.device))
    if caps is not None:
        within = torch.arange(response.shape[1], device=response.device) < caps.to(response.device)[:, None]
        is_eos = is_eos & within
    seen_before = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # an EOS strictly earlier in the row
    mask = ~seen_before if caps is None else ~seen_before & within
    truncated = ~is_eos.any(dim=1)
    return mask.to(torch.float32), truncated


def length_caps(source_tokens: torch.Tensor, max_new_tokens: int, ratio: float | None, extra: int) -> torch.Tensor:
    """Per-row caps on new tokens: ``min(max_new_tokens, ceil(ratio * n_i) + extra)`` for a source of ``n_i`` tokens.

    ``ratio`` None: every cap is ``max_new_tokens``. Caps are at least 1.
    """
    full = torch.full_like(source_tokens, max_new_tokens, dtype=torch.long)
    if ratio is None:
        return full
    caps = torch.tensor([math.ceil(ratio * int(n)) + extra for n in source_tokens], dtype=torch.long)
    return torch.minimum(full, caps).clamp(min=1)


@dataclass
class Rollout:
    """One batch of prompts and sampled responses (tensors on the policy's device)."""

    sources: list[str]
    query: torch.Tensor  # (B, P) prompt ids (left-padded for causal models)
    query_mask: torch.Tensor
    response: torch.Tensor  # (B, T) sampled ids, padded after the first EOS
    response_mask: torch.Tensor  # (B, T) float, 1 through the first EOS
    truncated: torch.Tensor  # (B,) bool: no EOS within the row's cap
    texts: list[str]  # decoded responses
    capped: torch.Tensor | None = None  # (B,) bool: truncated at a cap below max_new_tokens
    work: dict[str, float] = field(default_factory=dict)  # deterministic counts of the generation's work

    def tensors(self, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``(query, query_mask, response, response_mask)``, optionally only rows ``idx``."""
        ts = (self.query, self.query_mask, self.response, self.response_mask)
        return ts if idx is None else tuple(t[idx] for t in ts)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)


@torch.no_grad()
def generate_rollout(policy, formatter: PromptFormatter, sources: list[str], generate_kwargs: dict,
                     eos: list[int], caps: torch.Tensor | None = None, fast: bool = True) -> Rollout:
    """Sample one response per source (sampling settings in ``generate_kwargs``), row ``i`` at most ``caps[i]``
    new tokens (default: ``max_new_tokens``); causal policies through ``rl/sampling.py`` unless ``fast`` is off."""
    tok = formatter.tokenizer
    device = next(policy.parameters()).device
    batch = formatter.encode_prompts(sources).to(device)
    B, max_new = len(sources), int(generate_kwargs["max_new_tokens"])
    caps = torch.full((B,), max_new, dtype=torch.long) if caps is None else caps.clamp(1, max_new)
    was_training = policy.training
    policy.eval()
    if fast and formatter.family == "causal":
        keys = ("do_sample", "temperature", "top_k", "top_p")
        s = sample(policy, batch["input_ids"], batch["attention_mask"], caps, eos, tok.pad_token_id,
                   **{k: generate_kwargs[k] for k in keys if k in generate_kwargs})
        response, work = s.response, {"prefill_tokens": s.prefill_tokens, "decode_rows": s.decode_rows}
    else:
        out = policy.generate(**batch, **{**generate_kwargs, "max_new_tokens": int(caps.max())},
                              pad_token_id=tok.pad_token_id, eos_token_id=eos, use_cache=True)
        # causal outputs repeat the prompt; seq2seq outputs start with the decoder start token
        response = out[:, batch["input_ids"].shape[1]:] if formatter.family == "causal" else out[:, 1:]
        work = {"prefill_tokens": batch["input_ids"].numel(), "decode_rows": B * max(response.shape[1] - 1, 0)}
    policy.train(was_training)
    mask, truncated = response_mask_from_eos(response, eos, caps)
    response = torch.where(mask.bool(), response, torch.full_like(response, tok.pad_token_id))
    texts = [t.strip() for t in tok.batch_decode(response, skip_special_tokens=True)]
    capped = truncated & (caps.to(truncated.device) < max_new)
    return Rollout(sources, batch["input_ids"], batch["attention_mask"], response, mask.to(device), truncated, texts,
                   capped, work)
