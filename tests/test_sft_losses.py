"""SFT loss arithmetic and toxic masks against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from sft.losses import (
    IGNORE,
    toxic_mask_weights,
    toxic_penalty,
    toxic_span_positions,
    token_ce,
    weighted_ce,
)


def test_weighted_ce_by_hand():
    # two positions, vocab 2, uniform logits: CE = ln 2 at each; a third position is ignored.
    logits = torch.zeros(1, 3, 2)
    labels = torch.tensor([[0, 1, IGNORE]])
    assert torch.allclose(token_ce(logits, labels), torch.tensor([[math.log(2), math.log(2), 0.0]]))
    assert weighted_ce(logits, labels).item() == pytest.approx(math.log(2))
    # position 0 confident and right (CE ~ 0), position 1 uniform; weight only position 1 -> ln 2
    logits[0, 0] = torch.tensor([20.0, 0.0])
    w = torch.tensor([[0.0, 1.0, 1.0]])
    assert weighted_ce(logits, labels, w).item() == pytest.approx(math.log(2))
    assert weighted_ce(logits, labels).item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    assert weighted_ce(logits, labels, torch.zeros(1, 3)).item() == 0.0  # nothing weighted: no loss


def test_penalty_zero_without_toxic_mass_and_grows_with_it():
    labels = torch.tensor([[0, 0]])
    toxic = torch.tensor([2])
    none = torch.tensor([[[5.0, 5.0, -1e4], [5.0, 5.0, -1e4]]])
    assert toxic_penalty(none, labels, toxic).item() == pytest.approx(0.0, abs=1e-6)
    # uniform over 3 ids -> p(toxic) = 1/3 at each position -> P = 1/3
    assert toxic_penalty(torch.zeros(1, 2, 3), labels, toxic).item() == pytest.approx(1 / 3)
    more = torch.zeros(1, 2, 3)
    more[..., 2] = 1.0  # p(toxic) = e / (2 + e)
    assert toxic_penalty(more, labels, toxic).item() == pytest.approx(math.e / (2 + math.e))
    assert toxic_penalty(torch.zeros(1, 2, 3), labels, torch.tensor([], dtype=torch.long)).item() == 0.0


def test_penalty_ignores_unlabelled_positions_and_sends_gradient_to_toxic_logits():
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    labels = torch.tensor([[0, IGNORE]])
    penalty = toxic_penalty(logits, labels, torch.tensor([2]))
    assert penalty.item() == pytest.approx(1 / 3)
    penalty.backward()
    g = logits.grad[0]
    # d p_t / d z_t = p_t (1 - p_t) = 2/9 ; d p_t / d z_j = -p_t p_j = -1/9
    assert torch.allclose(g[0], torch.tensor([-1 / 9, -1 / 9, 2 / 9]))
    assert torch.all(g[1] == 0)  # ignored position gets nothing


SRC = ["you", "are", "a", "fucking", "idiot", "."]
SRC_TOX = [False, False, False, True, True, False]
TGT = ["you", "are", "not", "very", "smart", ".", "</s>"]


def test_toxic_only_keeps_the_rewrite_of_the_toxic_span_and_eos():
    # alignment: equal you,are | replace 'a fucking idiot' -> 'not very smart' | equal '.'
    assert toxic_span_positions(SRC, SRC_TOX, TGT) == [2, 3, 4]
    r = toxic_mask_weights("toxic_only", SRC, SRC_TOX, TGT, [False] * 7, eos_positions=[6])
    assert r.weights == [0, 0, 1, 1, 1, 0, 1] and r.found_span and not r.skipped


def test_toxic_context_adds_window_neighbours():
    r = toxic_mask_weights("toxic_context", SRC, SRC_TOX, TGT, [False] * 7, eos_positions=[6], context_window=1)
    assert r.weights == [0, 1, 1, 1, 1, 1, 1]
    r = toxic_mask_weights("toxic_context", SRC, SRC_TOX, TGT, [False] * 7, eos_positions=[6], context_window=0)
    assert r.weights == [0, 0, 1, 1, 1, 0, 1]


def test_deleted_toxic_span_keeps_the_following_token():
    src = ["shut", "the", "fuck", "up", "now"]
    tox = [False, False, True, False, False]
    tgt = ["shut", "the", "up", "now", "</s>"]  # 'fuck' deleted: the token after it (pos 2) is kept
    assert toxic_span_positions(src, tox, tgt) == [2]
    assert toxic_mask_weights("toxic_only", src, tox, tgt, [False] * 5, [4]).weights == [0, 0, 1, 0, 1]


def test_normalised_token_alignment_ignores_case_and_space_markers():
    src = ["Ġyou", "Ġstupid", "Ġdog"]
    tgt = ["You", "Ġsilly", "Ġdog"]
    assert toxic_span_positions(src, [False, True, False], tgt) == [1]


def test_inverse_toxic_drops_toxic_labels_only():
    tgt = ["this", "is", "shit", "</s>"]
    r = toxic_mask_weights("inverse_toxic", SRC, SRC_TOX, tgt, [False, False, True, False], [3])
    assert r.weights == [1, 1, 0, 1]


def test_pair_without_toxic_span_keep_or_skip():
    src, tox, tgt = ["you", "are", "wrong"], [False, False, False], ["you", "are", "mistaken", "</s>"]
    keep = toxic_mask_weights("toxic_only", src, tox, tgt, [False] * 4, [3], no_span="keep")
    assert keep.weights == [1, 1, 1, 1] and not keep.found_span and not keep.skipped
    skip = toxic_mask_weights("toxic_only", src, tox, tgt, [False] * 4, [3], no_span="skip")
    assert skip.weights == [0, 0, 0, 0] and skip.skipped


def test_unknown_strategy():
    with pytest.raises(ValueError, match="mask_strategy must be one of"):
        toxic_mask_weights("everything", SRC, SRC_TOX, TGT, [False] * 7, [6])


# ---- edges and exact results (kill the mutants listed in docs/mutation.md) ------------------------------------

def test_penalty_without_toxic_ids_is_a_zero_that_keeps_the_graph():
    logits = torch.randn(1, 2, 5, requires_grad=True)
    p = toxic_penalty(logits, torch.tensor([[1, 2]]), torch.empty(0, dtype=torch.long))
    assert p.item() == 0.0 and p.requires_grad


def test_span_alignment_markers_copies_and_deletions():
    # sentencepiece / wordpiece markers are stripped before aligning
    assert toxic_span_positions(["\u2581you", "\u2581are", "\u2581idiot"], [False, False, True],
                                ["you", "are", "kind"]) == [2]
    assert toxic_span_positions(["you", "##r", "idiot"], [False, False, True], ["you", "r", "kind"]) == [2]
    # a toxic word copied unchanged is not a rewrite
    assert toxic_span_positions(["you", "idiot"], [False, True], ["you", "idiot"]) == []
    # a toxic span deleted at the very end has no following token to keep
    assert toxic_span_positions(["you", "are", "idiot"], [False, False, True], ["you", "are"]) == []
    # long sequences: no autojunk heuristic (a frequent token would otherwise stop matching)
    long_src, long_tgt = ["a"] * 210 + ["idiot"], ["a"] * 210 + ["nice"]
    assert toxic_span_positions(long_src, [False] * 210 + [True], long_tgt) == [210]


def test_mask_weights_defaults_flags_and_edges():
    src, tox = ["you", "idiot", "now", "go", "away", "please"], [False, True, False, False, False, False]
    tgt = ["you", "friend", "now", "go", "away", "please"]
    # default window is 2; a span at position 1 reaches back to position 0
    r = toxic_mask_weights("toxic_context", src, tox, tgt, [False] * 6, eos_positions=[])
    assert r.weights == [1, 1, 1, 1, 0, 0] and r.found_span is True and r.skipped is False
    # EOS at position 0 is kept; EOS positions outside the target are ignored
    r = toxic_mask_weights("toxic_only", src, tox, tgt, [False] * 6, eos_positions=[0, 6])
    assert r.weights == [1, 1, 0, 0, 0, 0]
    r = toxic_mask_weights("inverse_toxic", src, tox, tgt, [False, True, False, False, False, False], [])
    assert r.weights == [1, 0, 1, 1, 1, 1] and r.found_span is True and r.skipped is False
    # no toxic span: the default keeps the full loss
    r = toxic_mask_weights("toxic_only", ["a", "b"], [False, False], ["c", "d"], [False, False], [])
    assert r.weights == [1, 1] and r.found_span is False and r.skipped is False
    r = toxic_mask_weights("toxic_only", ["a", "b"], [False, False], ["c", "d"], [False, False], [], no_span="skip")
    assert r.weights == [0, 0] and r.found_span is False and r.skipped is True
    with pytest.raises(ValueError, match=r"^mask_strategy must be one of toxic_only, toxic_context, inverse_toxic "
                                         r"\(got 'all'\)$"):
        toxic_mask_weights("all", src, tox, tgt, [False] * 6, [])
