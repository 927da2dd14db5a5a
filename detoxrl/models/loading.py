"""Load a tokenizer and a model of either family with the configured fine-tuning type.

One function, ``load_model``, serves SFT, RL, evaluation and inference:

* family: seq2seq (T5, mT5, Flan-T5, BART: ``AutoModelForSeq2SeqLM``) or causal (Llama-style,
  GPT-2, Qwen: ``AutoModelForCausalLM``), read from ``config.is_encoder_decoder``;
* quantization from TRL's ``get_quantization_config`` (qlora: NF4 with ``bnb_4bit_compute_dtype``
  compute; lora8bit: LLM.int8), then PEFT's ``prepare_model_for_kbit_training``;
* the adapter: LoRA from TRL's ``get_peft_config`` with the named target set expanded and
  checked (``targets.py``) and the bias and task type filled in; IA3 with PEFT's per-architecture
  default targets.

Weights load from safetensors (``use_safetensors=True``) and ``trust_remote_code`` is off
unless the config turns it on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from detoxrl.errors import UserError
from detoxrl.models.config import DetoxModelConfig
from detoxrl.models.refs import ModelSource, resolve_model
from detoxrl.models.targets import expand_targets

logger = logging.getLogger("detoxrl")


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel, or a peft PeftModel around one
    tokenizer: Any
    family: str  # "causal" | "seq2seq"
    source: ModelSource

    @property
    def is_seq2seq(self) -> bool:
        return self.family == "seq2seq"


def model_family(config, override: str = "auto") -> str:
    """``seq2seq`` for encoder-decoder configs, else ``causal`` (unless ``override`` says)."""
    if override != "auto":
        return override
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def load_tokenizer(ref: str | ModelSource, trust_remote_code: bool = False, revision: str | None = None):
    """The tokenizer for ``ref``, with a pad token set (EOS stands in when the model has none)."""
    from transformers import AutoTokenizer

    src = ref if isinstance(ref, ModelSource) else resolve_model(ref, revision, what="tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(src.path, trust_remote_code=trust_remote_code, revision=revision)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"tokenizer of '{src.ref}' has no pad and no eos token; set tokenizer_name_or_path "
                            "to a tokenizer that defines one")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _dtype(name: str | None):
    if name in (None, "auto"):
        return "auto"
    return getattr(torch, name)


def _device_map(cfg: DetoxModelConfig):
    """Quantized models must sit whole on this process's own device: ``{"": local rank}`` on CUDA (what TRL's
    ``get_kbit_device_map`` returned before TRL 1.x dropped it), the CPU elsewhere."""
    if not cfg.quantized:
        return None
    if torch.cuda.is_available():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return {"": "cpu"}


def quantization_config(cfg: DetoxModelConfig):
    """TRL's ``get_quantization_config``, with the 4-bit compute dtype detoxrl exposes."""
    from trl import get_quantization_config

    qcfg = get_quantization_config(cfg)
    if qcfg is not None and cfg.finetuning == "qlora":
        qcfg.bnb_4bit_compute_dtype = getattr(torch, cfg.bnb_4bit_compute_dtype)
    return qcfg


def peft_config(cfg: DetoxModelConfig, model, family: str):
    """The PEFT config for ``cfg.finetuning`` (None for full fine-tuning)."""
    from peft import IA3Config, TaskType
    from trl import get_peft_config

    task = TaskType.SEQ_2_SEQ_LM if family == "seq2seq" else TaskType.CAUSAL_LM
    if cfg.finetuning == "full":
        return None
    if cfg.finetuning == "ia3":
        return IA3Config(task_type=task)  # PEFT picks the per-architecture targets
    lora = get_peft_config(cfg)
    lora.task_type = task
    lora.bias = cfg.lora_bias
    targets = expand_targets(cfg.lora_target_modules or ["qv"], model)
    lora.target_modules = targets if isinstance(targets, str) else set(targets)
    return lora


def read_config(src, **kwargs):
    """``AutoConfig.from_pretrained`` of a resolved model (``refs.ModelSource``), with one line for a ``config.json``
    that is not JSON or names a ``model_type`` this transformers does not know."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        config = os.path.join(src.path, "config.json") if os.path.isdir(src.path) else f"{src.ref}/config.json"
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, json.JSONDecodeError) or "not a valid JSON" in str(exc):
            raise UserError(f"model '{src.ref}': '{config}' is not valid JSON ({cause or exc}); fix or replace the "
                            "file (it comes with the model)") from None
        if "model type" in str(exc) or isinstance(exc, KeyError):
            kind = _model_type(config)
            raise UserError(f"model '{src.ref}': model_type '{kind}' in '{config}' is not one transformers "
                            f"{_transformers_version()} knows; fix the file or upgrade transformers") from None
        raise


def check_model_config(ref: str) -> None:
    """Before any data or weights load: a local model folder's (or run's) ``config.json`` reads (``read_config``).
    Hub ids and aliases are left to the load."""
    from detoxrl.models.runs import read_run
    from detoxrl.paths import resolve_path

    local = resolve_path(ref) if ref else None
    if not local or not os.path.isdir(local):
        return
    weights = resolve_path(read_run(local).weights)
    if weights and os.path.isfile(os.path.join(weights, "config.json")):
        read_config(ModelSource(ref, weights, "local path"))


def _model_type(config_path: str) -> str:
    try:
        with open(config_path, encoding="utf-8") as fh:
            return str(json.load(fh).get("model_type"))
    except (OSError, ValueError, AttributeError):
        return "?"


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def load_model(cfg: DetoxModelConfig, *, gradient_checkpointing: bool = False, apply_adapter: bool = True) -> LoadedModel:
    """Resolve, load and wrap the model as ``cfg`` says. See the module docstring."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    src = resolve_model(cfg.model_name_or_path, cfg.model_revision)
    revision = None if src.source.startswith(("local", "packaged")) else cfg.model_revision
    hf_config = read_config(src, trust_remote_code=cfg.trust_remote_code, revision=revision)
    family = model_family(hf_config, cfg.model_family)
    auto = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    kwargs: dict[str, Any] = dict(
        revision=revision,
        trust_remote_code=cfg.trust_remote_code,
        dtype=_dtype(cfg.dtype),
        use_safetensors=has_safetensors(src),
    )
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    qcfg = quantization_config(cfg)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        kwargs["device_map"] = _device_map(cfg)
    try:
        model = auto.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model '{src.ref}' ({src.source}) failed to load as a {family} LM: {first}") from exc
    tokenizer_ref = cfg.tokenizer_name_or_path or src
    tokenizer = load_tokenizer(tokenizer_ref, cfg.trust_remote_code, revision)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if apply_adapter:
        model = apply_finetuning(model, cfg, family, gradient_checkpointing)
    logger.info("loaded %s as %s LM, finetuning=%s", src.describe(), family, cfg.finetuning)
    return LoadedModel(model=model, tokenizer=tokenizer, family=family, source=src)


def apply_finetuning(model, cfg: DetoxModelConfig, family: str, gradient_checkpointing: bool = False):
    """k-bit preparation for quantized bases, then the adapter (if any)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    pcfg = peft_config(cfg, model, family)
    if pcfg is None:
        return model
    return get_peft_model(model, pcfg)


def has_safetensors(src: ModelSource) -> bool | None:
    """True for a local folder with safetensors; None (let transformers choose, safetensors first) otherwise.

    A local folder that holds only pickle weights (``pytorch_model.bin``) is refused unless the user
    converts it; hub repos get transformers' own safetensors-first resolution.
    """
    if not os.path.isdir(src.path):
        return None
    files = os.listdir(src.path)
    if any(f.endswith(".safetensors") for f in files):
        return True
    if any(f.endswith((".bin", ".pt", ".pth")) for f in files):
        raise UserError(
            f"model folder '{src.path}' holds only pickle weights (.bin); detoxrl loads safetensors only. "
            "Convert once with: python -c \"from transformers import AutoModel as M; "
            f"M.from_pretrained('{src.path}').save_pretrained('{src.path}')\" (only for weights you trust)"
        )
    return None
