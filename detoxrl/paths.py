"""Where things are: the project root, the shared data folder, the model cache, user paths.

The shared data folder defaults to ``../shared/data`` beside the checkout (this workplace's
layout); set ``DETOXRL_DATA_DIR`` to point at a local copy elsewhere. Config values may start
with ``${DETOXRL_DATA_DIR}`` or ``../shared/data`` and resolve either way.
"""

from __future__ import annotations

import os

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(PROJECT_ROOT), "shared", "data")


def data_dir() -> str:
    """The shared data folder: ``$DETOXRL_DATA_DIR`` or ``<checkout>/../shared/data``."""
    return os.environ.get("DETOXRL_DATA_DIR", DEFAULT_DATA_DIR)


def cache_dir() -> str:
    """Where converted models and trained artifacts are cached: ``$DETOXRL_CACHE`` or ``~/.cache/detoxrl``."""
    return os.environ.get("DETOXRL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "detoxrl"))


def candidate_paths(path: str) -> list[str]:
    """Places a user-given relative path may refer to, in the order they are tried.

    ``${DETOXRL_DATA_DIR}`` and ``~`` are expanded. A relative path is tried against the current
    folder, then against the project root (so configs work from any folder), and a path that
    starts with ``../shared/data`` is also tried under ``$DETOXRL_DATA_DIR``.
    """
    os.environ.setdefault("DETOXRL_DATA_DIR", data_dir())
    expanded = os.path.expanduser(os.path.expandvars(path))
    if os.path.isabs(expanded):
        return [expanded]
    out = [os.path.abspath(expanded), os.path.join(PROJECT_ROOT, expanded)]
    prefix = os.path.join("..", "shared", "data")
    norm = os.path.normpath(expanded)
    if norm.startswith(prefix):
        out.append(os.path.join(data_dir(), os.path.relpath(norm, prefix)))
    seen: list[str] = []
    for p in out:
        p = os.path.normpath(p)
        if p not in seen:
            seen.append(p)
    return seen


def resolve_path(path: str) -> str | None:
    """The first existing place ``path`` refers to (see ``candidate_paths``), or None."""
    for p in candidate_paths(path):
        if os.path.exists(p):
            return p
    return None
