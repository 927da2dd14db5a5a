"""LoRA target modules: named sets per architecture, and a check against the model's real layers.

PEFT matches ``target_modules`` entries against module-name suffixes. Named sets:

=========== ================= ============================== =========================
set         T5 / mT5          BART / Llama / Qwen / Mistral  GPT-2 (fused attention)
=========== ================= ============================== =========================
qv          q, v              q_proj, v_proj                 c_attn
qkvo        q, k, v, o        q_proj, k_proj, v_proj, o_proj c_attn, attn.c_proj
                              (BART: out_proj)
all-linear  PEFT's own ``all-linear``: every linear layer but the output head
=========== ================= ============================== =========================
"""

from __future__ import annotations

import torch.nn as nn

from detoxrl.errors import UserError

NAMED_SETS = ("qv", "qkvo", "all-linear")


def linear_layer_names(model: nn.Module) -> list[str]:
    """Sorted leaf names of the model's linear layers (nn.Linear, bitsandbytes, GPT-2 Conv1D)."""
    names = set()
    for full_name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, nn.Linear) or kind in ("Conv1D", "Linear4bit", "Linear8bitLt"):
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def expand_targets(targets: list[str], model: nn.Module) -> list[str] | str:
    """Map named sets to the architecture's layer names; check explicit names exist.

    Raises ``UserError`` listing the model's linear layer names when a target is missing.
    """
    layers = linear_layer_names(model)
    if list(targets) == ["all-linear"]:
        return "all-linear"
    out: list[str] = []
    for target in targets:
        if target in ("qv", "qkvo"):
            out += _named(target, layers, model)
        elif target == "all-linear":
            raise UserError("lora_target_modules: 'all-linear' cannot be combined with other targets")
        elif target.rsplit(".", 1)[-1] in layers:
            out.append(target)
        else:
            raise UserError(
                f"lora_target_modules: '{target}' is not a linear layer of this model; "
                f"its linear layer names are: {', '.join(layers)} (or use a named set: {', '.join(NAMED_SETS)})"
            )
    return list(dict.fromkeys(out))


def _named(name: str, layers: list[str], model: nn.Module) -> list[str]:
    if "q_proj" in layers:  # Llama, Qwen, Mistral, BART, mBART, Marian
        out_proj = "o_proj" if "o_proj" in layers else "out_proj"
        return ["q_proj", "v_proj"] if name == "qv" else ["q_proj", "k_proj", "v_proj", out_proj]
    if "q" in layers and "v" in layers:  # T5, mT5, Flan-T5, UMT5
        return ["q", "v"] if name == "qv" else ["q", "k", "v", "o"]
    if "c_attn" in layers:  # GPT-2: q, k, v share one fused projection
        return ["c_attn"] if name == "qv" else ["c_attn", "attn.c_proj"]
    raise UserError(
        f"lora_target_modules: the named set '{name}' has no mapping for {type(model).__name__}; "
        f"name the modules explicitly from: {', '.join(layers)}"
    )
