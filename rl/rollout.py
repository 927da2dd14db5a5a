"""Rollouts: sample responses to a batch of prompts and cut them at the first EOS.

``response_mask`` keeps every token up to and including the first EOS; a row with no EOS in
``max_new_tokens`` is ``truncated`` (all its tokens count, and the trainer subtracts
``truncation_penalty`` from its score). Generation uses the KV cache and the policy's own
``generate``; the prompts are built by the one prompt formatter shared with SFT and inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detoxrl.generate import eos_ids  # noqa: F401  (its home is the core generation module)
from detoxrl.prompts import PromptFormatter


def response_mask_from_eos(response: torch.Tensor, eos: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, truncated)``: ``mask[b, t] = 1`` for ``t <= first EOS of row b`` (every ``t`` if none).

    Example: EOS id 2, row ``[5, 7, 2, 0, 0]`` gives ``[1, 1, 1, 0, 0]``; row ``[5, 7, 8]`` gives
    ``[1, 1, 1]`` and ``truncated = True``.
    """
    is_eos = torch.isin(response, torch.tensor(eos, device=response.device))
    seen_before = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # an EOS strictly earlier in the row
    mask = ~seen_before
    truncated = ~is_eos.any(dim=1)
    return mask.to(torch.float32), truncated


@dataclass
class Rollout:
    """One batch of prompts and sampled responses (tensors on the policy's device)."""

    sources: list[str]
    query: torch.Tensor  # (B, P) prompt ids (left-padded for causal models)
    query_mask: torch.Tensor
    response: torch.Tensor  # (B, T) sampled ids, padded after the first EOS
    response_mask: torch.Tensor  # (B, T) float, 1 through the first EOS
    truncated: torch.Tensor  # (B,) bool: no EOS within max_new_tokens
    texts: list[str]  # decoded responses

    def tensors(self, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``(query, query_mask, response, response_mask)``, optionally only rows ``idx``."""
        ts = (self.query, self.query_mask, self.response, self.response_mask)
        return ts if idx is None else tuple(t[idx] for t in ts)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)


@torch.no_grad()
def generate_rollout(policy, formatter: PromptFormatter, sources: list[str], generate_kwargs: dict,
                     eos: list[int]) -> Rollout:
    """Sample one response per source with ``policy.generate`` (sampling settings in ``generate_kwargs``)."""
    tok = formatter.tokenizer
    device = next(policy.parameters()).device
    batch = formatter.encode_prompts(sources).to(device)
    was_training = policy.training
    policy.eval()
    out = policy.generate(**batch, **generate_kwargs, pad_token_id=tok.pad_token_id, eos_token_id=eos, use_cache=True)
    policy.train(was_training)
    # causal outputs repeat the prompt; seq2seq outputs start with the decoder start token
    response = out[:, batch["input_ids"].shape[1]:] if formatter.family == "causal" else out[:, 1:]
    mask, truncated = response_mask_from_eos(response, eos)
    response = torch.where(mask.bool(), response, torch.full_like(response, tok.pad_token_id))
    texts = [t.strip() for t in tok.batch_decode(response, skip_special_tokens=True)]
    return Rollout(sources, batch["input_ids"], batch["attention_mask"], response, mask.to(device), truncated, texts)

