"""Logging set-up shared by every entry point: our INFO lines, library warnings only."""

from __future__ import annotations

import logging
import warnings


BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"


def _not_missing_kernels(record: logging.LogRecord) -> bool:
    """False for bitsandbytes' CPU-backend note that the optional ``kernels`` package is missing."""
    return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


def quiet_known_noise() -> None:
    """Drop the one known bitsandbytes line (its CPU backend logs it on import, on every CPU-only run) and keep
    every other bitsandbytes warning. Idempotent; ``import detoxrl`` calls it."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if _not_missing_kernels not in logger.filters:
        logger.addFilter(_not_missing_kernels)


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Configure the ``detoxrl`` logger once and quiet third-party chatter (progress bars stay)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    logging.getLogger("detoxrl").setLevel(level)
    quiet_known_noise()
    for noisy in ("huggingface_hub.utils._http", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    return logging.getLogger("detoxrl")
