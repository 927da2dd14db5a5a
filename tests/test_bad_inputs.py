"""Bad inputs through the real entry points, one table: each row says what must happen.

A bad input must end with exit code 2 and one line on stderr that names the field or path, no
traceback, and no output file left behind; the other rows state their own outcome (exit 141 on a
closed pipe, 403/409 from the review page, the escaped CSV cells, what ``--encoding_errors replace``
keeps). Most rows run ``main(argv)`` in-process and point ``--model`` at a folder that does not exist,
so a check that ran after loading would fail with a different message; the few that need a model
use the tiny models of ``tests/tiny.py``; ``proc`` rows run the command as a subprocess, to see its
real stderr.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import pytest

from evaluation import infer
from detoxrl.data import cli as data_cli
from evaluation import evaluate
from feedback import cli as feedback_cli
from orchestration import ablate, pipeline
from rl import ppo, rft
from sft import train as sft_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAINS = {"detox": infer.main, "detox-eval": evaluate.main, "detox-sft": sft_train.main, "detox-ppo": ppo.main,
         "detox-data": data_cli.main, "detox-ablate": ablate.main, "detox-feedback": feedback_cli.main, "detox-pipeline": pipeline.main, "detox-rft": rft.main}
NOPE = "{tmp}/no-such-model"  # a model that cannot load: rows that must fail first never reach it
BAD_LINE2 = b"you are an idiot\n\xff\xfe broken\nthird line\n"  # byte 17 (0-based) is the first bad one


@dataclass
class Case:
    cmd: str                     # key of MAINS, or "proc:<module>" for a subprocess, or "http"
    argv: list[str]
    rc: int = 2
    err: str | None = None       # must appear in the one stderr line (rc 2) or in stderr
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    stdin: bytes | None = None
    check: str | None = None     # name of an extra check below
    model: bool = False          # needs the tiny llama ({model})
    patch: str | None = None     # name of a fault to inject first (PATCHES below: Ctrl-C, a full disk)


def _sft(*extra):
    return ["--model_name_or_path", NOPE, "--dataset", "{tsv}", "--lexicon_dir", "{lex}", "--lexicons", "ldnoobw",
            "--output_dir", "{tmp}/run", "--use_cpu", "true", "--report_to", "none", *extra]


def _ppo(*extra):
    return ["--model_name_or_path", NOPE, "--dataset", "{tsv}", "--lexicon_dir", "{lex}", "--lexicons", "ldnoobw",
            "--output_dir", "{tmp}/run", "--use_cpu", "true", "--report_to", "none", *extra]


def _rft(*extra):
    return ["--model_name_or_path", NOPE, "--dataset", "{tsv}", "--lexicon_dir", "{lex}", "--lexicons", "ldnoobw",
            "--output_dir", "{tmp}/run", "--report_to", "none", "--toxicity_backend", "lexicon", *extra]


def _eval(*extra):
    return ["--dataset", "{tsv}", "--lexicon_dir", "{lex}", "--lexicons", "ldnoobw", "--dev_size", "4", *extra]


CASES = {
    # ---- work thrown away: output paths are checked before the work
    "detox-output-is-a-folder": Case("detox", ["--model", NOPE, "--input", "{in}", "--output", "{dir}"],
                                     err="--output '{dir}' is a folder"),
    "detox-output-under-a-file": Case("detox", ["--model", NOPE, "--input", "{in}", "--output", "{file}/out.txt"],
                                      err="is a file, not a folder"),
    "eval-output-dir-is-a-file": Case("detox-eval", _eval("--systems", "duplicate", "--output_dir", "{file}"),
                                      err="output_dir '{file}' is a file"),
    "data-export-output-is-a-folder": Case("detox-data", ["export", "--dataset", "{tsv}", "--output", "{dir}"],
                                           err="--output '{dir}' is a folder"),
    "feedback-export-output-is-a-folder": Case("detox-feedback", ["export", "--store", "{store}", "--output", "{dir}"],
                                               err="--output '{dir}' is a folder"),
    # ---- late tracebacks: SFT / PPO fail before loading anything
    "sft-output-dir-is-a-file": Case("detox-sft", _sft("--output_dir", "{file}"), err="output_dir '{file}' is a file"),
    "ppo-output-dir-is-a-file": Case("detox-ppo", _ppo("--output_dir", "{file}"), err="output_dir '{file}' is a file"),
    "sft-batch-size-negative": Case("detox-sft", _sft("--per_device_train_batch_size", "-4"),
                                    err="per_device_train_batch_size must be >= 1 (got -4)", absent=["{tmp}/run"]),
    "sft-grad-accumulation-zero": Case("detox-sft", _sft("--gradient_accumulation_steps", "0"),
                                       err="gradient_accumulation_steps must be >= 1"),
    "sft-resume-empty-folder": Case("detox-sft", _sft("--resume_from_checkpoint", "{dir}"),
                                    err="resume_from_checkpoint: '{dir}' is not a checkpoint"),
    "sft-resume-a-ppo-checkpoint": Case("detox-sft", _sft("--resume_from_checkpoint", "{ppo_ckpt}"),
                                        err="is not a checkpoint of a sft run"),
    "sft-resume-latest-without-checkpoints": Case("detox-sft", _sft("--resume_from_checkpoint", "latest"),
                                                  err="no checkpoint-* folder in output_dir"),
    "ppo-resume-an-sft-checkpoint": Case("detox-ppo", _ppo("--resume_from_checkpoint", "{sft_ckpt}"),
                                         err="is not a checkpoint of a ppo run (no trainable.safetensors or pytorch_model"),
    "ppo-resume-corrupt-safetensors": Case("detox-ppo", _ppo("--resume_from_checkpoint", "{broken_ckpt}"),
                                           err="is not a readable safetensors file"),
    "ppo-resume-empty-folder": Case("detox-ppo", _ppo("--resume_from_checkpoint", "{dir}"),
                                    err="is not a checkpoint (no trainer_state.json)"),
    # ---- decoding flags
    "detox-num-beams-zero": Case("detox", ["--model", NOPE, "--num_beams", "0", "hi"], err="--num_beams must be >= 1"),
    "detox-max-new-tokens-negative": Case("detox", ["--model", NOPE, "--max_new_tokens", "-5", "hi"],
                                          err="--max_new_tokens must be >= 1 (got -5)"),
    "detox-negative-temperature": Case("detox", ["--model", NOPE, "--do_sample", "true", "--temperature", "-1", "hi"],
                                       err="--temperature must be a number > 0"),
    "detox-nan-temperature": Case("detox", ["--model", NOPE, "--temperature", "nan", "hi"],
                                  err="temperature must be a finite number"),
    "detox-top-p-zero": Case("detox", ["--model", NOPE, "--top_p", "0", "hi"], err="--top_p must be in (0, 1]"),
    "detox-batch-size-zero": Case("detox", ["--model", NOPE, "--batch_size", "0", "hi"], err="batch_size must be >= 1"),
    "detox-best-of-zero": Case("detox", ["--model", NOPE, "--best_of", "0", "hi"], err="--best_of must be >= 1 (got 0)"),
    "detox-best-of-with-beams": Case("detox", ["--model", NOPE, "--best_of", "4", "--num_beams", "2", "hi"],
                                     err="best_of 4 samples its candidates and cannot be combined with num_beams 2"),
    "detox-rerank-config-missing": Case("detox", ["--model", "{model}", "--best_of", "2", "--rerank_config",
                                                  "{tmp}/nope.yaml", "hi"], err="rerank_config '{tmp}/nope.yaml' not found",
                                        model=True),
    "eval-best-of-on-a-baseline": Case("detox-eval", _eval("--systems", "delete@best_of=4", "--output_dir", "{tmp}/ev"),
                                       err="decoding options apply to model systems only", absent=["{tmp}/ev"]),
    "eval-best-of-not-a-number": Case("detox-eval", _eval("--systems", "m={dir}@best_of=many", "--output_dir",
                                                          "{tmp}/ev"), err="best_of must be a whole number >= 1"),
    "eval-unknown-decoding-option": Case("detox-eval", _eval("--systems", "m={dir}@beams=2", "--output_dir", "{tmp}/ev"),
                                         err="unknown decoding option 'beams'"),
    "eval-best-of-with-beams": Case("detox-eval", _eval("--systems", "m={dir}@best_of=4", "--num_beams", "2",
                                                        "--output_dir", "{tmp}/ev"),
                                    err="systems: m: best_of 4 samples its candidates", absent=["{tmp}/ev"]),
    "eval-rerank-config-missing": Case("detox-eval", _eval("--systems", "m={dir}@best_of=4", "--rerank_config",
                                                           "{tmp}/nope.yaml", "--output_dir", "{tmp}/ev"),
                                       err="rerank_config '{tmp}/nope.yaml' not found", absent=["{tmp}/ev"]),
    "rft-missing-sft-run": Case("detox-rft", _rft(), err="model '{tmp}/no-such-model' does not exist",
                                absent=["{tmp}/run"]),
    "rft-reserved-sft-override": Case("detox-rft", _rft("--sft_overrides", "learning_rate=1"),
                                      err="sft_overrides: 'learning_rate' is set by RFT itself"),
    "rft-fallback-unknown": Case("detox-rft", _rft("--fallback", "maybe"), err="--fallback: invalid choice"),
    "rft-resume-not-a-round": Case("detox-rft", _rft("--resume_from_checkpoint", "{dir}"), err="is not an RFT round checkpoint",
                                   absent=["{tmp}/run"]),
    "ppo-algorithm-rft-hands-over": Case("detox-ppo", _rft("--algorithm", "rft"),
                                         err="model '{tmp}/no-such-model' does not exist"),
    "eval-num-beams-zero": Case("detox-eval", _eval("--systems", "duplicate", "--num_beams", "0",
                                                    "--output_dir", "{tmp}/ev"), err="num_beams must be >= 1",
                                absent=["{tmp}/ev"]),
    "ppo-negative-temperature": Case("detox-ppo", _ppo("--temperature", "-1"), err="temperature must be > 0"),
    "ppo-top-p-above-one": Case("detox-ppo", _ppo("--top_p", "1.5"), err="top_p must be in (0, 1]"),
    # ---- input encoding
    "detox-input-not-utf8": Case("detox", ["--model", NOPE, "--input", "{bad}", "--output", "{tmp}/o.txt"],
                                 err="--input '{bad}': line 2, byte 17: not UTF-8 (byte 0xff)", absent=["{tmp}/o.txt"]),
    "detox-input-binary": Case("detox", ["--model", NOPE, "--input", "{bin}"], err="--input '{bin}': line 1, byte"),
    "detox-input-missing": Case("detox", ["--model", NOPE, "--input", "{tmp}/nope.txt"], err="nope.txt' not found"),
    "detox-stdin-not-utf8-keeps-the-lines-before": Case(
        "detox", ["--model", "{model}", "--max_new_tokens", "2"], stdin=BAD_LINE2, model=True,
        err="stdin: line 2, byte 17: not UTF-8", check="one_output_line"),
    "detox-stdin-encoding-errors-replace": Case(
        "detox", ["--model", "{model}", "--max_new_tokens", "2", "--encoding_errors", "replace"], stdin=BAD_LINE2,
        model=True, rc=0, check="three_output_lines"),
    "detox-encoding-errors-unknown": Case("detox", ["--model", NOPE, "--encoding_errors", "ignore", "hi"],
                                          err="--encoding_errors"),
    "feedback-add-file-not-utf8": Case("detox-feedback", ["add", "--store", "{tmp}/fb.db", "--file", "{bad_jsonl}",
                                                          "--model_version", "m@1"],
                                       err="--file '{bad_jsonl}': line 2, byte", absent=["{tmp}/fb.db"]),
    "feedback-add-file-binary": Case("detox-feedback", ["add", "--store", "{tmp}/fb.db", "--file", "{bin}",
                                                        "--model_version", "m@1"], err="line 1, byte"),
    "feedback-add-file-replace-stores-valid-json": Case(
        "detox-feedback", ["add", "--store", "{tmp}/fb.db", "--file", "{bad_jsonl}", "--model_version", "m@1",
                           "--encoding_errors", "replace"], rc=0, check="two_records_one_replaced"),
    "eval-predictions-binary": Case("detox-eval", _eval("--systems", "p={bin_txt}", "--output_dir", "{tmp}/ev"),
                                    err="predictions file '{bin_txt}': line 1, byte", absent=["{tmp}/ev"]),
    "eval-predictions-not-utf8-jsonl": Case("detox-eval", _eval("--systems", "p={bad_jsonl}", "--output_dir",
                                                                "{tmp}/ev"), err="line 2, byte", absent=["{tmp}/ev"]),
    "data-tsv-bad-byte-in-row-2": Case("detox-data", ["preview", "--dataset", "{bad_tsv}"],
                                       err="{bad_tsv}: line 3, byte"),
    "sft-config-not-utf8": Case("detox-sft", ["--config", "{bad_yaml}"], err="{bad_yaml}: line 2, byte"),
    # ---- accepted silently before
    "sft-learning-rate-zero": Case("detox-sft", _sft("--learning_rate", "0"), err="learning_rate must be > 0",
                                   absent=["{tmp}/run"]),
    "sft-learning-rate-nan": Case("detox-sft", _sft("--learning_rate", "nan"), err="learning_rate must be a finite"),
    "ppo-learning-rate-zero": Case("detox-ppo", _ppo("--learning_rate", "0"), err="learning_rate must be > 0"),
    "ppo-kl-coef-nan": Case("detox-ppo", _ppo("--kl_coef", "nan"), err="kl_coef must be a finite number (got nan)"),
    "ppo-vf-coef-inf": Case("detox-ppo", _ppo("--vf_coef", "inf"), err="vf_coef must be a finite number"),
    "ppo-reward-weight-nan": Case("detox-ppo", _ppo("--reward.weights.toxicity", "nan"),
                                  err="w_toxicity must be a finite number"),
    "sft-yaml-duplicate-key": Case("detox-sft", ["--config", "{dup_yaml}"],
                                   err="key 'learning_rate' is given twice (lines 1 and 3)"),
    "ppo-yaml-duplicate-nested-key": Case("detox-ppo", ["--config", "{dup_nested}"],
                                          err="key 'toxicity' is given twice (lines 3 and 4)"),
    "pipeline-yaml-duplicate-key": Case("detox-pipeline", ["--config", "{dup_pipeline}"],
                                        err="key 'sft' is given twice (lines 1 and 2)"),
    "pipeline-invalid-yaml": Case("detox-pipeline", ["--config", "{broken_yaml}"], err="invalid YAML"),
    "pipeline-output-root-is-a-file": Case("detox-pipeline", ["--preset", "quick", "--output_root", "{file}"],
                                           err="output_dir '{file}/sft': '{file}' is a file, not a folder"),
    "ablate-output-dir-under-a-file": Case("detox-ablate", ["--config", ROOT + "/configs/ablation/smoke.yaml",
                                                            "--output_dir", "{file}/grid"], err="'{file}' is a file"),
    # ---- review page
    "server-origin-null": Case("http", ["origin_null"], rc=403),
    "server-origin-null-with-a-token": Case("http", ["origin_null_token"], rc=403),
    "server-two-host-headers": Case("http", ["two_hosts"], rc=403),
    "server-second-verdict-409": Case("http", ["twice"], rc=409),
    "server-concurrent-verdicts-one-stored": Case("http", ["concurrent"], rc=409),
    "feedback-export-csv-escapes-formulas": Case("detox-feedback", ["export", "--store", "{store}", "--output",
                                                                    "{tmp}/r.csv"], rc=0, check="csv_escaped"),
    "feedback-export-jsonl-stays-exact": Case("detox-feedback", ["export", "--store", "{store}", "--output",
                                                                 "{tmp}/r.jsonl"], rc=0, check="jsonl_exact"),
    # ---- settings that train nothing
    "sft-lora-alpha-zero": Case("detox-sft", _sft("--finetuning", "lora", "--lora_alpha", "0"),
                                err="lora_alpha must be > 0 (got 0)", absent=["{tmp}/run"]),
    "ppo-reward-clip-negative": Case("detox-ppo", _ppo("--reward_clip", "-1"), err="reward_clip must be > 0 or null"),
    "ppo-reward-clip-zero": Case("detox-ppo", _ppo("--reward_clip", "0"), err="reward_clip must be > 0 or null"),
    "sft-max-steps-zero": Case("detox-sft", _sft("--max_steps", "0"), err="max_steps must be >= 1, or -1",
                               absent=["{tmp}/run"]),
    # ---- late tracebacks: values that pass parsing and break later
    "sft-seed-negative": Case("detox-sft", _sft("--seed", "-1"), err="seed must be in [0, 2**32) (got -1)"),
    "sft-output-dir-empty": Case("detox-sft", _sft("--output_dir", ""), err="output_dir is empty"),
    "sft-batch-size-null-in-yaml": Case("detox-sft", _sft("--config", "{null_batch_yaml}"),
                                err="per_device_train_batch_size must be a whole number >= 1 (got null)"),
    "ppo-eval-samples-negative": Case("detox-ppo", _ppo("--eval_samples", "-1"), err="eval_samples must be >= 0"),
    "data-preview-dev-size-inf": Case("detox-data", ["preview", "--dataset", "{tsv}", "--dev_size", "inf"],
                                      err="dev_size must be a finite number (got inf)"),
    "sft-resume-state-is-a-list": Case("detox-sft", _sft("--resume_from_checkpoint", "{list_ckpt}"),
                                       err="trainer_state.json' holds a JSON list"),
    "detox-device-cuda-without-cuda": Case("detox", ["--model", NOPE, "--device", "cuda", "hi"],
                                           err="device: 'cuda', but this torch"),
    "eval-device-cuda-without-cuda": Case("detox-eval", _eval("--systems", "duplicate", "--eval_device", "cuda:1",
                                                              "--output_dir", "{tmp}/ev"), err="eval_device: 'cuda:1'"),
    "detox-model-config-not-json": Case("detox", ["--model", "{broken_config_model}", "hi"],
                                        err="config.json' is not valid JSON"),
    "detox-model-type-unknown": Case("detox", ["--model", "{unknown_type_model}", "hi"],
                                     err="model_type 'not-a-model'"),
    "sft-model-config-not-json": Case("detox-sft", _sft("--model_name_or_path", "{broken_config_model}"),
                                      err="config.json' is not valid JSON"),
    "ppo-model-type-unknown": Case("detox-ppo", _ppo("--model_name_or_path", "{unknown_type_model}"),
                                   err="model_type 'not-a-model'"),
    "data-json-outputs-not-a-list": Case("detox-data", ["preview", "--dataset", "{outputs_5_json}"],
                                         err="'outputs' is a number"),
    "data-jsonl-split-a-number": Case("detox-data", ["preview", "--dataset", "{split_5_jsonl}"],
                                      err="'split' is 5"),
    "eval-predictions-no-output-key": Case("detox-eval", _eval("--systems", "p={pred_no_output}", "--output_dir",
                                                               "{tmp}/ev"), err="{pred_no_output}:2: no 'output'",
                                           absent=["{tmp}/ev"]),
    "eval-predictions-output-null": Case("detox-eval", _eval("--systems", "p={pred_null}", "--output_dir", "{tmp}/ev"),
                                         err="{pred_null}:1: 'output' is null", absent=["{tmp}/ev"]),
    "eval-predictions-output-a-number": Case("detox-eval", _eval("--systems", "p={pred_number}", "--output_dir",
                                                                 "{tmp}/ev"), err="{pred_number}:1: 'output' is a number",
                                             absent=["{tmp}/ev"]),
    "eval-predictions-tsv-leading-quote-keeps-rows": Case(
        "detox-eval", _eval("--systems", "p={quoted_pred_tsv}", "--dataset", "{quoted_jsonl}", "--output_dir",
                            "{tmp}/ev", "--eval_split", "all", "--judge_toxicity_backend", "lexicon",
                            "--judge_similarity_model", "sentence-transformers/all-MiniLM-L6-v2",
                            "--judge_fluency_model", "{model}", "--judge_device", "cpu"),
        rc=0, model=True, check="quoted_predictions_scored"),
    "data-tsv-leading-quote-keeps-rows": Case("detox-data", ["preview", "--dataset", "{quoted_tsv}"], rc=0,
                                              check="quoted_rows_kept"),
    "sft-flag-typo-did-you-mean": Case("detox-sft", _sft("--learnin_rate", "1e-4"),
                                       err="did you mean --learning_rate?"),
    "ppo-flag-typo-did-you-mean": Case("detox-ppo", _ppo("--kl_cef", "0.1"), err="did you mean --kl_coef?"),
    # ---- outputs: symlinks written through, nothing but files replaced
    "data-export-output-symlink-writes-through": Case("detox-data", ["export", "--dataset", "{tsv}", "--output",
                                                                     "{link}"], rc=0, check="symlink_kept"),
    "data-export-output-fifo": Case("detox-data", ["export", "--dataset", "{tsv}", "--output", "{fifo}"],
                                    err="is not a regular file"),
    "data-export-follows-umask": Case("detox-data", ["export", "--dataset", "{tsv}", "--output", "{tmp}/u.jsonl"],
                                      rc=0, check="umask_followed"),
    # ---- work kept when the run is cut short
    "detox-ctrl-c-keeps-the-done-lines": Case("detox", ["--model", "{model}", "--max_new_tokens", "2", "--input",
                                                        "{five}", "--output", "{tmp}/o.txt"], rc=130, model=True,
                                              patch="ctrl_c_after_two", err="the first 2 rewrites are in",
                                              absent=["{tmp}/o.txt"], check="two_lines_kept"),
    "detox-full-disk-keeps-the-done-lines": Case("detox", ["--model", "{model}", "--max_new_tokens", "2", "--input",
                                                           "{five}", "--output", "{tmp}/o.txt"], model=True,
                                                 patch="disk_full_after_two", err="writing failed after 2 lines",
                                                 absent=["{tmp}/o.txt"], check="two_lines_kept"),
    "data-export-full-disk": Case("detox-data", ["export", "--dataset", "{tsv}", "--output", "{tmp}/e.jsonl"],
                                  patch="fsync_disk_full", err="writing '{tmp}/e.jsonl' failed (No space left on device)",
                                  absent=["{tmp}/e.jsonl"]),
    "sft-push-with-the-hub-unreachable-keeps-the-run": Case(
        "detox-sft", _sft("--model_name_or_path", "{model}", "--max_steps", "1", "--guard_samples", "0",
                          "--eval_strategy", "no", "--push_to_hub", "true", "--hub_model_id", "me/detox"),
        model=True, patch="hub_unreachable", err="push_to_hub: the run is saved in '{tmp}/run'",
        check="run_saved"),
    # ---- noise
    "feedback-list-closed-pipe": Case("proc:feedback.cli", ["list", "--store", "{big_store}", "--limit", "0",
                                                            "--format", "jsonl"], rc=141, check="closed_pipe"),
    "sft-error-is-one-line-no-bitsandbytes-noise": Case("proc:sft.train", _sft("--learning_rate", "0"),
                                                        err="learning_rate must be > 0"),
}

FORMULAS = ["=HYPERLINK(\"http://x\")", "+1+1", "-2", "@SUM(A1)", "plain"]


@pytest.fixture()
def paths(tmp_path, toy_data):
    """Every file and folder a row names, made fresh per row (feedback stores: ``make_stores``)."""
    tsv, lex = toy_data
    p = {"tmp": str(tmp_path), "tsv": str(tsv), "lex": str(lex)}

    def put(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    p["file"] = put("a_file.txt", b"keep me\n")
    (tmp_path / "a_dir").mkdir()
    p["dir"] = str(tmp_path / "a_dir")
    p["in"] = put("in.txt", b"you are an idiot\n")
    p["bad"] = put("bad.txt", BAD_LINE2)
    p["bin"] = put("blob.bin", bytes(range(255, -1, -1)) * 4)  # starts with 0xff: line 1, byte 0
    p["bin_txt"] = put("blob.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(128, 256)))
    p["bad_jsonl"] = put("bad.jsonl", b'{"input": "a", "output": "b", "verdict": "accept"}\n'
                                      b'{"input": "x\xff", "output": "y", "verdict": "reject"}\n')
    header, rows = tsv.read_bytes().split(b"\n", 1)
    lines = rows.split(b"\n")
    p["bad_tsv"] = put("bad.tsv", header + b"\n" + lines[0] + b"\n" + lines[1].replace(b" ", b"\xe9", 1) + b"\n"
                       + b"\n".join(lines[2:]))
    p["bad_yaml"] = put("bad.yaml", b"learning_rate: 1e-4\nloss: \xfftoxic\n")
    p["dup_yaml"] = put("dup.yaml", b"learning_rate: 1e-4\nmax_steps: 3\nlearning_rate: 2e-4\n")
    p["dup_nested"] = put("dup_nested.yaml", b"reward:\n  weights:\n    toxicity: 1\n    toxicity: 2\n")
    p["dup_pipeline"] = put("dup_pipeline.yaml", b"sft: {config: a.yaml}\nsft: {config: b.yaml}\n")
    p["broken_yaml"] = put("broken.yaml", b"sft: {config: a.yaml\n")
    for kind, files in (("sft_ckpt", {"adapter_model.safetensors": b"x"}),
                        ("ppo_ckpt", {"trainable.safetensors": b"x", "adapter/adapter_config.json": b"{}"}),
                        ("broken_ckpt", {"trainable.safetensors": b"not safetensors",
                                         "adapter/adapter_config.json": b"{}"})):
        for name, data in {"trainer_state.json": b'{"global_step": 2}', **files}.items():
            put(f"{kind}/checkpoint-2/{name}", data)
        p[kind] = str(tmp_path / kind / "checkpoint-2")
    p["five"] = put("five.txt", b"".join(b"you idiot number %d\n" % i for i in range(5)))
    p["null_batch_yaml"] = put("null_batch.yaml", b"per_device_train_batch_size: null\n")
    put("list_ckpt/checkpoint-2/trainer_state.json", b"[]")
    put("list_ckpt/checkpoint-2/adapter_model.safetensors", b"x")
    p["list_ckpt"] = str(tmp_path / "list_ckpt" / "checkpoint-2")
    p["broken_config_model"] = os.path.dirname(put("broken_model/config.json", b'{"model_type": "llama",'))
    p["unknown_type_model"] = os.path.dirname(put("odd_model/config.json", b'{"model_type": "not-a-model"}'))
    p["outputs_5_json"] = put("outputs5.json", json.dumps({"inputs": ["you idiot"], "outputs": 5}).encode())
    p["split_5_jsonl"] = put("split5.jsonl", b'{"inputs": "you idiot", "outputs": "you", "split": 5}\n')
    first = tsv.read_text(encoding="utf-8").splitlines()[1].split("\t")[0]  # a test source the predictions answer
    p["pred_no_output"] = put("p1.jsonl", (json.dumps({"source": first, "output": "ok"}) + "\n"
                                           + json.dumps({"source": first}) + "\n").encode())
    p["pred_null"] = put("p2.jsonl", (json.dumps({"source": first, "output": None}) + "\n").encode())
    p["pred_number"] = put("p3.jsonl", (json.dumps({"source": first, "output": 12345}) + "\n").encode())
    p["quoted_tsv"] = put("quoted.tsv", b"toxic\tneutral1\tneutral2\tneutral3\n" + b"".join(
        b'"quote %d starts this , you idiot\tquote %d starts this\t\t\n' % (i, i) for i in range(12)))
    p["quoted_jsonl"] = put("quoted.jsonl", b"".join(
        b'{"inputs": "\\"quote %d starts this , you idiot", "outputs": "quote %d starts this"}\n' % (i, i)
        for i in range(12)))
    p["quoted_pred_tsv"] = put("quoted_pred.tsv", b"source\toutput\n" + b"".join(
        b'"quote %d starts this , you idiot\tquote %d starts this\n' % (i, i) for i in range(12)))
    os.symlink(p["file"], tmp_path / "link.jsonl")
    p["link"] = str(tmp_path / "link.jsonl")
    os.mkfifo(tmp_path / "pipe.jsonl")
    p["fifo"] = str(tmp_path / "pipe.jsonl")
    p["store"], p["big_store"] = str(tmp_path / "records.db"), str(tmp_path / "big.db")
    return p


def make_stores(p: dict, argv: list[str]) -> None:
    """The feedback stores a row names (only those: each costs a few fsyncs)."""
    from feedback.store import FeedbackStore

    if "{store}" in argv:
        FeedbackStore(p["store"]).add_many([{"input": t, "output": t, "verdict": "accept", "model_version": "m@1"}
                                            for t in FORMULAS])
    if "{big_store}" in argv:  # ~120 kB of JSONL: more than a pipe holds
        FeedbackStore(p["big_store"]).add_many([{"input": "x" * 2000, "output": "y", "verdict": "accept",
                                                 "model_version": "m@1"}] * 60)


def fill(value: str, p: dict) -> str:
    for key in sorted(p, key=len, reverse=True):
        value = value.replace("{" + key + "}", p[key])
    return value


def snapshot(p: dict) -> dict:
    return {k: (open(v, "rb").read() if os.path.isfile(v) else sorted(os.listdir(v)) if os.path.isdir(v) else None)
            for k, v in p.items() if k in ("file", "dir")}


def run_proc(module: str, argv: list[str], case: Case) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", module, *argv]
    if case.check == "closed_pipe":  # read one line, then close the pipe, like `| head -1`
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        return proc.wait(timeout=60), "", err
    done = subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT, timeout=120)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def run_http(what: str, tmp_path) -> tuple[int, list]:
    """(status of the request under test, records stored) against a served review page with a fake model."""
    from feedback.server import ReviewApp, make_server
    from feedback.store import FeedbackStore

    token = "t" * 20 if what.endswith("_token") else None
    app = ReviewApp(FeedbackStore(str(tmp_path / "page.db")), lambda texts: [t.upper() for t in texts], "fake@1",
                    token=token)
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    def post(path, body, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        raw = json.dumps(body).encode()
        conn.putrequest("POST", path, skip_host=True)
        auth = [("Authorization", f"Bearer {token}")] if token else []
        for key, value in [("Host", f"127.0.0.1:{port}"), ("Content-Type", "application/json"),
                           ("Content-Length", str(len(raw))), *auth, *(headers or [])]:
            conn.putheader(key, value)
        conn.endheaders(raw)
        res = conn.getresponse()
        status, data = res.status, json.loads(res.read() or b"{}")
        conn.close()
        return status, data

    try:
        if what.startswith("origin_null"):
            status, _ = post("/api/rewrite", {"text": "hi"}, [("Origin", "null")])
        elif what == "two_hosts":
            status, _ = post("/api/rewrite", {"text": "hi"}, [("Host", "evil.example")])
        else:
            _, rw = post("/api/rewrite", {"text": "you idiot"})
            verdict = {"rewrite_id": rw["rewrite_id"], "verdict": "accept"}
            if what == "twice":
                first, _ = post("/api/feedback", verdict)
                assert first == 200
                status, body = post("/api/feedback", verdict)
                assert "already has a verdict" in body["error"]
            else:
                results: list[int] = []
                threads = [threading.Thread(target=lambda: results.append(post("/api/feedback", verdict)[0]))
                           for _ in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert sorted(results) == [200] + [409] * 7, results
                status = 409
        return status, app.store.records()
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def usual_umask():
    """The usual umask (022) whatever the machine's, so a row can check files follow it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, paths, tmp_path, tiny_dir, capsys, caplog, monkeypatch):
    case = CASES[name]
    if case.model:
        paths["model"] = tiny_dir("llama")
    make_stores(paths, case.argv)
    if case.patch:
        PATCHES[case.patch](monkeypatch)
    argv = [fill(a, paths) for a in case.argv]
    before = snapshot(paths)
    if case.cmd == "http":
        status, records = run_http(argv[0], tmp_path)
        assert status == case.rc
        assert len(records) == (1 if argv[0] in ("twice", "concurrent") else 0)  # nothing stored on a refusal
        return
    if case.cmd.startswith("proc:"):
        rc, out, err = run_proc(case.cmd[5:], argv, case)
    else:
        if case.stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin), encoding="utf-8"))
        rc = MAINS[case.cmd](argv)
        captured = capsys.readouterr()
        out, err = captured.out, captured.err
    assert rc == case.rc, (rc, err[-2000:])
    assert "Traceback" not in err
    if case.rc in (2, 130):  # a user error, or Ctrl-C: one line saying what was kept
        lines = [line for line in err.splitlines() if line.strip() and "%|" not in line  # progress bars aside
                 and not ((case.model or case.patch) and " INFO " in line)]  # work done before the fault logs
        prefix = "error: " if case.rc == 2 else "interrupted: "
        assert len(lines) == 1 and lines[0].startswith(prefix), err  # one line, no bitsandbytes line
        assert fill(case.err, paths) in lines[0], lines[0]
        assert snapshot(paths) == before  # the file and folder given as outputs are untouched
    elif case.err:
        assert fill(case.err, paths) in err
    for path in case.absent:
        assert not os.path.exists(fill(path, paths)), path
    if case.check:
        CHECKS[case.check](out=out, err=err, paths=paths, caplog=caplog)


def _one_output_line(out, **_):
    assert len(out.splitlines()) == 1  # the valid line before the bad one was still rewritten


def _three_output_lines(out, caplog, **_):
    assert len(out.splitlines()) == 3
    assert "stdin: 1 line(s) held bytes that are not UTF-8" in caplog.text


def _two_records_one_replaced(paths, caplog, **_):
    from feedback.store import FeedbackStore

    assert [r.input for r in FeedbackStore(paths["tmp"] + "/fb.db").records()] == ["a", "x\ufffd"]
    assert "1 line(s) held bytes that are not UTF-8" in caplog.text


def _csv_escaped(paths, err, **_):
    with open(paths["tmp"] + "/r.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # OWASP: a leading = + - @ gets a ' so a spreadsheet shows text, not a formula result
    assert sorted(r["input"] for r in rows) == sorted(["'=HYPERLINK(\"http://x\")", "'+1+1", "'-2", "'@SUM(A1)", "plain"])
    assert all(r["input"] == r["output"] for r in rows)
    assert "8 cells start with" in err and ".jsonl" in err  # input and output of 4 records; says it is lossy


def _jsonl_exact(paths, **_):
    with open(paths["tmp"] + "/r.jsonl", encoding="utf-8") as fh:
        assert sorted(json.loads(line)["input"] for line in fh) == sorted(FORMULAS)


def _closed_pipe(err, **_):
    assert err == ""  # no BrokenPipeError, no "Exception ignored" line


def _ctrl_c_after_two(monkeypatch):
    """Ctrl-C while the second chunk of an --input file is being rewritten (chunks of 2 lines)."""
    from evaluation import infer

    real, calls = infer.Detoxifier._rewrite, []

    def rewrite(self, texts, progress):
        calls.append(texts)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, texts, progress)

    monkeypatch.setattr(infer, "FILE_CHUNK", 2)
    monkeypatch.setattr(infer.rewrite_chunks, "__defaults__", (2,))
    monkeypatch.setattr(infer.Detoxifier, "_rewrite", rewrite)


def _disk_full_after_two(monkeypatch):
    """The output's disk fills up after two lines."""
    import builtins
    import errno

    from evaluation import infer

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.lines = fh, 0

        def write(self, text):
            if self.lines == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.lines += 1
            return self.fh.write(text)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    monkeypatch.setattr(infer, "open", lambda *a, **k: FullDisk(builtins.open(*a, **k)), raising=False)


def _hub_unreachable(monkeypatch):
    """Online as far as the environment says, but the hub cannot be reached."""
    import huggingface_hub

    def refused(*a, **k):
        raise ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refused)


def _fsync_disk_full(monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


PATCHES = {"fsync_disk_full": _fsync_disk_full, "ctrl_c_after_two": _ctrl_c_after_two, "disk_full_after_two": _disk_full_after_two,
           "hub_unreachable": _hub_unreachable}


def _run_saved(paths, **_):
    assert os.path.isfile(paths["tmp"] + "/run/detoxrl.json")  # the trained model was saved before the push
    mode = os.stat(paths["tmp"] + "/run/adapter").st_mode & 0o777
    assert mode == 0o755, oct(mode)  # an atomically written folder follows the umask (022), not mkdtemp's 0700


def _two_lines_kept(paths, **_):
    with open(paths["tmp"] + "/o.txt.partial", encoding="utf-8") as fh:
        assert len(fh.read().splitlines()) == 2  # the rewrites done before the fault


def _quoted_predictions_scored(paths, **_):
    assert os.path.isdir(paths["tmp"] + "/ev")  # every test source found its output: the report was written


def _quoted_rows_kept(err, caplog, **_):
    assert "loaded 12 pairs" in caplog.text, caplog.text  # a leading quote is text, not CSV quoting


def _symlink_kept(paths, **_):
    assert os.path.islink(paths["link"])  # written through, not replaced by a regular file
    with open(paths["file"], encoding="utf-8") as fh:
        assert fh.readline().startswith("{")  # the target holds the export now


def _umask_followed(paths, **_):
    mode = os.stat(paths["tmp"] + "/u.jsonl").st_mode & 0o777
    assert mode == 0o644, oct(mode)  # the test runs under umask 022 (set in test_bad_input)


CHECKS = {"quoted_predictions_scored": _quoted_predictions_scored, "run_saved": _run_saved, "two_lines_kept": _two_lines_kept, "quoted_rows_kept": _quoted_rows_kept, "symlink_kept": _symlink_kept, "umask_followed": _umask_followed,
          "one_output_line": _one_output_line, "three_output_lines": _three_output_lines,
          "two_records_one_replaced": _two_records_one_replaced, "csv_escaped": _csv_escaped,
          "jsonl_exact": _jsonl_exact, "closed_pipe": _closed_pipe}


def test_the_table_is_large_enough():
    assert len(CASES) >= 40
