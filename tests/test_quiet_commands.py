"""Commands that need no model import neither torch nor transformers, and a bad input prints exactly one line
whatever the installed libraries log (``detoxrl/log.py``)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "transformers", "peft", "trl.trainer", "accelerate", "bitsandbytes")


def run_blocking_heavy(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """``detoxrl <argv>`` in a fresh interpreter where importing torch, transformers, peft, accelerate or
    bitsandbytes raises: a command that needs none of them must still succeed."""
    code = textwrap.dedent(f"""
        import sys
        for name in {HEAVY!r}:
            sys.modules[name] = None  # `import torch` now raises ImportError
        from orchestration.cli import main
        sys.exit(main({argv!r}))
    """)
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_model_free_commands_import_no_torch(tmp_path):
    store = str(tmp_path / "fb.db")
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"input": "you idiot", "output": "you are wrong", "verdict": "reject",
                                   "correction": "you are mistaken", "model_version": "m@1"}) + "\n")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("toxic\tneutral1\nyou are a stupid idiot\tyou are wrong\nshut the hell up\tplease be quiet\n")
    runs = {
        "help": (["--help"], 0),
        "sub-help": (["feedback", "list", "--help"], 0),
        "missing store": (["feedback", "list", "--store", str(tmp_path / "none.db")], 2),
        "add": (["feedback", "add", "--store", store, "--file", str(records)], 0),
        "list": (["feedback", "list", "--store", store, "--format", "jsonl"], 0),
        "export": (["feedback", "export", "--store", store, "--what", "pairs", "--output", str(tmp_path / "p.jsonl")],
                   0),
        "bad flag": (["feedback", "list", "--store", store, "--limit", "x"], 2),
        "data preview": (["data", "preview", "--dataset", str(tsv), "--dev_size", "1"], 0),
        "data export": (["data", "export", "--dataset", str(tsv), "--dev_size", "1", "--output",
                         str(tmp_path / "d.jsonl")], 0),
    }
    for what, (argv, rc) in runs.items():
        done = run_blocking_heavy(argv, tmp_path)
        assert done.returncode == rc, f"{what}: rc {done.returncode}\n{done.stderr[-2000:]}"
        if rc == 2:
            assert len(done.stderr.strip().splitlines()) == 1, f"{what}: {done.stderr}"
    assert json.loads(run_blocking_heavy(["feedback", "list", "--store", store, "--format", "jsonl"],
                                         tmp_path).stdout.splitlines()[0])["correction"] == "you are mistaken"


NOISY_LIBRARY = """
import logging, warnings
logging.getLogger("kernels._internals.hf_hub").warning("Skipping publisher trust check (a library's import-time line)")
warnings.warn("a library's import-time warning", UserWarning)
"""


def _command_that_imports_a_noisy_library_then_fails(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    (tmp_path / "noisylib.py").write_text(NOISY_LIBRARY)
    code = textwrap.dedent(f"""
        import sys
        from detoxrl.config import run_cli
        from detoxrl.errors import UserError

        def main(args):
            import noisylib  # what bitsandbytes + kernels 0.19 do when a model loads
            raise UserError("learning_rate must be > 0 (got 0.0)")

        sys.exit(run_cli(main, {list(flags)!r}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, str(tmp_path)]), "HF_HUB_OFFLINE": "1"}
    env.pop("DETOXRL_VERBOSITY", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_a_bad_input_is_one_line_whatever_a_library_logs(tmp_path):
    done = _command_that_imports_a_noisy_library_then_fails(tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: learning_rate must be > 0 (got 0.0)"]


def test_verbose_shows_the_libraries_lines(tmp_path):
    done = _command_that_imports_a_noisy_library_then_fails(tmp_path, "--verbose")
    assert "Skipping publisher trust check" in done.stderr and "import-time warning" in done.stderr
    assert done.stderr.splitlines()[-1] == "error: learning_rate must be > 0 (got 0.0)"


def test_a_real_bitsandbytes_import_adds_no_line(tmp_path):
    """The real case of 2026-12-07: bitsandbytes' CPU backend asks ``kernels`` for a hub kernel offline."""
    pytest.importorskip("bitsandbytes")
    code = textwrap.dedent("""
        import sys
        from detoxrl.config import run_cli
        from detoxrl.errors import UserError

        def main(args):
            import bitsandbytes  # noqa: F401
            raise UserError("one line")

        sys.exit(run_cli(main, []))
    """)
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
    env.pop("DETOXRL_VERBOSITY", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stderr.splitlines() == ["error: one line"]


def test_quiet_hides_our_info_lines(monkeypatch, capsys):
    from detoxrl.config import run_cli

    monkeypatch.delenv("DETOXRL_VERBOSITY", raising=False)
    seen = {}

    def main(args):
        seen["args"] = args
        seen["info"] = logging.getLogger("detoxrl").isEnabledFor(logging.INFO)

    try:
        assert run_cli(main, ["--quiet", "--x", "1"]) == 0
        assert seen == {"args": ["--x", "1"], "info": False}
        assert os.environ["DETOXRL_VERBOSITY"] == "quiet"  # the processes a command starts log the same way
    finally:
        monkeypatch.setenv("DETOXRL_VERBOSITY", "normal")
        from detoxrl.log import configure_logging

        configure_logging()
