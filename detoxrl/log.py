"""Logging set-up shared by every entry point: our INFO lines, library warnings only."""

from __future__ import annotations

import logging
import warnings


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Configure the ``detoxrl`` logger once and quiet third-party chatter (progress bars stay)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    logging.getLogger("detoxrl").setLevel(level)
    for noisy in ("huggingface_hub.utils._http", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    return logging.getLogger("detoxrl")
