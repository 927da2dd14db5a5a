"""Logging set-up shared by every entry point: our INFO lines, library warnings only."""

from __future__ import annotations

import logging
import warnings


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Configure the ``detoxrl`` logger once and quiet third-party chatter (progress bars stay)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    logging.getLogger("detoxrl").setLevel(level)
    # bitsandbytes warns on every CPU 4-bit load that the optional `kernels` package is missing.
    for noisy in ("huggingface_hub.utils._http", "httpx", "bitsandbytes.backends.cpu.ops"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    return logging.getLogger("detoxrl")
