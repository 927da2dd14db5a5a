"""Checks every entry point runs right after parsing, before any model or data is loaded.

* ``check_config``: every float field finite; training arguments (``TrainingArguments``) with positive
  sizes and rates; decoding settings (``check_generation``) in range; an ``output_dir`` that can be a folder.
* ``check_output_dir`` / ``check_output_file``: the path is (or can become) a folder / a file.
* ``read_lines`` / ``decode_lines``: strict UTF-8 text with errors naming the file (or stdin), the
  line and the byte offset; ``errors="replace"`` keeps going and warns how many lines were replaced.
* ``load_yaml``: ``yaml.safe_load`` that refuses duplicate keys, naming both lines.

Every failure is a ``ConfigError``/``UserError``: one line, exit code 2 (``detoxrl.config.run_cli``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import stat
import sys
from collections.abc import Iterable, Iterator

import yaml

from detoxrl.errors import ConfigError, UserError

log = logging.getLogger("detoxrl")

ENCODING_ERRORS = ("strict", "replace")
ENCODING_HELP = ("What a byte that is not UTF-8 does: strict (stop with the file, line and byte offset) | "
                 "replace (use U+FFFD and warn how many lines were changed).")


# ---------------------------------------------------------------------------------------- config values


def json_kind(value) -> str:
    """How a JSON value reads in a message: 'a number', 'a list', 'null', ..."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def check_finite(cfg) -> None:
    """Every float field of the dataclass ``cfg`` is a finite number (``nan``/``inf`` parse as floats)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name} must be a finite number (got {value})")


def _at_least(cfg, minimum, *names) -> None:
    for name in names:
        value = getattr(cfg, name, None)
        if value is not None and value < minimum:
            raise ConfigError(f"{name} must be >= {minimum} (got {value})")


def check_training_args(args) -> None:
    """Sizes >= 1, a learning rate > 0 and other rates >= 0 on a transformers ``TrainingArguments``; a step count
    that trains (``max_steps`` >= 1, or -1 for ``num_train_epochs``); a seed numpy takes."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name, 1) is None:
            raise ConfigError(f"{name} must be a whole number >= 1 (got null)")
    _at_least(args, 1, "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
    if args.max_steps == 0 or args.max_steps < -1:
        raise ConfigError(f"max_steps must be >= 1, or -1 to train num_train_epochs (got {args.max_steps}); "
                          "0 would still run a step")
    if not 0 <= args.seed < 2 ** 32:
        raise ConfigError(f"seed must be in [0, 2**32) (got {args.seed})")
    if not args.learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0 (got {args.learning_rate}); a zero rate trains nothing")
    _at_least(args, 0, "weight_decay", "warmup_steps", "max_grad_norm", "adam_epsilon", "dataloader_num_workers",
              "label_smoothing_factor")
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        raise ConfigError(f"num_train_epochs must be > 0 when max_steps is unset (got {args.num_train_epochs})")
    for name in ("logging_steps", "save_steps", "eval_steps"):
        value = getattr(args, name, None)
        if value is not None and value <= 0 and getattr(args, f"{name.split('_')[0]}_strategy", "no") not in ("no",):
            raise ConfigError(f"{name} must be > 0 (got {value})")


def check_generation(values: dict) -> None:
    """Decoding settings (unset ones, None, are skipped): sizes >= 1, temperature > 0, top_p in (0, 1], and
    best-of-n (which samples) not with beam search."""
    for name in ("max_new_tokens", "num_beams", "gen_batch_size", "best_of"):
        value = values.get(name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1 (got {value})")
    temperature, top_p = values.get("temperature"), values.get("top_p")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be a number > 0 (got {temperature})")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1] (got {top_p})")
    best_of, beams = values.get("best_of"), values.get("num_beams")
    if best_of is not None and beams is not None and best_of > 1 and beams > 1:
        raise ConfigError(f"best_of {best_of} samples its candidates and cannot be combined with num_beams {beams}; "
                          "set num_beams 1 (or best_of 1 for beam search)")


def check_config(cfg) -> None:
    """The checks that fit every parsed dataclass (see the module docstring)."""
    check_finite(cfg)
    for f in dataclasses.fields(cfg):  # learning_rate, sft_learning_rate, rm_learning_rate, ...
        value = getattr(cfg, f.name, None)
        if f.name.endswith("learning_rate") and isinstance(value, (int, float)) and not value > 0:
            raise ConfigError(f"{f.name} must be > 0 (got {value}); a zero rate trains nothing")
    # A config of these classes means their modules are imported already; a model-free command imports neither
    # (transformers and torch would cost seconds).
    training_args = getattr(sys.modules.get("transformers.training_args"), "TrainingArguments", None)
    if training_args is not None and isinstance(cfg, training_args):
        check_training_args(cfg)
    generation = getattr(sys.modules.get("detoxrl.generate"), "GenerationSettings", None)
    if generation is not None and isinstance(cfg, generation):
        check_generation(dataclasses.asdict(cfg))
    if isinstance(getattr(cfg, "output_dir", None), str):
        check_output_dir(cfg.output_dir, "output_dir")


# ---------------------------------------------------------------------------------------- paths


def _first_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _creatable(path: str, flag: str, folder: str | None = None) -> None:
    """The first existing ancestor of ``folder`` (default: ``path``'s folder) is a writable folder."""
    base = _first_existing(folder or os.path.dirname(os.path.abspath(path)) or ".")
    if not os.path.isdir(base):
        raise UserError(f"{flag} '{path}': '{base}' is a file, not a folder; pick another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{flag} '{path}': cannot write in '{base}' (permission denied); pick another path")


def check_output_dir(path: str, flag: str = "output_dir") -> None:
    """``path`` is a writable folder, or can be made one."""
    if not path.strip():
        raise UserError(f"{flag} is empty; pass a folder path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} '{path}' is a file, not a folder; pass a folder path (or remove the file)")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{flag} '{path}': cannot write in it (permission denied); pick another folder")
        return
    _creatable(path, flag, folder=os.path.abspath(path))


def check_output_file(path: str, flag: str = "--output") -> None:
    """``path`` is a writable file, or can be made one (not a folder)."""
    if os.path.isdir(path):
        raise UserError(f"{flag} '{path}' is a folder; pass a file path such as {os.path.join(path, 'out.txt')}")
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise UserError(f"{flag} '{path}' is not a regular file (a pipe, socket or device); pass a file path, or "
                        "leave --output out to write to stdout")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"{flag} '{path}': cannot write it (permission denied); pick another path")
    _creatable(path, flag)


# ---------------------------------------------------------------------------------------- text


def _decode(raw: bytes, what: str, line: int, offset: int, errors: str) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as exc:
        if errors == "replace":
            return raw.decode("utf-8", errors="replace"), True
        raise UserError(f"{what}: line {line}, byte {offset + exc.start}: not UTF-8 (byte 0x{raw[exc.start]:02x}); "
                        "convert it to UTF-8, or pass --encoding_errors replace") from None


def decode_lines(chunks: Iterable[bytes], what: str, errors: str = "strict") -> Iterator[str]:
    """Decode binary lines (line endings kept) one at a time; see ``read_lines`` for ``errors``.

    A UTF-8 byte-order mark on the first line is dropped. With ``errors="replace"`` a warning at the
    end says how many lines held bytes that were replaced.
    """
    if errors not in ENCODING_ERRORS:
        raise ConfigError(f"encoding_errors must be one of {', '.join(ENCODING_ERRORS)} (got {errors!r})")
    offset, replaced = 0, 0
    for n, raw in enumerate(chunks, 1):
        body = raw[3:] if n == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
        text, bad = _decode(body, what, n, offset + len(raw) - len(body), errors)
        replaced += bad
        offset += len(raw)
        yield text
    if replaced:
        log.warning("%s: %d line(s) held bytes that are not UTF-8; they were replaced by U+FFFD", what, replaced)


def read_lines(path: str, what: str | None = None, errors: str = "strict", keepends: bool = False) -> list[str]:
    """The lines of a UTF-8 text file (no trailing empty line for a final newline).

    ``errors="strict"``: a byte that is not UTF-8 stops with ``what`` (default: the path), the line and
    the byte offset; ``"replace"``: it becomes U+FFFD and one warning counts the lines changed.
    """
    what = what or path
    if os.path.isdir(path):
        raise UserError(f"{what} is a folder, not a text file")
    try:
        with open(path, "rb") as fh:
            lines = list(decode_lines(fh, what, errors))
    except FileNotFoundError:
        raise UserError(f"{what} not found") from None
    except OSError as exc:
        raise UserError(f"{what}: cannot read it ({exc.strerror})") from None
    if "\x00" in "".join(lines[:1000]):
        raise UserError(f"{what} holds NUL bytes: it is a binary file, not UTF-8 text")
    return lines if keepends else [line.rstrip("\n").removesuffix("\r") for line in lines]


def locate_decode_error(path: str) -> str:
    """``"path:LINE: byte OFFSET ..."`` for the first byte of ``path`` that is not UTF-8 (for error messages)."""
    try:
        read_lines(path)
    except UserError as exc:
        return str(exc)
    return f"{path}: not UTF-8 text"


# ---------------------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` whose mappings refuse a key given twice (PyYAML keeps the last one silently)."""

    source = "YAML"

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                break
            line = key_node.start_mark.line + 1
            if first is not None:
                raise ConfigError(f"{self.source}: key '{key}' is given twice (lines {first} and {line}); "
                                  "keep one of them")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(stream, source: str = "YAML"):
    """``yaml.safe_load`` that refuses duplicate keys (``ConfigError`` naming ``source`` and both lines)."""
    loader = _UniqueKeyLoader(stream)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
