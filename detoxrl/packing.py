"""Packed scoring: the rows of a causal batch in one sequence, the prefix they share written once, no padding.

Used wherever a causal LM scores whole rows: the PPO passes (reference, old log-probs, update) and the
fluency judge. A padded batch computes every layer on padding and on each row's copy of the prompt
prefix (the chat template's system message is about 38 of the ~52 prompt tokens of a ParaDetox
prompt); a packed one computes each distinct token once.

Hand-written because transformers packs sequences only as independent blocks (position ids that
restart, flash-attention varlen): nothing lets several rows attend to one shared prefix. A 4D attention
mask does it here; ``create_causal_mask`` passes a 4D mask through unchanged to the ``eager`` and ``sdpa``
attention of every causal LM in transformers (other attention implementations fall back to padding).

Layout. Row ``i`` is a token list ``tokens[i]``; ``L`` is the length of the prefix every row shares, at
most each row's length minus one so that every row keeps a token of its own. A packed sequence is

    shared prefix (L tokens) | row a without the prefix | row b without the prefix | ... | end padding

with each token at the position it has in its own row (prefix ``0..L-1``, row ``i``'s own tokens
``L..len_i-1``), and token ``q`` attends to token ``k`` iff ``k <= q`` and ``k`` is in the prefix or in
the row of ``q``: the keys and positions it sees in a padded batch (with position ids from the
attention mask), so the outputs are the padded batch's within float rounding. Rows go into packed
sequences of at most ``max_tokens`` tokens (one sequence holds at least one row; each repeats the
prefix), because attention's cost grows with the square of a packed sequence's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PACKABLE_ATTENTION = ("eager", "sdpa")
PREFIX, PAD = -1, -2  # segment ids of shared-prefix tokens and of end padding


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix common to every row, at most ``min(len(row)) - 1`` (0 for no rows)."""
    if not rows:
        return 0
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return max(n, 0)


def packing_supported(model) -> bool:
    """Whether ``model``'s attention takes a custom 4D mask (``eager`` or ``sdpa``; PEFT wrappers are looked through)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in PACKABLE_ATTENTION


@dataclass
class Packed:
    """Rows packed into ``G`` sequences of ``N`` columns (see the module docstring)."""

    input_ids: torch.Tensor  # (G, N)
    position_ids: torch.Tensor  # (G, N)
    segment: torch.Tensor  # (G, N): PREFIX, the row index, or PAD
    group: torch.Tensor  # (B,) the packed sequence of each row
    offset: torch.Tensor  # (B,) column of each row's first own token (position L)
    prefix_len: int

    def columns(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Packed column of token ``positions[k]`` of row ``rows[k]`` (in that row's group)."""
        return torch.where(positions < self.prefix_len, positions, self.offset[rows] + positions - self.prefix_len)

    def attention_mask(self, dtype: torch.dtype, attn_implementation: str) -> torch.Tensor:
        """``(G, 1, N, N)``: bool (True attends) for sdpa, additive (0 / dtype min) for eager."""
        seg = self.segment
        n = seg.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=seg.device).tril()
        same = (seg[:, :, None] == seg[:, None, :]) | (seg[:, None, :] == PREFIX)
        allowed = (causal & same)[:, None]
        if attn_implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill(~allowed, torch.finfo(dtype).min)


def pack_rows(rows: Sequence[Sequence[int]], max_tokens: int = 1024, pad_id: int = 0,
              device: torch.device | str | None = None) -> Packed:
    """Pack token rows (see the module docstring); rows go into sequences in order, each up to ``max_tokens``."""
    L = shared_prefix_length(rows)
    prefix = list(rows[0][:L]) if rows else []
    groups: list[list[int]] = []
    size = 0
    for i, r in enumerate(rows):
        own = len(r) - L
        if not groups or size + own > max_tokens - L:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += own
    width = L + max(sum(len(rows[i]) - L for i in g) for g in groups) if groups else L
    ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(groups), width), dtype=torch.long)
    seg = torch.full((len(groups), width), PAD, dtype=torch.long)
    group = torch.zeros(len(rows), dtype=torch.long)
    offset = torch.zeros(len(rows), dtype=torch.long)
    for g, members in enumerate(groups):
        ids[g, :L] = torch.tensor(prefix, dtype=torch.long)
        pos[g, :L] = torch.arange(L)
        seg[g, :L] = PREFIX
        col = L
        for i in members:
            own = list(rows[i][L:])
            ids[g, col:col + len(own)] = torch.tensor(own, dtype=torch.long)
            pos[g, col:col + len(own)] = torch.arange(L, L + len(own))
            seg[g, col:col + len(own)] = i
            group[i], offset[i] = g, col
            col += len(own)
    return Packed(ids.to(device), pos.to(device), seg.to(device), group.to(device), offset.to(device), L)


def packed_forward(model, packed: Packed, keep: torch.Tensor | None, output_hidden_states: bool = False,
                   cache: dict | None = None):
    """``model`` over the packed sequences; logits only at the ``keep`` columns ((G, N) bool; None: one column).

    ``cache``: ``{name: DynamicCache}`` to fill with the packed keys and values (default: no cache).

    ``out.logits`` is then ``(number of kept columns, V)`` in row-major (group, column) order; map a
    (group, column) to its row there with ``kept_index``.
    """
    emb = model.get_input_embeddings().weight
    impl = model.config._attn_implementation
    return model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                 attention_mask=packed.attention_mask(emb.dtype, impl), use_cache=cache is not None, **(cache or {}),
                 logits_to_keep=keep if keep is not None else 1, output_hidden_states=output_hidden_states)


def kept_index(keep: torch.Tensor, groups: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Index into the flattened kept logits of each (group, column) pair (each must be kept)."""
    flat = keep.flatten().long().cumsum(0) - 1
    return flat[groups * keep.shape[1] + columns]
