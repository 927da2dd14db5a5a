"""Load the RL policy from an SFT run, and give access to its frozen reference.

``model_name_or_path`` names the SFT run (``outputs/sft/default``), a model folder or a hub id
(see ``detoxrl.models.runs``). The reference policy never takes a second full copy in memory when
the policy is an adapter:

* ``finetuning: lora|qlora|...`` with ``policy_adapter: new`` (default): a fresh adapter on the SFT
  model's merged weights; the reference is the same model with the adapter disabled, i.e. exactly
  the SFT model;
* ``policy_adapter: continue``: the SFT adapter on its base keeps training; a frozen second copy of
  the adapter (only the adapter weights) named ``reference`` serves as the reference;
* ``finetuning: full``: a frozen deep copy is the reference.

``critic: separate`` loads the SFT model once more (with its own fresh adapter) as the critic.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from dataclasses import dataclass, replace

from detoxrl.errors import UserError
from detoxrl.models.config import DetoxModelConfig
from detoxrl.models.loading import load_model
from detoxrl.models.runs import RunInfo, read_run
from detoxrl.prompts import PromptFormatter

log = logging.getLogger("detoxrl")


@dataclass
class Policy:
    model: object  # PeftModel or a plain PreTrainedModel (full fine-tuning)
    tokenizer: object
    family: str
    formatter: PromptFormatter
    run: RunInfo
    ref_model: object | None = None  # full fine-tuning only
    ref_adapter: str | None = None  # 'continue' only
    critic: object | None = None

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    @contextmanager
    def reference(self):
        """Yield the module that computes reference log-probs (see the module docstring)."""
        if self.ref_model is not None:
            yield self.ref_model
        elif self.ref_adapter is not None:
            trainable = {n: p.requires_grad for n, p in self.model.named_parameters()}
            self.model.set_adapter(self.ref_adapter)
            try:
                yield self.model
            finally:
                self.model.set_adapter("default")
                for n, p in self.model.named_parameters():  # set_adapter flips requires_grad; restore it
                    p.requires_grad_(trainable[n])
        else:
            with self.model.disable_adapter():
                yield self.model


def load_policy(model_cfg: DetoxModelConfig, policy_adapter: str = "new", critic: str = "shared") -> Policy:
    """Load policy, tokenizer, prompt format, reference and critic as ``model_cfg`` says."""
    run = read_run(model_cfg.model_name_or_path)
    if policy_adapter == "continue" and model_cfg.finetuning != "full":
        model, tok, family, ref_adapter = _continue_adapter(model_cfg, run)
    else:
        loaded = load_model(replace(model_cfg, model_name_or_path=run.weights))
        model, tok, family, ref_adapter = loaded.model, loaded.tokenizer, loaded.family, None
    formatter = PromptFormatter(run.prompt_config(), tok, family)
    ref_model = None
    if model_cfg.finetuning == "full":
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    critic_model = None
    if critic == "separate":
        critic_model = load_model(replace(model_cfg, model_name_or_path=run.weights)).model
    log.info("policy from %s (%s, %s, adapter %s); reference: %s", run.ref, family, model_cfg.finetuning,
             policy_adapter if model_cfg.finetuning != "full" else "-",
             "frozen copy" if ref_model is not None else (f"adapter '{ref_adapter}'" if ref_adapter else
                                                         "the disabled-adapter base"))
    return Policy(model, tok, family, formatter, run, ref_model, ref_adapter, critic_model)


def _continue_adapter(model_cfg: DetoxModelConfig, run: RunInfo):
    """The SFT adapter, trainable, on its base, plus a frozen copy of it named ``reference``."""
    from peft import PeftModel

    if run.adapter is None:
        raise UserError(f"policy_adapter: continue needs an SFT run with an adapter/ folder; '{run.ref}' has none "
                        "(use policy_adapter: new)")
    if not run.base_model:
        raise UserError(f"policy_adapter: continue: '{run.ref}' has no detoxrl.json naming its base model")
    loaded = load_model(replace(model_cfg, model_name_or_path=run.base_model), apply_adapter=False)
    base = loaded.model
    if model_cfg.quantized:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    model = PeftModel.from_pretrained(base, run.adapter, adapter_name="default", is_trainable=True)
    model.load_adapter(run.adapter, adapter_name="reference", is_trainable=False)
    model.set_adapter("default")
    return model, loaded.tokenizer, loaded.family, "reference"
