"""Logging set-up shared by every entry point: our INFO lines; other libraries' warnings behind ``--verbose``.

Verbosity (``--verbose`` / ``--quiet`` on every command, or ``DETOXRL_VERBOSITY`` for the processes a command
starts) sets two thresholds:

========= ======================= ===============================================================
verbosity ``detoxrl`` loggers      other libraries (logging, ``warnings``, transformers' own logger)
========= ======================= ===============================================================
quiet     WARNING                  ERROR
normal    INFO                     ERROR
verbose   DEBUG                    WARNING
========= ======================= ===============================================================

Why other libraries stay at ERROR by default: what they log on import or load changes with every release
(``kernels`` 0.19 logs a line on every bitsandbytes import offline), and a bad input must still print
exactly one line whatever is installed. Their progress bars are not logging and stay.

Nothing here imports torch or transformers: transformers' own logger is set through
``TRANSFORMERS_VERBOSITY`` until it is imported, so a command that needs no model stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSITY_ENV = "DETOXRL_VERBOSITY"
LEVELS = {"quiet": (logging.WARNING, logging.ERROR), "normal": (logging.INFO, logging.ERROR),
          "verbose": (logging.DEBUG, logging.WARNING)}
FLAGS = {"--verbose": "verbose", "--quiet": "quiet"}
OWN = ("detoxrl", "__main__")


def verbosity() -> str:
    """``quiet`` | ``normal`` | ``verbose``, from ``DETOXRL_VERBOSITY`` (normal when unset or unknown)."""
    value = os.environ.get(VERBOSITY_ENV, "normal")
    return value if value in LEVELS else "normal"


def take_verbosity_flags(args: list[str]) -> list[str]:
    """``args`` without ``--verbose`` / ``--quiet``; the last one given is exported as ``DETOXRL_VERBOSITY``, so
    the processes a command starts (``accelerate launch``, pipeline stages) log the same way."""
    rest = []
    for arg in args:
        if arg in FLAGS:
            os.environ[VERBOSITY_ENV] = FLAGS[arg]
        else:
            rest.append(arg)
    return rest


class _ThirdPartyFilter(logging.Filter):
    """Passes our own records at any level the logger allows, other libraries' from ``level`` up."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith(OWN) or record.levelno >= self.level


class _StderrHandler(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is emitted (a redirect, a test's capture), not the
    stream of the moment it was installed, which may be closed by then."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property always reads sys.stderr
        pass


_HANDLER: logging.Handler | None = None


def configure_logging() -> None:
    """Install the stderr handler and the thresholds of the current verbosity (idempotent). ``run_cli`` calls it
    before an entry point runs, so a library that logs when it is first imported (bitsandbytes at model load)
    meets the filter. Importing ``detoxrl`` as a library configures nothing."""
    global _HANDLER
    own_level, other_level = LEVELS[verbosity()]
    root = logging.getLogger()
    if _HANDLER is None or _HANDLER not in root.handlers:
        _HANDLER = _StderrHandler()
        _HANDLER.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        _HANDLER.addFilter(_ThirdPartyFilter(other_level))
        root.addHandler(_HANDLER)
    for f in _HANDLER.filters:
        if isinstance(f, _ThirdPartyFilter):
            f.level = other_level
    root.setLevel(min(logging.WARNING, other_level))
    logging.getLogger("detoxrl").setLevel(own_level)
    logging.captureWarnings(True)  # warnings.warn from libraries -> the "py.warnings" logger -> the filter above
    name = logging.getLevelName(other_level).lower()
    if sys.modules.get("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(other_level)
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = name


def setup_logging(level: int | None = None) -> logging.Logger:
    """Configure logging for an entry point (see the module docstring); ``level`` overrides our loggers' level."""
    configure_logging()
    if level is not None:
        logging.getLogger("detoxrl").setLevel(level)
    for noisy in ("huggingface_hub.utils._http", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    return logging.getLogger("detoxrl")
