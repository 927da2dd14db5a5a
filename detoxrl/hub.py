"""Is the Hugging Face Hub reachable? One answer per process, shared by model and dataset loading.

``huggingface_hub`` retries a failed request five times with backoff (about 25 s per file), so on
an offline machine every model or dataset would wait. ``hub_reachable`` asks once (``HF_HUB_OFFLINE``,
then one TCP connect to the endpoint) and, when the hub is out of reach, switches the process to
offline mode: the env var plus the constants that ``huggingface_hub``, ``datasets`` and
``transformers`` read at import time (setting the env var alone after import does nothing).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import urllib.parse

logger = logging.getLogger("detoxrl")


def offline_env() -> bool:
    """``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def set_offline() -> None:
    """Put this process in hub-offline mode, including libraries that were already imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                         ("transformers.utils.hub", "_is_offline_mode")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            setattr(mod, attr, True)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is on or the hub endpoint does not accept a TCP connection."""
    if offline_env():
        set_offline()
        return False
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        logger.info("hub %s unreachable: working offline (HF_HUB_OFFLINE=1)", endpoint.hostname)
        set_offline()
        return False
