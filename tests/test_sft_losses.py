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
