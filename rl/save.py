"""Writing the RL result, in the same run-folder layout as the SFT stage (``detoxrl.models.runs``).

    adapter/                the policy adapter (or full model) + tokenizer
    merged/                 the adapter folded in (full precision) + tokenizer
    value_head.safetensors  the value head (and the critic's trainable weights when separate)
    detoxrl.json            family, prompt, generation settings, stage "ppo", parent run, metrics
    README.md               model card with the before/after dev metrics
    resolved_config.yaml    written by rl/ppo.py
"""

from __future__ import annotations

import os
from dataclasses import replace

from safetensors.torch import save_file

from detoxrl.model_card import OWN_JUDGES, PROJECT, before_after, write_model_card
from detoxrl.runcard import build_card, write_card
from sft.save import save_folder, save_merged



def save_policy(out: str, policy, model, model_cfg, stage: str, summary: dict, merge: bool) -> None:
    """adapter/, merged/ (when ``merge`` and the policy is an adapter) and detoxrl.json, for any RL algorithm.

    ``policy`` is the ``rl.policy.Policy`` the run started from, ``model`` the trained (unwrapped) policy model.
    """
    tok, run = policy.tokenizer, policy.run
    adapter_dir = os.path.join(out, "adapter")
    save_folder(model, tok, adapter_dir)
    base = run.base_model if policy.ref_adapter else run.weights  # what adapter/ applies to
    if merge and policy.is_peft:
        save_merged(model, tok, replace(model_cfg, model_name_or_path=base), policy.family, adapter_dir,
                    os.path.join(out, "merged"))
    write_card(out, build_card(policy.family, os.path.abspath(base) if os.path.isdir(base) else base,
                               policy.formatter.cfg, policy.formatter.format, run.generation(),
                               {"finetuning": model_cfg.finetuning, "stage": stage, "parent": run.ref,
                                "metrics": summary}))


def full_module(trainer, model_cfg):
    """The trained ``PolicyWithValue`` with whole weights, to save from (collective; None off the main process).

    Under FSDP2 the trained weights are gathered into a CPU copy built from the same run (``save_pretrained`` cannot
    read FSDP2's parameters); elsewhere it is the trainer's own module (ZeRO-3: save inside ``gathered``)."""
    from detoxrl.distributed import backend, full_state_dict

    if not backend(trainer.accelerator)[1]:
        return trainer.unwrapped if trainer.accelerator.is_main_process else None
    state = full_state_dict(trainer.model)
    if state is None:
        return None
    from rl.policy import load_policy
    from rl.value_head import PolicyWithValue

    a, live = trainer.args, trainer.unwrapped
    fresh = load_policy(model_cfg, a.policy_adapter, a.critic)
    module = PolicyWithValue(fresh.model, fresh.family, fresh.critic, pack=live.pack, max_packed_tokens=live.max_packed_tokens)
    module.load_state_dict(state)
    return module


def save_ppo_result(trainer, model_cfg, summary: dict, info: dict, module=None) -> None:
    """Write adapter/, merged/, value_head.safetensors, detoxrl.json and README.md (main process only), from
    ``module`` (``full_module``; default the trainer's own)."""
    out = trainer.args.output_dir
    module = module if module is not None else trainer.unwrapped
    head = {f"value_head.{k}": v.detach().contiguous().cpu() for k, v in module.value_head.state_dict().items()}
    if module.critic is not None:
        head.update({f"critic.{n}": p.detach().contiguous().cpu() for n, p in module.critic.named_parameters()
                     if p.requires_grad})
    save_policy(out, trainer.policy, module.policy, model_cfg, trainer.args.algorithm, summary,
                trainer.args.merge_adapter)
    save_file(head, os.path.join(out, ".value_head.tmp"))
    os.replace(os.path.join(out, ".value_head.tmp"), os.path.join(out, "value_head.safetensors"))
    run = trainer.policy.run
    write_model_card(out, run.base_model or run.weights, [info["algorithm"].lower()],
                     f"Trained with {PROJECT}'s RL stage ({info['algorithm']}) from the SFT model `{run.ref}`.", {
                         "policy": f"{info['family']}, {info['finetuning']}, adapter {info['policy_adapter']}",
                         "reward": info["reward"], "steps": f"{info['steps']} x {info['batch']} rollouts",
                         "run time": f"{info['minutes']:.1f} min (training and both dev samples)"},
                     [(f"Dev metrics before and after ({trainer.args.eval_samples} dev inputs, greedy decoding)",
                       OWN_JUDGES + "\n\n" + before_after(summary.get("before", {}), summary.get("after", {})) +
                       "\n\nLoad it like any transformers model from `merged/`; build prompts as `detoxrl.json` "
                       "says, or use\n`detox --model <this folder>`.")])
