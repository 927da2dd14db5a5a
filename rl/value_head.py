"""The value head and ``PolicyWithValue``: one forward pass gives response log-probs, entropies and values.

Written by hand because no library has it any more: TRL removed ``AutoModelForCausalLMWithValueHead``
and never had a seq2seq one that works with our PEFT setup.

Alignment (the same for both families): position ``t`` of every output scores response token ``t``
given everything before it. Only valid response tokens are scored (logits, log-softmax, entropy and
value head); padded positions read 0.

* causal: ``[query | response]`` is fed with left-padded queries and right-padded responses
  (``position_ids`` from the attention mask); the logits at positions ``P-1 .. P+T-2`` predict the
  ``T`` response tokens (only those ``T+1`` logit rows are computed, via ``logits_to_keep``), and
  the value of token ``t`` is read from the last hidden state at the same position. Packed
  (``pack``, the PPO default): the same positions of each row in one packed sequence, no padding
  and the shared prompt prefix computed once (``detoxrl/packing.py``);
* seq2seq: the encoder reads the query, the decoder reads the response shifted right by the
  decoder start token, and the value comes from the decoder's last hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from detoxrl.packing import kept_index, pack_rows, packed_forward, packing_supported


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
        """Overwrite ``w`` (H,) and ``b`` () in place (the replay fit, ``rl/value_fit.py``); every rank passes the same
        values (sharded parameters take their shard of them, ``rl/distributed.assign``)."""
        from detoxrl.distributed import assign

        assign(self.summary.weight, weight)
        assign(self.summary.bias, bias)

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


@dataclass
class ResponseStates:
    """What a forward gives for each valid response token, flattened: token ``k`` is ``response[rows[k], cols[k]]``.

    ``logits`` ``(K, V)`` (or None) predict that token; ``hidden`` ``(K, H)`` (or None) is the last hidden
    state at the same position (the value head reads it).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    logits: torch.Tensor | None
    hidden: torch.Tensor | None

    def scatter(self, flat: torch.Tensor, shape) -> torch.Tensor:
        """``(B, T)`` tensor holding ``flat`` at the valid tokens and 0 on padding (differentiable)."""
        return flat.new_zeros(shape).index_put((self.rows, self.cols), flat)


def lm_forward(model, family: str, query, query_mask, response, response_mask, decoder_start_id: int | None,
               want_logits: bool = True, want_hidden: bool = True, pack: bool = False,
               max_packed_tokens: int = 1024) -> ResponseStates:
    """Run ``model`` over query + response; logits and last hidden states of the valid response tokens only.

    ``pack`` (causal only; see ``detoxrl/packing.py``): every row in one packed sequence, the prompt prefix
    the rows share computed once and no padding; the result equals the padded forward within float rounding.
    Response masks must be contiguous from the first token (as rollouts make them).
    """
    rows, cols = response_mask.nonzero(as_tuple=True)
    if family == "seq2seq":
        dec_mask = torch.cat([torch.ones_like(response_mask[:, :1]), response_mask[:, :-1]], dim=1)
        out = model(input_ids=query, attention_mask=query_mask, decoder_input_ids=shift_right(response, decoder_start_id),
                    decoder_attention_mask=dec_mask.long(), output_hidden_states=want_hidden, use_cache=False)
        return ResponseStates(rows, cols, out.logits[rows, cols] if want_logits else None,
                              out.decoder_hidden_states[-1][rows, cols] if want_hidden else None)
    if pack:
        return _packed_lm_forward(model, query, query_mask, response, response_mask, rows, cols, want_logits,
                                  want_hidden, max_packed_tokens)
    T = response.shape[1]
    P = query.shape[1]
    input_ids = torch.cat([query, response], dim=1)
    attention = torch.cat([query_mask.long(), response_mask.long()], dim=1)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
                output_hidden_states=want_hidden, use_cache=False, logits_to_keep=(T + 1) if want_logits else 1)
    logits = out.logits[:, :-1][rows, cols] if want_logits else None
    return ResponseStates(rows, cols, logits, out.hidden_states[-1][:, P - 1 : P + T - 1][rows, cols] if want_hidden else None)


def _rows(query, query_mask, response, lengths) -> list[list[int]]:
    """Each row's prompt tokens (without padding) followed by its first ``lengths[i]`` response tokens."""
    return [query[i][query_mask[i].bool()].tolist() + response[i, : lengths[i]].tolist() for i in range(len(query))]


def _packed_lm_forward(model, query, query_mask, response, response_mask, rows, cols, want_logits, want_hidden,
                       max_tokens) -> ResponseStates:
    lengths = response_mask.sum(1).long()
    if not torch.equal(response_mask.bool(), torch.arange(response.shape[1], device=response.device) < lengths[:, None]):
        raise ValueError("packed scoring needs response masks that are contiguous from the first token")
    q_len = query_mask.sum(1).long()
    seqs = _rows(query, query_mask, response, lengths)
    packed = pack_rows(seqs, max_tokens, device=query.device)
    # response token t of row i is predicted at position q_len[i] - 1 + t
    columns = packed.columns(rows, q_len[rows] - 1 + cols)
    groups = packed.group[rows]
    keep = torch.zeros_like(packed.input_ids, dtype=torch.bool)
    keep[groups, columns] = True
    out = packed_forward(model, packed, keep if want_logits else None, output_hidden_states=want_hidden)
    logits = out.logits[kept_index(keep, groups, columns)] if want_logits else None
    hidden = out.hidden_states[-1][groups, columns] if want_hidden else None
    return ResponseStates(rows, cols, logits, hidden)


class PolicyWithValue(nn.Module):
    """The policy LM, its value head and (``critic='separate'``) a critic backbone, as one module.

    One module so accelerate/DDP wraps and syncs every trainable parameter together. ``pack``: score causal
    rows packed (``lm_forward``) when the model's attention takes it; log-probs, entropies and values are 0
    on padded response positions either way.
    """

    def __init__(self, policy, family: str, critic=None, pack: bool = True, max_packed_tokens: int = 1024):
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.family = family
        config = (critic or policy).config
        hidden = getattr(config, "d_model", None) or config.hidden_size
        self.value_head = ValueHead(hidden)
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        self.decoder_start_id = getattr(base.config, "decoder_start_token_id", None)
        self.pack, self.max_packed_tokens = pack and family == "causal", max_packed_tokens

    def _states(self, model, query, query_mask, response, response_mask, **want) -> ResponseStates:
        return lm_forward(model, self.family, query, query_mask, response, response_mask, self.decoder_start_id,
                          pack=self.pack and packing_supported(model), max_packed_tokens=self.max_packed_tokens, **want)

    def forward(self, query, query_mask, response, response_mask, temperature: float = 1.0,
                with_values: bool = True, with_features: bool = False, critic_only: bool = False) -> ForwardOut:
        """``critic_only`` (critic warm-up): a shared critic reads the policy's hidden states detached, so no value
        gradient reaches the policy."""
        batch = (query, query_mask, response, response_mask)
        states = self._states(self.policy, *batch, want_hidden=with_values and self.critic is None)
        logits = states.logits.float() / temperature
        values = None
        if with_values:
            hidden = states.hidden if self.critic is None else self._states(self.critic, *batch, want_logits=False).hidden
            if critic_only and self.critic is None:
                hidden = hidden.detach()
            values = states.scatter(self.value_head(hidden).float(), response.shape)
        with torch.no_grad():
            entropy = states.scatter(entropy_from_logits(logits), response.shape)
        logprobs = selective_log_softmax(logits, response[states.rows, states.cols])
        # the replay fit's input (rl/value_fit.py), only when asked; detached: read as data, never differentiated
        features = (states.scatter(hidden.detach(), (*response.shape, hidden.shape[-1]))
                    if with_values and with_features else None)
        return ForwardOut(states.scatter(logprobs, response.shape), values, entropy, features)

    def scored_tokens(self, query, query_mask, response, response_mask) -> int:
        """Token positions one forward of the policy runs for this batch (padding included): a work count."""
        if not (self.pack and packing_supported(self.policy)):
            return query.numel() + response.numel()
        seqs = _rows(query, query_mask, response, response_mask.sum(1).long())
        return pack_rows(seqs, self.max_packed_tokens).input_ids.numel()

    @torch.no_grad()
    def logprobs(self, model, query, query_mask, response, response_mask, temperature: float = 1.0) -> torch.Tensor:
        """Log-probs of the response under ``model`` (the reference, typically), no gradient; 0 on padding."""
        states = self._states(model, query, query_mask, response, response_mask, want_hidden=False)
        return states.scatter(selective_log_softmax(states.logits.float() / temperature,
                                                    response[states.rows, states.cols]), response.shape)
