"""``push_to_hub`` on the stages that write a model, with the hub calls intercepted: what would be uploaded."""

from __future__ import annotations

import json
import os

import pytest
from huggingface_hub import HfApi

from detoxrl import hub_push
from detoxrl.errors import UserError
from detoxrl.models.runs import read_run
from tests.rl_helpers import make_run
from tests.test_rl_ppo import _args as ppo_args
from tests.test_sft_train import _args as sft_args


@pytest.fixture()
def hub(monkeypatch):
    """Record create_repo / upload_folder calls (and the files the staging folder holds at upload time)."""
    calls: dict = {"repos": [], "uploads": []}

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None, **kw):
        calls["repos"].append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok})
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None, **kw):
        files = {}
        for dirpath, _, names in os.walk(folder_path):
            for name in names:
                path = os.path.join(dirpath, name)
                files[os.path.relpath(path, folder_path).replace(os.sep, "/")] = os.path.getsize(path)
        calls["uploads"].append({"repo_id": repo_id, "files": files, "message": commit_message,
                                 "card": json.load(open(os.path.join(folder_path, "detoxrl.json")))})

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(hub_push, "offline_env", lambda: False)
    return calls


def test_sft_run_pushes_merged_model_at_root_with_adapter_and_cards(tiny_dir, toy_data, tmp_path, hub):
    from sft.train import run

    out = tmp_path / "sft"
    run(sft_args(tiny_dir("llama"), toy_data, out, "--finetuning", "lora", "--lora_r", "4", "--lora_alpha", "8",
                 "--push_to_hub", "true", "--hub_model_id", "me/detox-sft", "--hub_private_repo", "true"))
    assert hub["repos"] == [{"repo_id": "me/detox-sft", "private": True, "exist_ok": True}]
    (upload,) = hub["uploads"]
    files = upload["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors", "README.md", "detoxrl.json", "resolved_config.yaml"} <= set(files)
    assert not any(f.startswith(("checkpoint-", "runs/")) for f in files)  # checkpoints and logs stay local
    assert files["model.safetensors"] == os.path.getsize(out / "merged" / "model.safetensors")
    assert upload["card"]["stage"] == "sft" and upload["message"] == "detoxrl sft"
    # the checkpoint push of transformers' Trainer never ran: one upload, after the run folder was complete
    assert len(hub["uploads"]) == 1


def test_ppo_run_pushes_value_head_too(tiny_dir, toy_data, tmp_path, hub):
    from rl.ppo import run

    sft = make_run(tiny_dir("llama"), tmp_path, "causal")
    run(ppo_args(sft, toy_data, tmp_path / "rl", "--push_to_hub", "true", "--save_steps", "100"))
    (upload,) = hub["uploads"]
    assert upload["repo_id"] == "rl"  # no hub_model_id: the output folder's name, as transformers does
    assert {"config.json", "model.safetensors", "adapter/adapter_config.json", "value_head.safetensors",
            "detoxrl.json", "README.md", "resolved_config.yaml"} <= set(upload["files"])
    assert upload["card"]["stage"] == "ppo"


def test_a_downloaded_push_reads_as_a_run(tiny_dir, toy_data, tmp_path, hub):
    """What the hub holds (model + card at the root) is itself a run folder for ``detoxrl rewrite``."""
    import shutil

    sft = make_run(tiny_dir("llama"), tmp_path, "causal")
    snapshot = tmp_path / "snapshot"
    for rel, local in hub_push.hub_files(sft).items():
        os.makedirs(os.path.dirname(snapshot / rel), exist_ok=True)
        shutil.copy(local, snapshot / rel)
    info = read_run(str(snapshot))
    assert info.weights == str(snapshot) and info.card["stage"] == "sft" and info.adapter is None


def test_push_is_refused_offline_before_any_work(tiny_dir, toy_data, tmp_path, monkeypatch):
    from sft.train import run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    called = []
    monkeypatch.setattr("sft.train.load_detox_data", lambda *a, **k: called.append(1))
    with pytest.raises(UserError, match="push_to_hub: true needs the Hugging Face Hub"):
        run(sft_args(tiny_dir("llama"), toy_data, tmp_path / "o", "--push_to_hub", "true"))
    assert not called and not os.path.exists(tmp_path / "o")


def test_bad_repo_id_is_refused(monkeypatch):
    monkeypatch.setattr(hub_push, "offline_env", lambda: False)
    with pytest.raises(UserError, match="hub_model_id: 'a/b/c' is not a repo id"):
        hub_push.check_push(True, "a/b/c", "out")
