"""Pure reward and evaluation arithmetic, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rewards.checks import copy_flags, empty_flags, is_length_blowup, length_blowup_flags
from detoxrl.metrics import accuracy, joint, length_ratio, roc_auc
from rewards.mixing import active_weights, mix, mix_product, mix_weighted_sum, penalty


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


SCORES = {"toxicity": t(0.9, 0.2), "similarity": t(0.5, 1.0), "fluency": t(0.8, 0.5)}  # s_tox = 1 - toxicity


def test_weighted_sum_by_hand():
    # sentence 0: (2*0.9 + 1*0.5 + 1*0.8) / 4 = 3.1 / 4 = 0.775 ; sentence 1: (0.4 + 1.0 + 0.5) / 4 = 0.475
    out = mix_weighted_sum(SCORES, {"toxicity": 2, "similarity": 1, "fluency": 1})
    assert out.tolist() == pytest.approx([0.775, 0.475])


def test_weighted_sum_skips_zero_weights():
    # only toxicity and similarity: (0.9 + 0.5) / 2 = 0.7 ; (0.2 + 1.0) / 2 = 0.6
    out = mix_weighted_sum(SCORES, {"toxicity": 1, "similarity": 1, "fluency": 0})
    assert out.tolist() == pytest.approx([0.7, 0.6])


def test_product_by_hand():
    # sentence 0: 0.9^2 * 0.5 * 0.8 = 0.81 * 0.4 = 0.324 ; sentence 1: 0.04 * 1.0 * 0.5 = 0.02
    out = mix_product(SCORES, {"toxicity": 2, "similarity": 1, "fluency": 1})
    assert out.tolist() == pytest.approx([0.324, 0.02])
    # fractional weight: 0.25 ** 0.5 = 0.5; weight 0 drops the term (no 0 ** 0)
    half = mix_product({"similarity": t(0.25), "fluency": t(0.0)}, {"similarity": 0.5, "fluency": 0})
    assert half.tolist() == pytest.approx([0.5])


def test_product_does_not_pay_for_copying_a_toxic_input():
    copy = {"toxicity": t(0.05), "similarity": t(1.0)}  # s_tox = 0.05 for a toxic copy
    w = {"toxicity": 1, "similarity": 1}
    assert mix("weighted_sum", copy, w).item() == pytest.approx(0.525)
    assert mix("product", copy, w).item() == pytest.approx(0.05)


def test_weights_must_be_usable():
    with pytest.raises(ValueError, match="all reward weights are 0"):
        active_weights({"toxicity": 0, "similarity": 0.0})
    with pytest.raises(ValueError, match="must be >= 0"):
        active_weights({"toxicity": -1})
    with pytest.raises(ValueError, match="form must be"):
        mix("sum", SCORES, {"toxicity": 1})


def test_penalties_by_hand():
    flags = {"copy": torch.tensor([True, False, True]), "empty": torch.tensor([False, True, False]),
             "length_blowup": torch.tensor([True, False, False])}
    out = penalty(flags, {"copy": 0.5, "empty": 1.0, "length_blowup": 0.25})
    assert out.tolist() == pytest.approx([0.75, 1.0, 0.5])


def test_checks():
    sources = ["you idiot", "this is shit .", "short", "fine"]
    outputs = ["You, IDIOT!", "this is bad.", "a much much longer output", "..."]
    assert copy_flags(sources, outputs) == [True, False, False, False]
    assert empty_flags(outputs) == [False, False, False, True]
    # len("a much much longer output") = 25 > 2 * 5 ; 12 > 2 * 14 is false
    assert length_blowup_flags(sources, outputs, 2.0) == [False, False, True, False]
    assert not is_length_blowup("abcde", "abcdefghij", 2.0)  # 10 is not > 10
    assert is_length_blowup("abcde", "abcdefghijk", 2.0)


def test_joint_is_mean_of_products():
    # (1*0.5*1 + 0.5*0.5*0.8 + 0*1*1) / 3 = (0.5 + 0.2 + 0) / 3
    assert joint([1, 0.5, 0], [0.5, 0.5, 1], [1, 0.8, 1]) == pytest.approx(0.7 / 3)


def test_roc_auc_by_hand():
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    # pairs (pos, neg): (0.8,0.3) win, (0.8,0.9) loss, (0.5,0.3) win, (0.5,0.9) loss -> 2/4
    assert roc_auc([1, 0, 1, 0], [0.8, 0.3, 0.5, 0.9]) == 0.5
    # a tie counts 1/2: pos 0.5 vs neg 0.5 -> 0.5, pos 0.5 vs neg 0.1 -> 1 => 0.75
    assert roc_auc([1, 0, 0], [0.5, 0.5, 0.1]) == 0.75
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_accuracy_and_length_ratio():
    assert accuracy([1, 0, 1, 0], [0.7, 0.2, 0.4, 0.5]) == 0.5  # 0.5 >= threshold counts as toxic
    assert length_ratio(["abcd", "ab  "], ["ab", "abcd"]) == 1.0  # (2 + 4) / (4 + 2)
    assert length_ratio(["abcd"], ["a"]) == 0.25


# ---- edges and exact messages (kill the mutants listed in docs/mutation.md) -----------------------------------

def test_product_clamps_scores_into_0_1():
    out = mix_product({"a": t(-0.5, 1.5, 0.25)}, {"a": 2.0})
    assert out.tolist() == pytest.approx([0.0, 1.0, 0.0625])


def test_penalty_flag_without_coefficient_costs_nothing_and_messages():
    flags = {"copy": torch.tensor([True, False]), "unknown": torch.tensor([True, True])}
    assert penalty(flags, {"copy": 0.5}).tolist() == pytest.approx([0.5, 0.0])
    with pytest.raises(ValueError, match=r"^no penalty flags given$"):
        penalty({}, {"copy": 0.5})
    with pytest.raises(ValueError, match=r"^all reward weights are 0; give at least one component a weight > 0$"):
        active_weights({"a": 0.0})
    with pytest.raises(ValueError, match=r"^form must be one of weighted_sum, product \(got 'sum'\)$"):
        mix("sum", SCORES, {"toxicity": 1.0})
