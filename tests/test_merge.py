"""Merging adapters (``sft/save.py``, used by the SFT and RL stages): with a non-zero adapter
(``init_lora_weights=False``, so B != 0), the merged model computes the PeftModel's logits, not the base's;
a QLoRA adapter is folded into the base reloaded unquantized."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from detoxrl.models.config import DetoxModelConfig
from detoxrl.models.loading import load_model
from sft.save import save_merged

IDS = torch.tensor([[5, 17, 42, 9, 100, 7]])


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def test_merged_lora_equals_the_peft_model(tiny_dir, tmp_path):
    base_dir = tiny_dir("llama")
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                     init_lora_weights=False)).eval()
    peft.save_pretrained(tmp_path / "adapter")
    cfg = DetoxModelConfig(model_name_or_path=base_dir, finetuning="lora")
    expected = _logits(peft)
    save_merged(peft, AutoTokenizer.from_pretrained(base_dir), cfg, "causal", str(tmp_path / "adapter"),
                str(tmp_path / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = _logits(AutoModelForCausalLM.from_pretrained(base_dir).eval())
    assert (expected - base).abs().max() > 1e-2  # the adapter changes the output
    torch.testing.assert_close(_logits(merged), expected, atol=1e-4, rtol=0)


def test_qlora_adapter_is_merged_into_the_unquantized_base(tiny_dir, tmp_path):
    base_dir = tiny_dir("llama")
    cfg = DetoxModelConfig(model_name_or_path=base_dir, finetuning="qlora", lora_r=4, lora_alpha=8,
                           lora_target_modules=["q_proj", "v_proj"])
    q = load_model(cfg).model
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in q.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    q.save_pretrained(tmp_path / "adapter")
    save_merged(q, AutoTokenizer.from_pretrained(base_dir), cfg, "causal", str(tmp_path / "adapter"),
                str(tmp_path / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    fp = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "adapter").eval()
    expected = _logits(fp)  # full-precision base + the adapter
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    torch.testing.assert_close(_logits(merged), expected, atol=1e-4, rtol=0)
    base = _logits(AutoModelForCausalLM.from_pretrained(base_dir).eval())
    assert (expected - base).abs().max() > 1e-2
