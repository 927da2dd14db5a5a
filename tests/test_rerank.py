"""Best-of-n decoding (``detoxrl/rerank.py``): the choice, the batching of reward calls, the seed, the
``Detoxifier`` and ``detox`` wiring, the refusal of beam search, the ``@best_of=N`` system specs of
``detox-eval`` (end to end on a tiny model, checked against a direct best-of-n call) and the review page."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from detoxrl.errors import ConfigError, UserError
from detoxrl.generate import GenerationSettings, generate_rewrites, sample_candidates
from evaluation.infer import Detoxifier, main as detox_main
from detoxrl.rerank import Reranked, best_of_n, pick_best, rerank

TEXTS = ["you are a stupid idiot", "shut up", "", "this is some bullshit , shut the fuck up", "what a stupid day"]


def o_share(text: str) -> float:
    return text.count("o") / max(len(text), 1)


class ToyScorer:
    """Score = share of 'o' characters; records the size of every call."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, sources, outputs):
        assert len(sources) == len(outputs)
        self.calls.append(len(outputs))
        return [o_share(o) for o in outputs]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dir):
    """A run folder around the tiny llama: merged/ + detoxrl.json (greedy, 6 new tokens, batches of 8)."""
    root = tmp_path_factory.mktemp("bon")
    shutil.copytree(tiny_dir("llama"), root / "merged")
    card = {"family": "causal", "base_model": "tiny", "prompt": {"prompt_format": "chat"},
            "generation": {"max_new_tokens": 6, "gen_batch_size": 8}, "stage": "sft"}
    (root / "detoxrl.json").write_text(json.dumps(card))
    return str(root)


# ---- the choice ------------------------------------------------------------------------------------------------

def test_pick_best_takes_the_first_of_equal_scores_and_never_a_nan():
    assert pick_best([[0.1, 0.5, 0.5], [0.3, 0.2, 0.1], [math.nan, 0.0, -1.0], [math.nan, math.nan], [0.2]]) == \
        [1, 0, 1, 0, 0]


def test_best_of_first_k_reads_the_best_of_each_inputs_first_k_candidates():
    cands = [["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"], ["", "", "", ""]]
    scores = [[0.1, 0.5, 0.2, 0.9], [0.7, 0.7, 0.8, 0.0], [math.nan] * 4]
    result = Reranked(["a3", "b2", ""], cands, scores, [[False] * 4] * 3, [3, 2, 0])
    assert result.best_of_first(4) == result.outputs  # k = n is the call's own choice
    assert result.best_of_first(2) == ["a1", "b0", ""]  # a3 and b2 are out of reach; a tie keeps the first
    assert result.best_of_first(1) == ["a0", "b0", ""]
    for k in (0, 5):
        with pytest.raises(ValueError, match="k must be in 1..4"):
            result.best_of_first(k)


def test_rerank_scores_every_candidate_in_one_call_and_penalises_truncation():
    scorer = ToyScorer()
    scores = rerank(["a", "b"], [["oo", "xo", "x"], ["o", "xx", "ox"]], scorer,
                    truncated=[[False, True, False], [True, False, False]], truncation_penalty=0.25)
    assert scorer.calls == [6]
    assert scores == [[1.0, 0.5 - 0.25, 0.0], [1.0 - 0.25, 0.0, 0.5]]
    assert pick_best(scores) == [0, 0]
    with pytest.raises(ValueError, match="returned 1 scores for 2 candidates"):
        rerank(["a"], [["x", "y"]], lambda s, o: [0.0])


# ---- best_of_n on a tiny model ----------------------------------------------------------------------------------

def test_best_of_n_keeps_the_highest_scoring_sample_with_one_reward_call_per_batch(run):
    det = Detoxifier.from_pretrained(run, device="cpu")
    scorer = ToyScorer()
    settings = GenerationSettings(max_new_tokens=6, gen_batch_size=8, best_of=4, temperature=1.0, seed=7)
    result = best_of_n(det.model, det.formatter, TEXTS, settings, scorer)
    # 4 non-blank texts, 8 // 4 = 2 texts per generate call -> 2 calls of 8 candidates each
    assert scorer.calls == [8, 8] and result.scorer_calls == 2
    assert result.outputs[2] == "" and result.candidates[2] == [""] * 4  # a blank input costs nothing
    for i, text in enumerate(TEXTS):
        if not text:
            continue
        assert len(result.candidates[i]) == 4 and result.scores[i] == [o_share(c) for c in result.candidates[i]]
        best = max(range(4), key=lambda j: (o_share(result.candidates[i][j]), -j))  # highest, first on ties
        assert result.best[i] == best and result.outputs[i] == result.candidates[i][best]
    assert len({c for cands in result.candidates for c in cands}) > 4  # they are samples, not one greedy copy
    assert result.generate_seconds > 0 and result.rerank_seconds >= 0

    class RandomDrawingScorer(ToyScorer):  # a judge that loads lazily draws from torch's RNG
        def __call__(self, sources, outputs):
            torch.rand(1000)
            return super().__call__(sources, outputs)

    again = best_of_n(det.model, det.formatter, TEXTS, settings, RandomDrawingScorer())
    assert again.candidates == result.candidates  # seeded per batch: the same call gives the same samples
    other = best_of_n(det.model, det.formatter, TEXTS, GenerationSettings(**{**settings.__dict__, "seed": 8}),
                      ToyScorer())
    assert other.candidates != result.candidates


def test_sampling_leaves_the_callers_rng_alone(run):
    det = Detoxifier.from_pretrained(run, device="cpu")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate_rewrites(det.model, det.formatter, ["shut up"], GenerationSettings(max_new_tokens=3, do_sample=True))
    best_of_n(det.model, det.formatter, ["shut up"], GenerationSettings(max_new_tokens=3, best_of=2), ToyScorer())
    assert torch.equal(torch.rand(3), expected)


def test_truncation_flags_follow_the_eos(run):
    det = Detoxifier.from_pretrained(run, device="cpu")
    eos = det.formatter.tokenizer.convert_tokens_to_ids("<|im_end|>")
    head = det.model.lm_head
    always_eos = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():  # EOS is the only likely token: every sample ends at once
        always_eos.weight.zero_()
        always_eos.bias.fill_(-100.0)
        always_eos.bias[eos] = 100.0
    det.model.lm_head = always_eos
    try:
        cands, trunc = sample_candidates(det.model, det.formatter, ["shut up", "you idiot"], 3,
                                         GenerationSettings(max_new_tokens=4))
    finally:
        det.model.lm_head = head
    assert trunc == [[False] * 3, [False] * 3] and cands == [[""] * 3, [""] * 3]
    cands, trunc = sample_candidates(det.model, det.formatter, ["shut up"], 3, GenerationSettings(max_new_tokens=2))
    assert len(cands[0]) == 3 and all(trunc[0])  # the random tiny model does not stop within 2 tokens


# ---- Detoxifier and detox ----------------------------------------------------------------------------------------

def test_detoxifier_best_of_uses_the_reranker_and_greedy_stays_the_default(run, monkeypatch):
    greedy = Detoxifier.from_pretrained(run, device="cpu")
    assert greedy.settings.best_of == 1 and greedy.decoding() == "greedy"
    calls = []
    real = greedy.model.generate
    monkeypatch.setattr(greedy.model, "generate", lambda **kw: calls.append(kw) or real(**kw))
    greedy(["shut up", "you idiot"])
    assert calls and all(not kw.get("do_sample") and "num_return_sequences" not in kw for kw in calls)

    scorer = ToyScorer()
    det = Detoxifier.from_pretrained(run, device="cpu", best_of=3, temperature=0.9, reranker=scorer)
    out = det(TEXTS)
    last = det.last_rerank
    assert out == last.outputs and out[2] == "" and scorer.calls
    assert all(o_share(out[i]) == max(map(o_share, last.candidates[i])) for i in (0, 1, 3, 4))
    assert det.decoding().startswith("best of 3 (temperature 0.9")
    with pytest.raises(UserError, match="needs a reranker"):
        Detoxifier(det.model, det.formatter, GenerationSettings(best_of=2))("shut up")


def test_best_of_with_beam_search_is_refused_before_the_model_loads(run, tmp_path, monkeypatch):
    import evaluation.infer as infer

    monkeypatch.setattr(infer, "load_trained", lambda *a, **k: pytest.fail("the model must not load"))
    monkeypatch.setattr(infer, "load_reward_scorer", lambda *a, **k: pytest.fail("the reranker must not load"))
    with pytest.raises(ConfigError, match="best_of 4 samples its candidates and cannot be combined with num_beams 2"):
        Detoxifier.from_pretrained(run, best_of=4, num_beams=2)
    beams = tmp_path / "beams"
    shutil.copytree(run, beams)
    card = json.loads((beams / "detoxrl.json").read_text())
    card["generation"]["num_beams"] = 3
    (beams / "detoxrl.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="its card's decoding with the settings given: best_of 2 .* num_beams 3"):
        Detoxifier.from_pretrained(str(beams), best_of=2)


def test_detox_cli_best_of_reranks_with_the_reward_config(run, tmp_path, capsys, toy_data):
    _, lex = toy_data
    cfg = tmp_path / "rerank.yaml"
    cfg.write_text(f"toxicity_backend: lexicon\nw_similarity: 0\nw_fluency: 0\nlexicon_dir: {lex}\n"
                   "lexicons: [ldnoobw]\n")
    args = ["--model", run, "--num_threads", str(torch.get_num_threads()), "--best_of", "2", "--rerank_config",
            str(cfg), "--max_new_tokens", "3"]
    assert detox_main([*args, "you stupid idiot", "shut up"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert detox_main([*args[:4], "--best_of", "2", "--rerank_config", str(tmp_path / "nope.yaml"), "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rerank_config" in err[0] and "nope.yaml' not found" in err[0]


# ---- detox-eval system specs -------------------------------------------------------------------------------------

def test_system_specs_with_decoding_options(run, tmp_path):
    from evaluation.systems import parse_system

    s = parse_system(f"ppo={run}@best_of=8")
    assert (s.name, s.kind, s.ref, s.decoding) == ("ppo", "model", run, {"best_of": 8})
    s = parse_system(f"{run}@best_of=4,temperature=0.5,top_p=0.9,seed=3")
    assert s.name.endswith("@best_of=4,temperature=0.5,top_p=0.9,seed=3")
    assert s.decoding == {"best_of": 4, "temperature": 0.5, "top_p": 0.9, "seed": 3}
    assert parse_system(f"plain={run}").decoding == {}
    weird = tmp_path / "a@b=1"  # a real folder whose name looks like an option keeps its name
    shutil.copytree(run, weird)
    assert parse_system(str(weird)).decoding == {}
    preds = tmp_path / "p.txt"
    preds.write_text("x\n")
    bad = {f"{run}@best_of=two": "best_of must be a whole number >= 1 (got 'two')",
           f"{run}@best_of=0": "best_of must be a whole number >= 1 (got '0')",
           f"{run}@best_of=2.5": "best_of must be a whole number >= 1",
           f"{run}@temperature=0": "temperature must be a number > 0",
           f"{run}@top_p=1.5": "top_p must be a number in (0, 1]",
           f"{run}@beams=2": "unknown decoding option 'beams'",
           f"{run}@best_of=2,best_of=3": "best_of is given twice",
           "delete@best_of=4": "decoding options apply to model systems only",
           f"{preds}@best_of=4": "decoding options apply to model systems only"}
    for spec, message in bad.items():
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                           .replace("]", r"\]")):
            parse_system(spec)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from tests.grid_helpers import build_tiny_sentence_encoder

    return build_tiny_sentence_encoder(str(tmp_path_factory.mktemp("enc") / "st"))


def test_eval_best_of_system_matches_a_direct_best_of_n_call(run, tmp_path, toy_data, encoder, tiny_dir, monkeypatch):
    """detox-eval's ``tiny@best_of=3`` row holds exactly what best_of_n gives with the same model, settings and
    reranking reward; its timings are in eval.json, and a reranker sharing a judge's model is warned about."""
    from evaluation.evaluate import load_test_set, main as eval_main, parse
    from rewards.scorer import load_reward_scorer

    tsv, lex = toy_data
    rerank_cfg = tmp_path / "rerank.yaml"
    rerank_cfg.write_text(f"toxicity_backend: lexicon\nw_fluency: 0\nsimilarity_model: {encoder}\n"
                          f"lexicon_dir: {lex}\nlexicons: [ldnoobw]\nreward_device: cpu\n")
    out = tmp_path / "ev"
    argv = ["--dataset", str(tsv), "--dev_size", "4", "--lexicon_dir", str(lex), "--lexicons", "ldnoobw",
            "--judge_toxicity_backend", "lexicon", "--judge_similarity_model", encoder, "--judge_fluency_model",
            tiny_dir("llama"), "--judge_device", "cpu", "--eval_device", "cpu", "--max_new_tokens", "5",
            "--gen_batch_size", "6", "--temperature", "0.8", "--num_threads", str(torch.get_num_threads()),
            "--rerank_config", str(rerank_cfg), "--output_dir", str(out),
            "--systems", f"greedy={run}", f"bo={run}@best_of=3,seed=5"]
    import evaluation.evaluate as ev

    seen: dict[str, list[str]] = {}
    real_rows = ev.sentence_rows
    monkeypatch.setattr(ev, "sentence_rows", lambda name, s, outputs, *a: seen.setdefault(name, list(outputs)) and
                        real_rows(name, s, outputs, *a))
    assert eval_main(argv) == 0
    report = json.loads((out / "eval.json").read_text())
    row = report["systems"]["bo"]
    assert (row["best_of"], row["temperature"], row["seed"]) == (3, 0.8, 5)
    assert row["sampling_seconds"] > 0 and row["rerank_seconds"] > 0 and "best of 3" in row["what"]
    assert "best_of" not in report["systems"]["greedy"]
    assert any("reranked by a reward" in w and "SIM" in w for w in report["warnings"])

    cfg, _, data_cfg, *_ = parse(argv)
    test = load_test_set(data_cfg, "dev", None)
    det = Detoxifier.from_pretrained(run, device="cpu", max_new_tokens=5, gen_batch_size=6)
    direct = best_of_n(det.model, det.formatter, test.sources,
                       GenerationSettings(max_new_tokens=5, gen_batch_size=6, temperature=0.8, best_of=3, seed=5),
                       load_reward_scorer(str(rerank_cfg)))
    assert seen["bo"] == direct.outputs
    assert seen["greedy"] == det(test.sources)
    assert direct.outputs != det(test.sources)  # best-of-3 is not the greedy decoding


def test_eval_refuses_best_of_with_beams_before_loading(run, tmp_path, toy_data):
    from evaluation.evaluate import main as eval_main

    tsv, lex = toy_data
    assert eval_main(["--dataset", str(tsv), "--dev_size", "4", "--num_beams", "2", "--output_dir",
                      str(tmp_path / "ev"), "--systems", f"bo={run}@best_of=2"]) == 2
    assert not (tmp_path / "ev").exists()


# ---- review page -------------------------------------------------------------------------------------------------

def test_review_page_shows_the_decoding(tmp_path):
    from feedback.server import PAGE, ReviewApp
    from feedback.store import FeedbackStore

    app = ReviewApp(FeedbackStore(str(tmp_path / "fb.db")), lambda t: t, "m@1", decoding="best of 4 (...)")
    assert app.info()["decoding"] == "best of 4 (...)"
    assert ReviewApp(FeedbackStore(str(tmp_path / "fb2.db")), lambda t: t, "m@1").info()["decoding"] == "greedy"
    assert 'id="decoding"' in PAGE and 'info.decoding' in PAGE


def test_feedback_serve_decodes_best_of_n_and_says_so(run, tmp_path, toy_data, monkeypatch, capsys):
    import feedback.server as server
    from feedback.cli import main as feedback_main

    _, lex = toy_data
    cfg = tmp_path / "rerank.yaml"
    cfg.write_text(f"toxicity_backend: lexicon\nw_similarity: 0\nw_fluency: 0\nlexicon_dir: {lex}\n"
                   "lexicons: [ldnoobw]\n")
    apps = []

    class Server:  # bound before the model loads; its app is set once the model is there
        app = None

        def url(self):
            return "http://127.0.0.1:1/"

        def serve_forever(self):
            apps.append(self.app)
            raise KeyboardInterrupt

        def server_close(self):
            pass

    monkeypatch.setattr(server, "bind", lambda host, port, token=None: Server())
    assert feedback_main(["serve", "--model", run, "--store", str(tmp_path / "fb.db"), "--best_of", "3",
                          "--temperature", "0.9", "--rerank_config", str(cfg), "--max_new_tokens", "3"]) == 0
    (app,) = apps
    assert app.decoding.startswith("best of 3 (temperature 0.9") and str(cfg) in app.decoding
    assert app.info()["decoding"] == app.decoding and len(app.rewrite(["you stupid idiot"])) == 1
    assert feedback_main(["serve", "--model", run, "--store", str(tmp_path / "fb.db"), "--best_of", "0"]) == 2
    assert "best_of must be >= 1" in capsys.readouterr().err


def test_best_of_n_reranks_with_the_reward_the_run_was_trained_with(tmp_path):
    """No rerank_config: the RewardConfig of the run's resolved_config.yaml (also from its merged/ folder); a
    rerank_config given wins; a folder without one falls back to configs/rewards/default.yaml."""
    import yaml

    from rewards.scorer import reward_source

    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    (run / "resolved_config.yaml").write_text(yaml.safe_dump({
        "RewardConfig": {"w_fluency": 0.0, "toxicity_backend": "lexicon", "copy_penalty": 0.25, "gone_field": 1},
        "VocabConfig": {"lexicon_lang": "en"}}))
    for ref in (str(run), str(run / "merged")):
        reward, vocab, where = reward_source(None, ref)
        assert (reward.w_fluency, reward.toxicity_backend, reward.copy_penalty) == (0.0, "lexicon", 0.25)
        assert where == f"the reward {ref} was trained with" and vocab.lexicon_lang == "en"
    given = tmp_path / "r.yaml"
    given.write_text("w_similarity: 2.0\n")
    reward, _, where = reward_source(str(given), str(run))
    assert (reward.w_similarity, reward.w_fluency, where) == (2.0, 1.0, str(given))
    reward, _, where = reward_source(None, str(tmp_path))
    assert (reward.w_fluency, where) == (1.0, "configs/rewards/default.yaml")
