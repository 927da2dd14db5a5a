"""The value head and ``PolicyWithValue``: one forward pass gives response log-probs, entropies and values.

Written by hand because no library has it any more: TRL removed ``AutoModelForCausalLMWithValueHead``
and never had a seq2seq one that works with our PEFT setup.

Alignment (the same for both families): position ``t`` of every output scores response token ``t``
given everything before it.

* causal: ``[query | response]`` is fed with left-padded queries and right-padded responses
  (``position_ids`` from the attention mask); the logits at positions ``P-1 .. P+T-2`` predict the
  ``T`` response tokens (only those ``T+1`` logit rows are computed, via ``logits_to_keep``), and
  the value of token ``t`` is read from the last hidden state at the same position;
* seq2seq: the encoder reads the query, the decoder reads the response shifted right by the
  decoder start token, and the value comes from the decoder's last hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from trl.trainer.utils import entropy_from_logits, selective_log_softmax


class ValueHead(nn.Module):
    """A scalar per position: ``v = w . h + b``, with ``w = 0`` and ``b = 0`` at the start.

    So every initial prediction is 0, the mean of normalised returns: explained variance starts at 0.
    TRL's old head drew ``w ~ N(0, 1/(H+1))``, which on top of a final norm whose weights have RMS
    ``g`` (about 1.8 in SmolLM2) gives initial values of std about ``g``, against returns of std 1
    (explained variance about ``-g^2``, -3 there). A zero last layer still learns: the gradient of
    ``w`` is ``dL/dv * h``.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    @torch.no_grad()
    def set(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Overwrite ``w`` (H,) and ``b`` () in place (the replay fit, ``rl/value_fit.py``)."""
        self.summary.weight.copy_(weight.reshape(self.summary.weight.shape))
        self.summary.bias.copy_(bias.reshape(self.summary.bias.shape))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


@dataclass
class ForwardOut:
    logprobs: torch.Tensor  # (B, T) log pi(response_t | ...)
    values: torch.Tensor | None  # (B, T)
    entropy: torch.Tensor  # (B, T), no gradient
    features: torch.Tensor | None = None  # (B, T, H) the value head's input (last hidden states), with values

    def detached(self) -> "ForwardOut":
        def d(t):
            return None if t is None else t.detach()

        return ForwardOut(self.logprobs.detach(), d(self.values), self.entropy, d(self.features))


def shift_right(ids: torch.Tensor, start_id: int) -> torch.Tensor:
    """Decoder inputs for seq2seq teacher forcing: ``[start, y_0, ..., y_{T-2}]``."""
    start = torch.full_like(ids[:, :1], start_id)
    return torch.cat([start, ids[:, :-1]], dim=1)


def lm_forward(model, family: str, query, query_mask, response, response_mask, decoder_start_id: int | None,
               want_logits: bool = True, want_hidden: bool = True):
    """Run ``model`` over query + response; returns ``(logits (B,T,V) or None, last hidden (B,T,H) or None)``."""
    T = response.shape[1]
    if family == "seq2seq":
        dec_mask = torch.cat([torch.ones_like(response_mask[:, :1]), response_mask[:, :-1]], dim=1)
        out = model(input_ids=query, attention_mask=query_mask, decoder_input_ids=shift_right(response, decoder_start_id),
                    decoder_attention_mask=dec_mask.long(), output_hidden_states=want_hidden, use_cache=False)
        return (out.logits if want_logits else None), (out.decoder_hidden_states[-1] if want_hidden else None)
    P = query.shape[1]
    input_ids = torch.cat([query, response], dim=1)
    attention = torch.cat([query_mask.long(), response_mask.long()], dim=1)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
                output_hidden_states=want_hidden, use_cache=False, logits_to_keep=(T + 1) if want_logits else 1)
    logits = out.logits[:, :-1] if want_logits else None
    return logits, (out.hidden_states[-1][:, P - 1 : P + T - 1] if want_hidden else None)


class PolicyWithValue(nn.Module):
    """The policy LM, its value head and (``critic='separate'``) a critic backbone, as one module.

    One module so accelerate/DDP wraps and syncs every trainable parameter together.
    """

    def __init__(self, policy, family: str, critic=None):
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.family = family
        config = (critic or policy).config
        hidden = getattr(config, "d_model", None) or config.hidden_size
        self.value_head = ValueHead(hidden)
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        self.decoder_start_id = getattr(base.config, "decoder_start_token_id", None)

    def forward(self, query, query_mask, response, response_mask, temperature: float = 1.0,
                with_values: bool = True) -> ForwardOut:
        args = (self.family, query, query_mask, response, response_mask, self.decoder_start_id)
        logits, hidden = lm_forward(self.policy, *args, want_hidden=with_values and self.critic is None)
        logits = logits.float() / temperature
        values = None
        if with_values:
            if self.critic is not None:
                _, hidden = lm_forward(self.critic, *args, want_logits=False)
            values = self.value_head(hidden).float()
        with torch.no_grad():
            entropy = entropy_from_logits(logits)
        return ForwardOut(selective_log_softmax(logits, response), values, entropy, hidden if with_values else None)

    @torch.no_grad()
    def logprobs(self, model, query, query_mask, response, response_mask, temperature: float = 1.0) -> torch.Tensor:
        """Log-probs of the response under ``model`` (the reference, typically), no gradient."""
        logits, _ = lm_forward(model, self.family, query, query_mask, response, response_mask, self.decoder_start_id,
                               want_hidden=False)
        return selective_log_softmax(logits.float() / temperature, response)
