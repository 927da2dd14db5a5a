"""The rollout sampler for causal policies: the prompts' shared prefix run once, finished rows leave the batch.

Hand-written because transformers' ``generate`` computes every row until the batch's longest response
ends (a finished row keeps being decoded, as padding), computes each row's copy of the prompt prefix, and
has one ``max_new_tokens`` for the whole batch. Here, for left-padded prompts ``query``:

1. every prompt is run once, packed into one sequence (``detoxrl/packing.py``: the prefix the prompts
   share, with the chat format the system message, once, and no padding), and each row's key/value
   cache is gathered from it, left-padded. Where the attention takes no 4D mask (or has sliding-window
   layers), the shared prefix is run once and its cache repeated for every row, then the rows' own
   prompt tokens, left-padded, on top of it (position ids from the attention mask, as ``generate`` does);
2. the first new token of each row comes from that prefill;
3. each step samples one token per running row from ``p = softmax(top_p(top_k(logits / T)))`` (transformers'
   own warpers) as ``argmax(p / q)`` with ``q ~ Exp(1)``, which is how ``torch.multinomial`` draws one
   sample; the noise is drawn for the whole batch every step, finished rows included, as ``generate``'s
   multinomial does, so a seed gives ``generate``'s samples (the argmax of the logits when ``do_sample``
   is false); a row leaves the batch, its cache rows dropped, once it samples an EOS or reaches its own
   cap ``caps[i]`` of new tokens.

Greedy decoding and seeded sampling give ``generate``'s tokens (tests/test_sampling.py; the logits agree
within float rounding, so a token can differ only where two candidates tie to about 1e-6). The work done is returned as deterministic counts: ``prefill_tokens`` (prompt token positions
run, padding included) and ``decode_rows`` (rows run summed over the decode steps).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from detoxrl.packing import kept_index, pack_rows, packed_forward, packing_supported, shared_prefix_length


@dataclass
class Sampled:
    response: torch.Tensor  # (B, T) new tokens, ``pad_id`` after a row's last one
    prefill_tokens: int
    decode_rows: int


def _cache_kwarg(model) -> str:
    """The forward's name for the KV cache: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _warpers(temperature: float, top_k: int, top_p: float):
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p))
    return warpers


@torch.no_grad()
def sample(model, query: torch.Tensor, query_mask: torch.Tensor, caps: torch.Tensor, eos: list[int], pad_id: int,
           do_sample: bool = True, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Sampled:
    """Sample a response to each left-padded prompt row, at most ``caps[i]`` (>= 1) new tokens for row ``i``."""
    from transformers import DynamicCache

    device, B = query.device, query.shape[0]
    rows = [query[i][query_mask[i].bool()].tolist() for i in range(B)]
    cache = DynamicCache(config=model.config)
    kv = {_cache_kwarg(model): cache}
    packable = packing_supported(model) and not any(getattr(layer, "is_sliding", False) for layer in cache.layers)
    prefill = _packed_prefill if packable else _padded_prefill
    logits, attention, position, prefill_tokens = prefill(model, rows, cache, kv, pad_id, device)
    warpers = _warpers(temperature, top_k, top_p) if do_sample else None
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    caps = caps.to(device)
    tokens = torch.full((B, int(caps.max())), pad_id, dtype=torch.long, device=device)
    length = torch.zeros(B, dtype=torch.long, device=device)
    active = torch.arange(B, device=device)
    decode_rows = 0
    for t in range(tokens.shape[1]):
        if do_sample:  # multinomial(probs) = argmax(probs / q), q ~ Exp(1): drawn for the whole batch, as generate does
            probs = torch.softmax(warpers(None, logits), dim=-1)
            noise = torch.empty((B, probs.shape[-1]), device=device).exponential_(1)
            nxt = (probs / noise[active]).argmax(-1)
        else:
            nxt = logits.argmax(-1)
        tokens[active, t] = nxt
        length[active] = t + 1
        done = torch.isin(nxt, eos_t) | (t + 1 >= caps[active])
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, nxt, attention, position = active[keep], nxt[keep], attention[keep], position[keep]
        attention = torch.cat([attention, attention.new_ones(len(active), 1)], dim=1)
        position = position + 1
        logits = model(input_ids=nxt[:, None], attention_mask=attention, position_ids=position, **kv,
                       use_cache=True).logits[:, -1].float()
        decode_rows += len(active)
    return Sampled(tokens[:, : int(length.max())], prefill_tokens, decode_rows)


def _packed_prefill(model, rows, cache, kv, pad_id, device):
    """Every prompt in one packed sequence (``detoxrl.packing``), then each row's key/value cache gathered from it,
    left-padded: ``(next-token logits (B, V), attention (B, W), position of the last token (B, 1), tokens run)``."""
    B, lens = len(rows), torch.tensor([len(r) for r in rows], device=device)
    packed = pack_rows(rows, max_tokens=int(lens.sum()) + 1, pad_id=pad_id, device=device)
    last = packed.columns(torch.arange(B, device=device), lens - 1)
    keep = torch.zeros_like(packed.input_ids, dtype=torch.bool)
    keep[0, last] = True
    out = packed_forward(model, packed, keep, cache=kv)
    logits = out.logits[kept_index(keep, torch.zeros_like(last), last)].float()
    # row i's cache: W - len_i padding columns (any column: masked), the shared prefix, then its own tokens
    W, L = int(lens.max()), packed.prefix_len
    t = torch.arange(W, device=device)
    pos = t[None, :] - (W - lens)[:, None]  # position in the row, negative on padding
    index = torch.where(pos < 0, 0, packed.columns(torch.arange(B, device=device)[:, None].expand(B, W), pos.clamp(min=0)))
    for layer in cache.layers:
        layer.keys, layer.values = (x[0][:, index].transpose(0, 1).contiguous() for x in (layer.keys, layer.values))
    return logits, (pos >= 0).long(), (lens - 1)[:, None], packed.input_ids.numel()


def _padded_prefill(model, rows, cache, kv, pad_id, device):
    """The shared prefix once (its cache repeated for every row), then the rows' own tokens left-padded; returns
    what ``_packed_prefill`` does (for attention implementations that take no 4D mask)."""
    B = len(rows)
    L = shared_prefix_length(rows)
    if L:
        model(input_ids=torch.tensor(rows[0][:L], device=device)[None], **kv, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(B)
    own = [r[L:] for r in rows]
    S = max(len(o) for o in own)
    ids = torch.tensor([[pad_id] * (S - len(o)) + o for o in own], device=device)
    attention = torch.cat([torch.ones(B, L, dtype=torch.long, device=device),
                           torch.tensor([[0] * (S - len(o)) + [1] * len(o) for o in own], device=device)], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, L:]
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, **kv, use_cache=True,
                   logits_to_keep=1).logits[:, -1].float()
    return logits, attention, positions[:, -1:], L + B * S
