"""The supervised stage end to end on tiny models: features, every loss on T5/BART/Llama and QLoRA,
learning on a toy set, resume, bad input, and 2 CPU processes under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from detoxrl.data import Pair
from detoxrl.errors import ConfigError, UserError
from detoxrl.models.loading import load_tokenizer
from detoxrl.prompts import PromptConfig, PromptFormatter
from detoxrl.vocab import ToxicLexicon
from sft.features import FeatureBuilder, PairCollator
from sft.losses import IGNORE
from sft.train import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def _args(model_dir, data, out, *extra):
    tsv, lex = data
    return ["--model_name_or_path", model_dir, "--dataset", str(tsv), "--lexicon_dir", str(lex),
            "--lexicons", "ldnoobw", "--dev_size", "4", "--output_dir", str(out), "--use_cpu", "true",
            "--report_to", "none", "--per_device_train_batch_size", "4", "--max_steps", "2", "--logging_steps", "1",
            "--eval_steps", "2", "--save_steps", "2", "--guard_samples", "2", "--guard_max_new_tokens", "4",
            "--disable_tqdm", "true", *extra]


def test_causal_features_mask_prompt_and_weight_toxic_rewrite(tiny_dir):
    tok = load_tokenizer(tiny_dir("llama"))
    fmt = PromptFormatter(PromptConfig(), tok, "causal")
    lex = ToxicLexicon(["idiot"])
    builder = FeatureBuilder(fmt, lex, loss="toxic_mask", mask_strategy="toxic_only")
    f = builder.encode(Pair("you are an idiot", "you are wrong"))
    prompt_len = len(tok(fmt.prompt("you are an idiot"), add_special_tokens=False)["input_ids"])
    target = tok("you are wrong", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert f["input_ids"] == f["input_ids"][:prompt_len] + target
    assert f["labels"] == [IGNORE] * prompt_len + target
    # 'an idiot' -> 'wrong' is the toxic rewrite; EOS is always kept; 'you are' is not.
    kept = [tok.convert_ids_to_tokens(t) for t, w in zip(target, f["loss_weights"][prompt_len:]) if w]
    assert "".join(kept).replace("Ġ", " ").strip().startswith("wrong") and kept[-1] == tok.eos_token
    assert f["loss_weights"][:prompt_len] == [0.0] * prompt_len
    assert builder.stats.pairs == 1 and 0 < builder.stats.kept_share < 1


def test_collators_pad_left_for_causal_and_shift_for_seq2seq():
    c = PairCollator(pad_token_id=0, family="causal")
    b = c([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "loss_weights": [0, 1, 1]},
           {"input_ids": [8], "labels": [8], "loss_weights": [1]}])
    assert b["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert b["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, 8]]
    assert b["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    s = PairCollator(pad_token_id=0, family="seq2seq", decoder_start_token_id=0)
    b = s([{"input_ids": [5, 6], "labels": [7, 8, 1], "loss_weights": [1, 0, 1]},
           {"input_ids": [9], "labels": [1], "loss_weights": [1]}])
    assert b["decoder_input_ids"].tolist() == [[0, 7, 8], [0, 0, 0]]
    assert b["labels"].tolist() == [[7, 8, 1], [1, IGNORE, IGNORE]]
    assert b["loss_weights"].tolist() == [[1, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize("kind", ["t5", "bart", "llama"])
@pytest.mark.parametrize("loss", ["ce", "toxic_penalty", "toxic_mask"])
def test_each_loss_trains_and_saves(tiny_dir, toy_data, tmp_path, kind, loss):
    out = tmp_path / "out"
    summary = run(_args(tiny_dir(kind), toy_data, out, "--loss", loss, "--mask_strategy", "toxic_only"))
    assert summary["train_loss"] > 0 and "eval_copy_rate" in summary and "eval_chrf" in summary
    for name in ("adapter/adapter_config.json", "merged/model.safetensors", "merged/tokenizer.json",
                 "README.md", "resolved_config.yaml", "detoxrl.json"):
        assert (out / name).exists(), name
    meta = json.loads((out / "detoxrl.json").read_text())
    assert meta["family"] == ("causal" if kind == "llama" else "seq2seq")
    assert meta["prompt"]["prompt_format"] == ("chat" if kind == "llama" else "prefix")
    if loss == "toxic_mask":
        assert 0 < summary["kept_share"] < 1


def test_qlora_with_toxic_penalty(tiny_dir, toy_data, tmp_path):
    summary = run(_args(tiny_dir("llama"), toy_data, tmp_path / "q", "--finetuning", "qlora", "--loss", "toxic_penalty"))
    assert summary["train_loss"] > 0 and (tmp_path / "q" / "merged" / "model.safetensors").exists()


def test_learning_happens_on_a_toy_set(tiny_dir, toy_data, tmp_path):
    summary = run(_args(tiny_dir("llama"), toy_data, tmp_path / "l", "--finetuning", "full", "--max_steps", "30",
                        "--learning_rate", "3e-3", "--eval_steps", "100", "--save_steps", "100", "--warmup_steps", "0",
                        "--merge_adapter", "false"))
    history = json.loads((tmp_path / "l" / "checkpoint-30" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]


def test_resume_continues_from_saved_step(tiny_dir, toy_data, tmp_path):
    out = tmp_path / "r"
    run(_args(tiny_dir("llama"), toy_data, out, "--max_steps", "2", "--save_steps", "1", "--eval_steps", "10"))
    summary = run(_args(tiny_dir("llama"), toy_data, out, "--max_steps", "4", "--save_steps", "1", "--eval_steps", "10",
                        "--resume_from_checkpoint", "latest"))
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4] and summary["train_loss"] > 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--loss", "focal"], "argument --loss: invalid choice: 'focal'"),
        (["--mask_strategy", "all"], "argument --mask_strategy.*invalid choice: 'all'"),
        (["--gamma", "-0.1"], "gamma must be >= 0"),
        (["--context_window", "-1"], "context_window must be >= 0"),
    ],
)
def test_bad_config_is_one_clear_line(tiny_dir, toy_data, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        run(_args(tiny_dir("llama"), toy_data, tmp_path / "b", *extra))


def test_resume_without_checkpoint(tiny_dir, toy_data, tmp_path):
    with pytest.raises(UserError, match="no checkpoint-\\* folder in output_dir"):
        run(_args(tiny_dir("llama"), toy_data, tmp_path / "none", "--resume_from_checkpoint", "latest"))
    with pytest.raises(UserError, match="is not a checkpoint"):
        run(_args(tiny_dir("llama"), toy_data, tmp_path / "none", "--resume_from_checkpoint", str(tmp_path)))


def test_two_cpu_processes_under_torchrun(tiny_dir, toy_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           os.path.join(ROOT, "sft", "train.py"), *_args(tiny_dir("llama"), toy_data, out, "--ddp_backend", "gloo")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # 20 train pairs: two ranks get 10 each = 3 batches of 4 per epoch, so 2 steps are 2/3 of an
    # epoch (a single process would have 5 batches per epoch: 0.4)
    assert state["epoch"] == pytest.approx(2 / 3)


# ---- compute_loss against a hand-computed loss ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llama", "t5"])
@pytest.mark.parametrize("loss", ["ce", "toxic_penalty", "toxic_mask"])
def test_compute_loss_equals_hand_computed_loss_from_full_logits(tiny_dir, kind, loss):
    """``compute_loss`` = weighted CE (+ gamma * mean toxic mass), computed here from a plain full-logits forward
    (causal: logits[:, :-1] predict labels[:, 1:]) with plain log_softmax, not with sft/losses.py."""
    from collections import defaultdict
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from sft.trainer import DetoxLossMixin

    family = "seq2seq" if kind == "t5" else "causal"
    model = (AutoModelForSeq2SeqLM if kind == "t5" else AutoModelForCausalLM).from_pretrained(tiny_dir(kind))
    tok = load_tokenizer(tiny_dir(kind))
    builder = FeatureBuilder(PromptFormatter(PromptConfig(), tok, family), ToxicLexicon(["idiot", "stupid"]),
                             loss="toxic_mask", mask_strategy="toxic_only")
    pairs = [Pair("you are an idiot", "you are wrong"), Pair("what a stupid day", "what a day it is today")]
    collator = PairCollator(pad_token_id=tok.pad_token_id, family=family,
                            decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None) if family == "seq2seq" else None)
    batch = collator(builder.encode_all(pairs))
    weights = batch["loss_weights"].clone()
    assert 0 < float(weights[batch["labels"] != IGNORE].mean()) < 1  # the mask really drops positions
    toxic_ids = torch.tensor([tok.convert_tokens_to_ids(t) for t in ("Ġidiot", "Ġstupid", "Ġyou", "Ġa")])
    gamma = 0.7
    fake = SimpleNamespace(args=SimpleNamespace(loss=loss, gamma=gamma, logging_steps=1), family=family,
                           toxic_ids=toxic_ids, state=SimpleNamespace(global_step=0), _metrics=defaultdict(list))
    model.eval()  # no dropout: both forwards see the same network
    got = DetoxLossMixin.compute_loss(fake, model, dict(batch))

    with torch.no_grad():
        labels = batch["labels"]
        if family == "causal":
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           position_ids=batch["position_ids"]).logits[:, :-1]
            labels, weights = labels[:, 1:], weights[:, 1:]
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"]).logits
        logp = torch.log_softmax(logits.float(), -1)
        valid = labels != IGNORE
        nll = -logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        w = valid.float() * (weights.float() if loss == "toxic_mask" else 1.0)
        expected = (nll * w).sum() / w.sum()
        if loss == "toxic_penalty":
            mass = logp.exp()[..., toxic_ids].sum(-1)
            expected = expected + gamma * (mass * valid).sum() / valid.sum()
    torch.testing.assert_close(got.detach(), expected, atol=1e-5, rtol=1e-5)


def test_resume_equals_the_uninterrupted_run(tiny_dir, toy_data, tmp_path):
    """Resuming from checkpoint-2 of a 4-step run repeats steps 3-4 exactly: same losses, same final weights."""
    import shutil

    import torch
    from safetensors.torch import load_file

    common = ("--max_steps", "4", "--save_steps", "2", "--eval_steps", "10", "--learning_rate", "1e-2",
              "--merge_adapter", "false")
    run(_args(tiny_dir("llama"), toy_data, tmp_path / "a", *common))
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    os.utime(tmp_path / "b" / "checkpoint-2" / "trainer_state.json", (0, 0))
    run(_args(tiny_dir("llama"), toy_data, tmp_path / "b", *common, "--resume_from_checkpoint", "latest"))
    # steps 1-2 were not trained again (they would rewrite checkpoint-2)
    assert os.stat(tmp_path / "b" / "checkpoint-2" / "trainer_state.json").st_mtime == 0

    def history(out):
        state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
        return [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h]

    assert [s for s, _ in history(tmp_path / "a")] == [1, 2, 3, 4]
    assert history(tmp_path / "b") == history(tmp_path / "a")
    a = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_main_returns_0_and_writes_the_run_folder(tiny_dir, toy_data, tmp_path, capsys):
    from sft.train import main

    out = tmp_path / "m"
    assert main(_args(tiny_dir("llama"), toy_data, out, "--max_steps", "1", "--eval_steps", "10")) == 0
    assert (out / "merged" / "model.safetensors").exists() and (out / "detoxrl.json").exists()
    assert main(_args(tiny_dir("llama"), toy_data, out, "--gamma", "-1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "gamma must be >= 0" in err[-1]


def test_tensorboard_events_land_in_output_dir(tiny_dir, toy_data, tmp_path, monkeypatch):
    """With ``report_to tensorboard`` and no TENSORBOARD_LOGGING_DIR, the events go under ``output_dir``, not into a
    ``runs/`` folder of wherever the command was started."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    out = tmp_path / "tb"
    args = _args(tiny_dir("llama"), toy_data, out)
    args[args.index("--report_to") + 1] = "tensorboard"
    run(args)
    assert not (tmp_path / "runs").exists()
    assert list(out.glob("runs/*/events.out.tfevents.*"))
