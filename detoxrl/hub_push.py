"""Sharing a finished run on the Hugging Face Hub: ``push_to_hub`` / ``hub_model_id`` / ``hub_private_repo``.

Every stage that writes a model (SFT, PPO / GRPO / RLOO, feedback training) calls ``push_run`` once its run
folder is complete, as TRL's scripts call ``trainer.push_to_hub()``. transformers' own ``Trainer`` push is
not used: it creates the repo when the trainer is built and uploads its ``output_dir`` layout on every
save, while a run folder here holds ``adapter/`` and ``merged/`` side by side. One commit uploads:

=============================  ==============================================================================
repo root                      the model: ``merged/`` when there is one (LoRA runs: loads with plain
                               ``AutoModelFor...from_pretrained(repo_id)``), else ``adapter/`` (a PEFT
                               adapter, or the whole model for full fine-tuning)
``adapter/``                   the adapter, when the root holds the merged model
``README.md``                  the model card (written by the stage)
``detoxrl.json``               the run card (prompt format, generation settings, metrics)
``resolved_config.yaml``       the exact config of the run
``value_head.safetensors``     PPO's value head, when present
=============================  ==============================================================================

Checkpoints, logs, tensorboard runs and stage markers stay local. ``check_push`` runs before any work, so
an offline machine learns it cannot push before training, not after.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from detoxrl.errors import UserError
from detoxrl.hub import offline_env
from detoxrl.runcard import CARD

log = logging.getLogger("detoxrl")

EXTRAS = ("README.md", CARD, "resolved_config.yaml", "value_head.safetensors")


def repo_id_for(hub_model_id: str | None, output_dir: str) -> str:
    """``hub_model_id``, or the output folder's name (what transformers' Trainer does)."""
    return hub_model_id or os.path.basename(os.path.normpath(os.path.abspath(output_dir)))


def check_push(push_to_hub: bool, hub_model_id: str | None, output_dir: str, field: str = "push_to_hub") -> None:
    """Before any work: pushing needs the hub, and a repo id of the form ``name`` or ``owner/name``."""
    if not push_to_hub:
        return
    if offline_env():
        raise UserError(f"{field}: true needs the Hugging Face Hub, but HF_HUB_OFFLINE is set; unset it or set "
                        f"{field}: false (the run folder can be uploaded later with `hf upload`)")
    repo_id = repo_id_for(hub_model_id, output_dir)
    if repo_id.count("/") > 1 or not repo_id.strip("/") or " " in repo_id:
        raise UserError(f"hub_model_id: '{repo_id}' is not a repo id; use NAME or OWNER/NAME")


def claim_push(args) -> bool:
    """For a transformers ``TrainingArguments``: ``check_push`` its hub fields before any work, then switch
    the Trainer's own per-checkpoint push off (the run is pushed once, whole, by ``push_run``). Returns
    whether to push at the end."""
    check_push(args.push_to_hub, args.hub_model_id, args.output_dir)
    push, args.push_to_hub = args.push_to_hub, False
    return push


def hub_files(run_dir: str) -> dict[str, str]:
    """``{path in the repo: local file}`` for a finished run folder (see the module docstring)."""
    merged, adapter = os.path.join(run_dir, "merged"), os.path.join(run_dir, "adapter")
    root = merged if os.path.isdir(merged) else adapter
    if not os.path.isdir(root):
        raise UserError(f"{run_dir}: no merged/ or adapter/ to upload; is the run finished?")
    files: dict[str, str] = {}
    for folder, prefix in ((root, ""), (adapter, "adapter/") if root == merged and os.path.isdir(adapter) else (None, "")):
        if folder is None:
            continue
        for dirpath, _, names in os.walk(folder):
            for name in names:
                local = os.path.join(dirpath, name)
                files[prefix + os.path.relpath(local, folder).replace(os.sep, "/")] = local
    for name in EXTRAS:
        if os.path.isfile(os.path.join(run_dir, name)):
            files[name] = os.path.join(run_dir, name)
    return files


def push_run(run_dir: str, hub_model_id: str | None, private: bool | None = None, token: str | None = None,
             commit_message: str = "Upload detoxrl run") -> str:
    """Create the repo if needed and upload the run folder's files in one commit; returns the repo URL."""
    from huggingface_hub import HfApi

    repo_id = repo_id_for(hub_model_id, run_dir)
    files = hub_files(run_dir)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="detoxrl-push-") as staging:
            for rel, local in files.items():
                dest = os.path.join(staging, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                try:
                    os.link(local, dest)  # no copy of multi-GB weights when the file system allows it
                except OSError:
                    shutil.copy2(local, dest)
            api.upload_folder(folder_path=staging, repo_id=repo_id, repo_type="model", commit_message=commit_message)
    except Exception as exc:  # noqa: BLE001 - network, auth or hub errors alike: the trained run is safe on disk
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"push_to_hub: the run is saved in '{run_dir}', but the upload to '{repo_id}' failed "
                        f"({type(exc).__name__}: {reason}); upload it later with `hf upload {repo_id} {run_dir}`") from None
    log.info("pushed %d files of %s to %s", len(files), run_dir, url)
    return str(url)
