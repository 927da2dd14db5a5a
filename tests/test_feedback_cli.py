"""``detox-feedback`` as a user runs it: add (flags, a rewrite by --model, a JSONL file), list, export
(records, pairs, verdicts), serve (a real process with a tiny model, over HTTP), train, and the
one-line errors (exit code 2)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from detoxrl.data import read_instruction_json
from feedback.cli import main
from feedback.store import FeedbackStore
from tests.test_feedback_train import setup  # noqa: F401 - the toy data + tiny parent runs fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_add_list_and_export(tmp_path, capsys):
    store = str(tmp_path / "fb.db")
    assert main(["add", "--store", store, "--input", "you idiot", "--output", "you are wrong", "--verdict", "accept",
                 "--model_version", "sft@1"]) == 0
    assert "added record 1 (accept, model sft@1)" in capsys.readouterr().out
    assert main(["add", "--store", store, "--input", "shut up", "--output", "shut up", "--correction",
                 "please stop", "--model_version", "sft@1"]) == 0  # a correction implies reject
    records_file = tmp_path / "in.jsonl"
    records_file.write_text(json.dumps({"input": "damn it", "output": "oh no", "verdict": "reject"}) + "\n"
                            + json.dumps({"input": "you moron", "output": "you person", "verdict": "accept",
                                          "model_version": "fb@2"}) + "\n")
    assert main(["add", "--store", store, "--file", str(records_file), "--model_version", "sft@1"]) == 0
    assert "added 2 records (ids 3-4)" in capsys.readouterr().out
    records = FeedbackStore(store).records()
    assert [(r.verdict, r.correction, r.model_version) for r in records] == [
        ("accept", None, "sft@1"), ("reject", "please stop", "sft@1"), ("reject", None, "sft@1"),
        ("accept", None, "fb@2")]

    assert main(["list", "--store", store, "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 records (2 accepted, 2 rejected, 1 with a correction); newest 2:" in out
    assert re.search(r"^\s+4 .* fb@2 .* accept", out, re.M) and not re.search(r"^\s+1 ", out, re.M)
    assert main(["list", "--store", store, "--format", "jsonl", "--verdict", "reject", "--limit", "0"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [3, 2]

    assert main(["export", "--store", store, "--output", str(tmp_path / "r.csv")]) == 0
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"] and rows[1]["correction"] == "please stop"
    assert main(["export", "--store", store, "--output", str(tmp_path / "r.jsonl"), "--model_version", "fb@2"]) == 0
    assert [json.loads(line)["input"] for line in open(tmp_path / "r.jsonl")] == ["you moron"]
    assert main(["export", "--store", store, "--output", str(tmp_path / "pairs.jsonl"), "--what", "pairs"]) == 0
    pairs = read_instruction_json(str(tmp_path / "pairs.jsonl"))  # what detox-sft --dataset reads
    assert [(p.source, p.target) for p in pairs] == [("you idiot", "you are wrong"), ("shut up", "please stop"),
                                                     ("you moron", "you person")]
    assert main(["export", "--store", store, "--output", str(tmp_path / "v.jsonl"), "--what", "verdicts"]) == 0
    verdicts = [json.loads(line) for line in open(tmp_path / "v.jsonl")]
    assert [(v["input"], v["label"]) for v in verdicts] == [("you idiot", True), ("shut up", True),
                                                            ("shut up", False), ("damn it", False),
                                                            ("you moron", True)]


@pytest.mark.parametrize("args,message", [
    (["add", "--input", "x", "--output", "y", "--verdict", "accept"], "say which model wrote the output"),
    (["add", "--input", "x", "--model_version", "v"], "--verdict accept|reject is required"),
    (["add", "--input", "x", "--verdict", "accept", "--model_version", "v"], "--output is required unless --model"),
    (["add", "--input", "x", "--output", "y", "--verdict", "maybe", "--model_version", "v"],
     "argument --verdict: invalid choice: 'maybe'"),
    (["list", "--store", "{tmp}/missing.db"], "does not exist; collect feedback first"),
    (["export", "--output", "{tmp}/x.txt", "--store", "{tmp}/fb.db"], "records are written as .jsonl or .csv"),
    (["serve", "--host", "0.0.0.0", "--store", "{tmp}/fb.db"], "binding 0.0.0.0 exposes the review page"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["train", "--kto_batch_size", "1"], "kto_batch_size must be >= 2"),
])
def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys, args, message):
    FeedbackStore(str(tmp_path / "fb.db")).add("a", "b", "accept", "v")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--store" not in args and args[0] in ("add",):
        args += ["--store", str(tmp_path / "fb.db")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_bad_line_in_a_records_file_adds_nothing(tmp_path, capsys):
    store = str(tmp_path / "fb.db")
    path = tmp_path / "in.jsonl"
    path.write_text('{"input": "a", "output": "b", "verdict": "accept"}\n{"input": "c", "output": "d", '
                    '"verdict": "perhaps"}\n')
    assert main(["add", "--store", store, "--file", str(path), "--model_version", "v"]) == 2
    assert "verdict 'perhaps' is not one of accept, reject; nothing was added" in capsys.readouterr().err
    assert FeedbackStore(store).count()["records"] == 0


def test_serve_runs_a_real_model_and_records_a_verdict(tiny_dir, tmp_path):
    store = str(tmp_path / "fb.db")
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "feedback.cli", "serve", "--model", tiny_dir("llama"), "--store",
                             store, "--port", "0", "--max_new_tokens", "4"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"review page for model (\S+): (http://127\.0\.0\.1:\d+/)", line)
        assert match, line + proc.stderr.read()[-3000:] if proc.poll() is not None else line
        version, url = match.groups()
        assert version == f"llama@{version.split('@')[1]}"  # a plain model folder: name@hash of config.json

        def post(path, body):
            req = urllib.request.Request(url + path.lstrip("/"), data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as res:
                return json.loads(res.read())

        rewrite = post("/api/rewrite", {"text": "you are a stupid idiot"})
        assert rewrite["model_version"] == version and isinstance(rewrite["output"], str)
        record = post("/api/feedback", {"rewrite_id": rewrite["rewrite_id"], "verdict": "reject",
                                        "correction": "you are mistaken"})
        assert record["id"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (r,) = FeedbackStore(store).records()
    assert (r.input, r.verdict, r.correction, r.model_version) == ("you are a stupid idiot", "reject",
                                                                   "you are mistaken", version)


def test_add_rewrites_with_the_model_and_train_makes_a_new_version(setup, tmp_path, capsys):  # noqa: F811
    root, sft_yaml, parents = setup
    store = str(tmp_path / "fb.db")
    assert main(["add", "--store", store, "--model", parents["llama"], "--input", "you idiot", "--correction",
                 "you are wrong"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rewrite: ") and "corrected, model parent-llama@" in out
    new = tmp_path / "v2"
    assert main(["train", "--config", os.path.join(ROOT, "configs", "feedback", "default.yaml"), "--store", store,
                 "--model", parents["llama"], "--output_dir", str(new), "--sft_config", sft_yaml,
                 "--sft_max_steps", "1", "--sft_batch_size", "2", "--replay_pairs", "4", "--num_threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "new model version v2@" in out and "(sft, " in out  # 1 accepted/1 rejected < min_verdicts: no KTO
    assert FeedbackStore(store).trainings()[0].new_version == json.load(open(new / "detoxrl.json"))["version"]
