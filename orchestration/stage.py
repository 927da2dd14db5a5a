"""Running a stage (SFT, PPO, detox-eval) in-process so that a re-run reuses or resumes it.

Shared by ``detox-ablate`` (``orchestration/ablate.py``) and ``detox-pipeline`` (``orchestration/pipeline.py``). A stage is
an output folder plus what it is expected to hold:

* ``expected``: the resolved config the stage would save (``detoxrl.config.resolved_config_dict`` of
  its parsed dataclasses), minus the fields in ``IGNORED_FIELDS`` (logging, checkpoint frequency,
  ``resume_from_checkpoint``, ...), which do not change what the stage computes;
* ``inputs``: fingerprints of what the stage reads from earlier stages (``fingerprint``: the
  ``detoxrl.json`` of a run folder, by content and mtime; it is written last, once per training run),
  so a retrained SFT model makes the PPO stage and the evaluation stale even when their configs are
  unchanged.

``Stage.plan()`` decides, from the files alone:

* ``reuse``: the final files exist, the saved ``resolved_config.yaml`` matches ``expected`` and the
  marker ``stage.yaml`` (written when the stage starts) matches ``inputs``;
* ``resume``: the marker matches and a complete ``checkpoint-*`` exists (``resume_from_checkpoint latest``);
* ``fresh``: anything else. A folder holding checkpoints or final outputs of another config is moved
  to ``<folder>.previous`` (replacing an older one) so they are never resumed or reused by mistake.

``capture(log_path)`` tees the stage's stdout, stderr (progress bars) and log records into a file.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field

import yaml

from detoxrl.errors import ConfigError, UserError
from detoxrl.io import atomic_write_text
from detoxrl.resume import latest_checkpoint
from detoxrl.runcard import CARD, card_fingerprint
from detoxrl.validate import load_yaml, locate_decode_error

log = logging.getLogger("detoxrl")

MARKER = "stage.yaml"
RESOLVED = "resolved_config.yaml"
# Fields that do not change what a stage computes: how it logs, how often it checkpoints, where it
# resumes from, CPU threads; and fields sft/train.py sets itself after parsing.
IGNORED_FIELDS = frozenset({
    "resume_from_checkpoint", "report_to", "logging_dir", "logging_steps", "logging_strategy", "logging_first_step",
    "logging_nan_inf_filter", "log_level", "log_level_replica", "log_on_each_node", "disable_tqdm", "save_steps",
    "save_strategy", "save_total_limit", "sample_every", "samples_logged", "num_threads", "dataloader_num_workers",
    "hub_token", "push_to_hub", "label_names", "prediction_loss_only", "remove_unused_columns", "output_dir",
})


def comparable(resolved: dict) -> dict:
    """``{Class: {field: value}}`` as YAML would give it back, without ``IGNORED_FIELDS``."""
    plain = yaml.safe_load(yaml.safe_dump(resolved, sort_keys=True, allow_unicode=True)) or {}
    return {cls: {k: v for k, v in (fields or {}).items() if k not in IGNORED_FIELDS}
            for cls, fields in plain.items()}


def config_diff(old: dict, new: dict, limit: int = 6) -> str:
    """``Class.field: old -> new`` for the first ``limit`` differences (for the log line that says why)."""
    out = []
    for cls in sorted(set(old) | set(new)):
        a, b = old.get(cls) or {}, new.get(cls) or {}
        for name in sorted(set(a) | set(b)):
            if a.get(name, "<unset>") != b.get(name, "<unset>"):
                out.append(f"{cls}.{name}: {a.get(name, '<unset>')!r} -> {b.get(name, '<unset>')!r}")
    more = f" (+{len(out) - limit} more)" if len(out) > limit else ""
    return "; ".join(out[:limit]) + more if out else "no difference"


def read_yaml(path: str):
    """The YAML file at ``path``; None when it cannot be opened. Invalid YAML, a key given twice or bytes that
    are not UTF-8 are a ``UserError`` naming the file (and the line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return load_yaml(fh, path)
    except OSError:
        return None
    except UnicodeDecodeError:
        raise UserError(locate_decode_error(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise UserError(f"{where}: invalid YAML ({getattr(exc, 'problem', None) or exc}); fix or remove the file") from None


def fingerprint(ref: str) -> str:
    """What identifies a model an earlier stage produced: its ``detoxrl.json`` (written last, once per training
    run), by content and modification time, so any rewrite counts even when training reproduced the same
    card; else its weight files' names, sizes and mtimes; else ``ref`` itself (a hub id)."""
    if not os.path.isdir(ref):
        return str(ref)
    card = card_fingerprint(ref)
    if card is not None:
        return card
    h = hashlib.sha256()
    for root, dirs, files in os.walk(ref):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("checkpoint-", ".")))
        for name in sorted(files):
            if name.endswith((".safetensors", ".json")):
                st = os.stat(os.path.join(root, name))
                h.update(f"{os.path.relpath(os.path.join(root, name), ref)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return "files:" + h.hexdigest()[:16]


@dataclass
class Stage:
    """One stage's output folder and what it must hold to be reused (see the module docstring)."""

    name: str
    out_dir: str
    expected: dict
    inputs: dict = field(default_factory=dict)
    finished_files: tuple[str, ...] = (RESOLVED,)
    resumable: bool = True

    def path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    def marker(self) -> dict | None:
        found = read_yaml(self.path(MARKER))
        return found if isinstance(found, dict) else None

    def finished(self) -> bool:
        return all(os.path.exists(self.path(f)) for f in self.finished_files)

    def plan(self, force: bool = False) -> tuple[str, str]:
        """``(action, reason)`` with action ``reuse`` | ``resume`` | ``fresh``."""
        if force:
            return "fresh", "asked to rerun"
        if not os.path.isdir(self.out_dir):
            return "fresh", "no output yet"
        marker = self.marker()
        inputs_ok = marker is None or marker.get("inputs", {}) == self.inputs
        if self.finished():
            saved = read_yaml(self.path(RESOLVED))
            saved = comparable(saved) if isinstance(saved, dict) else {}
            if saved == self.expected and inputs_ok:
                return "reuse", "finished with the same config"
            if saved != self.expected:
                return "fresh", "finished with another config: " + config_diff(saved, self.expected)
            return "fresh", "its input changed since it ran: " + _input_diff(marker.get("inputs", {}), self.inputs)
        if self.resumable and marker is not None and latest_checkpoint(self.out_dir):
            if marker.get("config") == self.expected and inputs_ok:
                return "resume", f"unfinished; resuming from {os.path.basename(latest_checkpoint(self.out_dir))}"
            why = (config_diff(marker.get("config") or {}, self.expected) if marker.get("config") != self.expected
                   else _input_diff(marker.get("inputs", {}), self.inputs))
            return "fresh", "unfinished run of another config: " + why
        if self.resumable and marker is None and latest_checkpoint(self.out_dir):
            return "fresh", "unfinished run of an unknown config (no stage.yaml); starting over"
        return "fresh", "unfinished, no checkpoint to resume from"

    def prepare(self, action: str) -> None:
        """Before running: move a stale folder aside (``fresh``) and write the marker."""
        if action == "fresh" and os.path.isdir(self.out_dir) and self.resumable and _has_results(self.out_dir):
            aside = self.out_dir.rstrip("/\\") + ".previous"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(self.out_dir, aside)
            log.info("%s: moved the previous output aside to %s", self.name, aside)
        os.makedirs(self.out_dir, exist_ok=True)
        atomic_write_text(self.path(MARKER), yaml.safe_dump({"stage": self.name, "inputs": self.inputs,
                                                             "config": self.expected}, sort_keys=True))


RESULTS = ("adapter", "merged", CARD, RESOLVED, "value_head.safetensors")


def _has_results(folder: str) -> bool:
    """Checkpoints or final outputs (logs and status files alone stay where they are, appended to)."""
    return any(name.startswith("checkpoint-") or name in RESULTS for name in os.listdir(folder))


def _input_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys) or "no difference"


# ------------------------------------------------------------------------------------------ output capture
class _Tee:
    """A text stream that writes to the console stream and to the log file."""

    def __init__(self, console, file):
        self._console, self._file = console, file

    def write(self, text: str) -> int:
        self._console.write(text)
        try:
            self._file.write(text)
        except ValueError:  # the file was closed while a background thread still writes
            pass
        return len(text)

    def flush(self) -> None:
        self._console.flush()
        with contextlib.suppress(ValueError):
            self._file.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ... of the console
        return getattr(self._console, name)


@dataclass
class Captured:
    path: str
    file: object

    def traceback(self) -> None:
        """Write the exception being handled, with its traceback, to the log file only."""
        import traceback

        with contextlib.suppress(ValueError):
            self.file.write(traceback.format_exc())
            self.file.flush()


@contextlib.contextmanager
def capture(log_path: str):
    """Append the stage's log records, warnings, stdout and stderr to ``log_path`` (they still reach the console).

    Also restores torch's thread count afterwards (``detox-eval`` sets its own)."""
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    threads = torch.get_num_threads()
    fh = open(log_path, "a", encoding="utf-8", buffering=1)
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    logging.captureWarnings(True)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, fh), _Tee(err, fh)
    try:
        yield Captured(log_path, fh)
    except BaseException:  # the traceback goes to the log file; the caller decides what the console gets
        Captured(log_path, fh).traceback()
        raise
    finally:
        sys.stdout, sys.stderr = out, err
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.close()
        fh.close()
        torch.set_num_threads(threads)
        gc.collect()


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (what the results table shows of a failure)."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")
    return line if len(line) <= 1000 else line[:999] + "…"


def dotted(mapping: dict, prefix: str = "") -> dict:
    """``{a: {b: 1}, c: 2}`` -> ``{"a.b": 1, "c": 2}`` (nested overrides as the dotted names the CLI takes)."""
    flat: dict = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(dotted(value, name + "."))
        else:
            flat[name] = value
    return flat


def write_json(path: str, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def check_keys(section: dict, allowed: set, where: str) -> None:
    """``ConfigError`` naming ``where`` and the first key of ``section`` not in ``allowed``."""
    extra = sorted(set(section) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key '{extra[0]}' (expected: {', '.join(sorted(allowed))})")


def mapping(value, where: str) -> dict:
    """A config section that must be a mapping (``None`` reads as empty); ``ConfigError`` naming ``where`` else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of field: value")
    return value


# ---- shared by the pipeline and the ablation grid ----------------------------------------------------------
RESERVED = frozenset({"output_dir", "resume_from_checkpoint"})  # set by the orchestrator, never by overrides


def config_file(value, where: str) -> str:
    """The YAML config ``value`` names (tried from the current folder, then the project root)."""
    from detoxrl.paths import resolve_path

    found = resolve_path(value) if isinstance(value, str) and value else None
    if not found or not os.path.isfile(found):
        raise ConfigError(f"{where}: config '{value}' not found (relative paths are tried from the current folder, "
                          "then the project root)")
    return found


def check_toxicity_models(reward, judges, reward_field: str = "toxicity_model",
                          judge_field: str = "judge_toxicity_model") -> None:
    """Before any training: the reward's toxicity classifier (when the reward uses it) and the eval's toxicity
    judge exist or will be trained on first use (``rewards.toxicity.default``). A missing one that would not is a
    one-line ``UserError`` naming ``reward_field`` / ``judge_field``."""
    from rewards.toxicity.default import resolve_classifier_ref

    if reward.toxicity_backend == "hf" and reward.w_toxicity > 0:
        resolve_classifier_ref(reward.toxicity_model, reward_field, train_missing=False)
    if judges.judge_toxicity_backend == "hf":
        resolve_classifier_ref(judges.judge_toxicity_model, judge_field, train_missing=False)
