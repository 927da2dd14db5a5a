"""``DetoxModelConfig``: TRL's ``ModelConfig`` plus the fine-tuning type and detoxrl defaults.

``finetuning`` picks one of five setups (or ``auto``, below) and sets TRL's own switches (``use_peft``,
``load_in_4bit``, ``load_in_8bit``) to match, so TRL's ``get_quantization_config`` and
``get_peft_config`` serve unchanged:

======== ========================================================================
full     every weight trains; no adapter, no quantization
lora     LoRA adapter (rank, alpha, dropout, bias, target modules) on a full-precision base
qlora    LoRA on a 4-bit NF4 base, bf16 compute, optional double quantization, k-bit prep
lora8bit LoRA on an 8-bit (LLM.int8) base, k-bit prep
ia3      (IA)^3: learned rescaling vectors, the lightest adapter-style option
======== ========================================================================

``auto`` (the default) resolves when the config is parsed, so ``resolved_config.yaml`` records the
setup that ran: ``qlora`` on a CUDA machine with bitsandbytes (the design card's supervised stage: a 4-bit
base frees memory for larger batches and models), ``lora`` elsewhere. On CPU, LoRA stays the default
until QLoRA's quality there is measured against it (``docs/models.md`` has the speed figures of
``python bench/sft.py --losses ce --finetuning lora qlora --no-trl``).

Defaults are the measured default SFT setup (``configs/sft/default.yaml``, docs/sft.md): LoRA r=16, alpha=32,
dropout 0.05, no bias, on every linear layer. The seed setups (``configs/sft/*_lora*.yaml``) set their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trl import ModelConfig

from detoxrl.models.embedded import SMOLLM2_ID

FINETUNING_TYPES = ("full", "lora", "qlora", "lora8bit", "ia3")


def auto_finetuning() -> str:
    """What ``finetuning: auto`` means on this machine: qlora on CUDA with bitsandbytes, else lora."""
    import importlib.util

    import torch

    return "qlora" if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") else "lora"


@dataclass
class DetoxModelConfig(ModelConfig):
    """Which model to load and how to fine-tune it (every field is a YAML key and a CLI flag)."""

    model_name_or_path: str | None = field(
        default=SMOLLM2_ID,
        metadata={"help": "Hub id (e.g. google/mt5-base) or local folder. The embedded SmolLM2 and "
                  "MiniLM are served offline from their PyPI packages."},
    )
    finetuning: Literal["auto", "full", "lora", "qlora", "lora8bit", "ia3"] = field(
        default="auto",
        metadata={"help": "auto (qlora on CUDA, lora on CPU; resolved when parsed) | full | lora | qlora (4-bit NF4 "
                  "base) | lora8bit (8-bit base) | ia3."},
    )
    model_family: Literal["auto", "causal", "seq2seq"] = field(
        default="auto",
        metadata={"help": "auto reads config.is_encoder_decoder; set it only to override."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_bias: Literal["none", "all", "lora_only"] = field(
        default="none", metadata={"help": "Which biases train with LoRA: none | all | lora_only."}
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Named set (qv | qkvo | all-linear), mapped to each architecture's layer "
                  "names (T5: q,v; BART/Llama: q_proj,v_proj; GPT-2: c_attn), or explicit module names."},
    )
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = field(
        default="bfloat16", metadata={"help": "Compute dtype of the 4-bit (qlora) layers."}
    )
    use_bnb_nested_quant: bool = field(
        default=False, metadata={"help": "qlora: double quantization (quantize the quantization constants)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run code shipped with a hub model. Off by default: only enable for repos you trust."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer hub id or folder; defaults to model_name_or_path."}
    )

    def __post_init__(self):
        if self.finetuning == "auto":
            self.finetuning = auto_finetuning()
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        if self.lora_r <= 0:
            raise ValueError(f"lora_r must be > 0 (got {self.lora_r})")
        if self.lora_alpha <= 0 and self.finetuning != "full":  # scaling alpha / r = 0: the adapter adds nothing
            raise ValueError(f"lora_alpha must be > 0 (got {self.lora_alpha}); the adapter's update is scaled by "
                             "lora_alpha / lora_r, so 0 trains an adapter that changes nothing")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        # TRL's own switches are accepted as spellings of the matching fine-tuning type.
        if self.load_in_4bit or self.load_in_8bit:
            wanted = "qlora" if self.load_in_4bit else "lora8bit"
            if self.finetuning not in ("lora", wanted):
                raise ValueError(f"finetuning: {self.finetuning} cannot load a quantized base; use finetuning: {wanted}")
            self.finetuning = wanted
        self.use_peft = self.finetuning in ("lora", "qlora", "lora8bit", "ia3")
        self.load_in_4bit = self.finetuning == "qlora"
        self.load_in_8bit = self.finetuning == "lora8bit"
        if self.load_in_4bit:
            self.bnb_4bit_quant_type = "nf4"
        # ModelConfig.__post_init__ collapses a one-item target list to a string; keep lists.
        targets = self.lora_target_modules
        super().__post_init__()
        self.lora_target_modules = targets

    @property
    def quantized(self) -> bool:
        return self.finetuning in ("qlora", "lora8bit")
