"""YAML-plus-CLI parsing for every detoxrl entry point, in TRL's ``TrlParser`` style.

``--config file.yaml --learning_rate 1e-4`` works as in TRL. What this adds to ``TrlParser``:

* YAML values go through the same argparse actions as CLI flags, so a YAML value is
  type-checked and checked against ``choices``/``Literal`` exactly like a flag. ``TrlParser``
  only installs YAML values as argparse *defaults*, which argparse never validates.
* An unknown YAML key, or a wrong value in the YAML, fails with one line naming the file and
  the field (with a "did you mean" hint); a wrong CLI value fails with one line naming the flag.
* ``__post_init__`` checks of the dataclasses (``ValueError``) are reported the same way.
* ``resolved_config_dict`` gives what every entry point saves beside its outputs.
* ``extends: other.yaml`` (a path relative to the file's folder) reads that config first; the file's own keys
  win. One config can thus be another plus a few changes.
* ``null`` (or ``None``) sets a field that may be unset back to unset, on the command line as in YAML
  (``--value_ridge null``), even over a value the ``--config`` file gave. ``TrlParser`` already reads
  ``none``/``null`` as ``None`` for ``X | None`` fields whose ``X`` is not ``str``; ``take_nulls`` does it for
  every such field, strings and choices included, so an orchestration override ``null`` never becomes the
  string ``"null"``.
* Dotted names: an entry point may pass ``aliases``, a function from a dotted name to a field name
  (the RL stage maps ``reward.weights.toxicity`` to ``w_toxicity``). Nested YAML mappings are read
  as dotted names, so ``reward: {weights: {toxicity: 2}}`` and ``--reward.weights.toxicity 2``
  both set ``w_toxicity``. ``sections`` names mappings read that way even where a field has the same name
  (the RL stage's ``critic: {features: lexicon}`` beside the scalar ``critic: shared``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import enum
import os
import re
import sys
import typing
from collections.abc import Iterable
from typing import Any

import yaml
from trl import TrlParser


from detoxrl.errors import ConfigError, UserError
from detoxrl.validate import check_config, load_yaml, locate_decode_error


def field_argv(key: str, value: Any) -> list[str]:
    """Render one YAML ``key: value`` as the CLI tokens argparse would receive."""
    if isinstance(value, bool):
        return [f"--{key}", "true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *[str(v) for v in value]]
    if isinstance(value, dict):
        raise ConfigError(f"field '{key}' is a mapping; write it as a list or a scalar")
    return [f"--{key}", str(value)]


def did_you_mean(name: str, known, otherwise: str, quote: str = "'") -> str:
    """``did you mean 'x'?`` with the closest of ``known``, else ``otherwise`` (the fix of an unknown-name line)."""
    hint = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {quote}{hint[0]}{quote}?" if hint else otherwise


def assignments(items: Iterable[str]) -> dict[str, str]:
    """``["lora_r=8", "guard_samples=16"]`` -> ``{"lora_r": "8", "guard_samples": "16"}``: the ``name=value``
    overrides a stage passes to the stage it runs (RFT's and feedback training's ``sft_overrides``)."""
    out: dict[str, str] = {}
    for item in items:
        name, _, value = str(item).partition("=")
        out[name.strip()] = value.strip()
    return out


_PROG_RENAMES: dict[str, str] = {}  # set by the ``detoxrl`` dispatcher: {"sft/train.py": "detoxrl sft"}


@contextlib.contextmanager
def rename_prog(default: str, name: str):
    """Within the block, entry points whose own name is ``default`` call themselves ``name`` (the
    dispatcher's ``detoxrl sft``). Only that entry point is renamed: stages a pipeline runs in-process
    keep theirs."""
    before = _PROG_RENAMES.get(default)
    _PROG_RENAMES[default] = name
    try:
        yield
    finally:
        if before is None:
            _PROG_RENAMES.pop(default, None)
        else:
            _PROG_RENAMES[default] = before


def prog_name(default: str) -> str:
    """What ``usage:`` and error lines call an entry point: ``detoxrl sft`` when the ``detoxrl``
    command runs it, else ``default`` (the script path). Sub-commands keep their suffix
    (``detox-feedback add`` -> ``detoxrl feedback add``)."""
    head, _, tail = default.partition(" ")
    name = _PROG_RENAMES.get(default) or _PROG_RENAMES.get(head)
    if name is None:
        return default
    return name if default in _PROG_RENAMES else f"{name} {tail}"


class DetoxParser(TrlParser):
    """``TrlParser`` whose YAML values are validated like CLI flags (see module docstring)."""

    def __init__(self, dataclass_types, prog: str | None = None, aliases=None, sections=(), **kwargs):
        super().__init__(dataclass_types, prog=prog_name(prog) if prog else prog, **kwargs)
        self._aliases = aliases
        self._sections = frozenset(sections)  # YAML mappings read as dotted names though a field has their name
        self._config_path: str | None = None
        self._cli_flags: set[str] = set()
        # inherited fields a stage never reads (DetoxPPOConfig.unread_fields): hidden from --help, refused when set
        self._unread = {name: dtype.__name__ for dtype in self.dataclass_types if hasattr(dtype, "unread_fields")
                        for name in dtype.unread_fields()}
        for action in self._actions:
            if action.dest in self._unread:
                action.help = argparse.SUPPRESS

    def _refuse_unread(self, name: str, where: str) -> None:
        if name in self._unread:
            raise ConfigError(f"{self.prog}: {where}: '{name}' is a TrainingArguments field that "
                              f"{self._unread[name]} never reads; remove it (--help lists the fields this stage reads)")

    def _known_fields(self) -> list[str]:
        return [a.dest for a in self._actions if a.dest not in ("help",)]

    def _read_config(self, config_path: str, seen: tuple[str, ...] = ()) -> dict[str, tuple[Any, str]]:
        """The fields of a YAML config as ``{field: (value, file)}``: those of its ``extends`` file first (a path
        relative to this file's folder), then its own, which win. ``env`` entries are exported on the way."""
        if not os.path.isfile(config_path):
            raise ConfigError(f"{self.prog}: config file '{config_path}' not found (pass --config PATH to a YAML file)")
        try:
            with open(config_path, encoding="utf-8") as fh:
                config = load_yaml(fh, config_path) or {}
        except ConfigError as exc:  # a key given twice
            raise ConfigError(f"{self.prog}: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{self.prog}: {locate_decode_error(config_path)}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{config_path}:{mark.line + 1}" if mark else config_path
            raise ConfigError(f"{self.prog}: {where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{self.prog}: {config_path}: must be a YAML mapping of field: value")
        fields: dict[str, tuple[Any, str]] = {}
        base = config.pop("extends", None)
        if base is not None:
            try:
                base_path = extends_path(config_path, base)
            except ConfigError as exc:
                raise ConfigError(f"{self.prog}: {exc}") from None
            chain = (*seen, os.path.abspath(config_path))
            if base_path in chain:
                raise ConfigError(f"{self.prog}: {config_path}: extends '{base}' leads back to itself; remove one "
                                  "extends")
            if not os.path.isfile(base_path):
                raise ConfigError(f"{self.prog}: {config_path}: extends '{base}': no file {base_path} (the path is "
                                  "relative to this file's folder)")
            fields = self._read_config(base_path, chain)
        for key, value in (config.pop("env", None) or {}).items():
            os.environ[str(key)] = str(value)
        for key, value in _flatten(config, set(self._known_fields()) - self._sections).items():
            fields[self._alias(key)] = (value, config_path)  # the file's own value wins over its base's
        return fields

    def _config_argv(self, config_path: str) -> list[str]:
        known = set(self._known_fields())
        argv: list[str] = []
        for key, (value, source) in self._read_config(config_path).items():
            if key not in known:
                fix = did_you_mean(key, known, "remove it, or see --help for the fields")
                raise ConfigError(f"{self.prog}: {source}: unknown field '{key}'; {fix}")
            self._refuse_unread(key, source)
            if value is None or value == []:  # argparse cannot spell these; install them as defaults
                self.set_defaults(**{key: value})
                continue
            try:
                argv += field_argv(key, value)
            except ConfigError as exc:
                raise ConfigError(f"{self.prog}: {source}: {exc}") from None
        return argv

    def parse_mapping(self, values: dict | None = None, config: str | None = None) -> tuple:
        """The dataclasses from the YAML ``config`` with ``values`` on top: how one stage sets another's fields from
        Python (RFT's rounds, the pipeline, the ablation grid) without writing a command line.

        ``values`` reads as a YAML file would (``{field: value}``, nested mappings as dotted names, the entry point's
        aliases; ``None`` unsets a field that may be unset) and wins over ``config``; every value is checked as a
        YAML value is, and an unknown name is one line with a did-you-mean hint. Later keys win over earlier ones
        that name the same field (``{"reward.weights.toxicity": 1, "w_toxicity": 2}`` sets 2).
        """
        known = set(self._known_fields())
        argv = ["--config", config] if config else []
        for key, value in _flatten(dict(values or {}), known - self._sections).items():
            name = self._alias(key)
            if name not in known:
                raise ConfigError(f"{self.prog}: unknown field '{key}'; "
                                  f"{did_you_mean(name, known, 'see --help for the fields')}")
            argv += [f"--{name}", "null"] if value is None else field_argv(name, value)
        return self.parse(argv)

    def parse(self, args: Iterable[str] | None = None) -> tuple:
        """Parse ``--config`` YAML then CLI flags (CLI wins) into the dataclasses."""
        args = list(sys.argv[1:] if args is None else args)
        config_argv: list[str] = []
        self._config_path = None
        if "--config" in args:
            i = args.index("--config")
            if i + 1 >= len(args):
                raise ConfigError(f"{self.prog}: --config needs a path to a YAML file")
            self._config_path = args[i + 1]
            del args[i : i + 2]
            config_argv = self._config_argv(self._config_path)
        args = [self._alias_flag(a) for a in args]
        self._cli_flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
        self._check_flags(self._cli_flags)
        for flag in self._cli_flags:
            action = self._option_string_actions.get(flag)
            if action is not None:
                self._refuse_unread(action.dest, "command line")
        where = f"{self._config_path} + command line" if self._config_path and args else (
            self._config_path or "command line")
        argv, unset = take_nulls(config_argv + args, self._nullable_fields())
        if unset:
            self.set_defaults(**dict.fromkeys(unset))
        try:
            parsed = self.parse_args_into_dataclasses(args=argv)
            for cfg in parsed:  # one validation pass, before any entry point loads a model
                if dataclasses.is_dataclass(cfg):
                    check_config(cfg)
            return parsed
        except ConfigError as exc:
            if str(exc).startswith(f"{self.prog}: "):
                raise
            raise ConfigError(f"{self.prog}: {where}: {exc}") from None
        except UserError as exc:
            raise UserError(f"{self.prog}: {exc}") from None
        except (ValueError, TypeError) as exc:  # raised by a dataclass __post_init__
            raise ConfigError(f"{self.prog}: {where}: {exc}") from None

    def _check_flags(self, flags: Iterable[str]) -> None:
        """Every command-line flag is one of the parser's (or a prefix argparse expands), else one line with the
        nearest flag, as an unknown YAML field gets."""
        known = [s for s in self._option_string_actions if s.startswith("--")]
        for flag in sorted(flags):
            if flag == "--" or flag in self._option_string_actions or any(k.startswith(flag) for k in known):
                continue
            fix = did_you_mean(flag, known, "see --help for the flags", quote="")
            raise ConfigError(f"{self.prog}: command line: unknown flag {flag}; {fix}")

    def _nullable_fields(self) -> set[str]:
        """Fields typed ``X | None`` with a scalar ``X`` (one token on the command line)."""
        found: set[str] = set()
        for dtype in self.dataclass_types:
            for name, hint in typing.get_type_hints(dtype).items():
                args = typing.get_args(hint)
                if type(None) in args and not any(typing.get_origin(a) in (list, dict) for a in args):
                    found.add(name)
        return found

    def _alias(self, name: str) -> str:
        return self._aliases(name) if self._aliases and "." in name else name

    def _alias_flag(self, arg: str) -> str:
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            return arg
        flag, eq, value = arg[2:].partition("=")
        return "--" + self._alias(flag) + eq + value

    def error(self, message: str):  # noqa: D401 - argparse API
        """argparse calls this for every bad value: one line that names the file or the flag."""
        flag = re.search(r"argument (--\w+)", message)
        from_cli = flag is None or flag.group(1) in self._cli_flags or not self._config_path
        where = "command line" if from_cli else self._config_path
        raise ConfigError(f"{self.prog}: {where}: {message}")


def extends_path(config_path: str, base: Any) -> str:
    """Where a config's ``extends: <base>`` points: relative to the config's own folder."""
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{config_path}: extends must be the path of a YAML config (got {base!r})")
    return os.path.abspath(os.path.join(os.path.dirname(config_path), os.path.expanduser(base)))


def config_value(config_path: str, key: str, default: Any = None) -> Any:
    """One top-level value of a YAML config, following its ``extends`` chain; ``default`` when absent or unreadable
    (the parser reports a bad file)."""
    for _ in range(32):
        try:
            with open(config_path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
        except (OSError, UnicodeDecodeError, ValueError):  # yaml.YAMLError is a ValueError
            return default
        if not isinstance(raw, dict):
            return default
        if key in raw:
            return raw[key]
        if raw.get("extends") is None:
            return default
        try:
            config_path = extends_path(config_path, raw["extends"])
        except ConfigError:
            return default
    return default


NULLS = ("null", "None")


def take_nulls(argv: list[str], nullable: set[str]) -> tuple[list[str], list[str]]:
    """``argv`` without the flags of ``nullable`` fields whose last value is ``null``, and those fields' names:
    the caller installs them as ``None`` defaults, which argparse never type-checks. Every earlier value of such a
    flag goes too (the last one wins, as argparse's would)."""
    pairs: list[tuple[str | None, list[str]]] = []  # (nullable flag name or None, its tokens)
    last: dict[str, str] = {}  # each nullable flag's last value
    i = 0
    while i < len(argv):
        name, eq, value = argv[i][2:].partition("=") if argv[i].startswith("--") else ("", "", "")
        if name in nullable and (eq or i + 1 < len(argv)):
            tokens = argv[i : i + 1] if eq else argv[i : i + 2]
            pairs.append((name, tokens))
            last[name] = value if eq else argv[i + 1]
            i += len(tokens)
        else:
            pairs.append((None, argv[i : i + 1]))
            i += 1
    unset = [name for name, value in last.items() if value in NULLS]
    kept = [t for name, tokens in pairs if name is None or name not in unset for t in tokens]
    return kept, unset


def _flatten(config: dict, known: set[str], prefix: str = "") -> dict:
    """Nested mappings as dotted keys (``{a: {b: 1}}`` -> ``{"a.b": 1}``), except where a field takes a mapping."""
    flat: dict = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in known:
            flat.update(_flatten(value, known, name + "."))
        else:
            flat[name] = value
    return flat


def _plain(value: Any) -> Any:
    """A YAML-safe version of a config value (enums by value, unknown objects as strings)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


SECRET_FIELDS = re.compile(r"(^|_)token$")  # hub_token and the like never reach a saved config


def config_section(cfg) -> str:
    """The section name of a config in ``resolved_config.yaml``: its class name, or the ``section`` a stage's
    subclass keeps from its base (``SFTDataConfig`` is saved as ``DataConfig``, which readers look up)."""
    return getattr(type(cfg), "section", type(cfg).__name__)


def resolved_config_dict(*configs) -> dict[str, dict[str, Any]]:
    """The parsed dataclasses as ``{section: {field: value}}``, ready for YAML (secrets left out)."""
    return {config_section(cfg): {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                                  if not SECRET_FIELDS.search(f.name)} for cfg in configs}


def save_resolved_config(path: str, *configs) -> None:
    """Write the resolved configs to ``path`` atomically (write to a temp file, then rename)."""
    from detoxrl.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(resolved_config_dict(*configs), sort_keys=False, allow_unicode=True))


EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader went away
EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C (128 + SIGINT)


def run_cli(main_fn, args=None) -> int:
    """Run an entry point; turn ``ConfigError`` (and other user errors) into one line on stderr, exit 2.

    A closed stdout (``detox-feedback list | head -1``) ends the command quietly with exit 141. ``--verbose`` and
    ``--quiet`` (anywhere in ``args``) set the logging verbosity (``detoxrl.log``) before the entry point runs.
    """
    from detoxrl.log import configure_logging, take_verbosity_flags

    args = take_verbosity_flags(list(sys.argv[1:] if args is None else args))
    configure_logging()
    try:
        main_fn(args)
        sys.stdout.flush()  # a pipe closed early fails here, inside the handler, not at interpreter exit
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:  # Ctrl-C: one line (what was kept, if the command says), no traceback
        print(f"interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by a test or already closed
        pass
