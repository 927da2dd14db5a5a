"""``build_ppo``: the one way to assemble the PPO stage from its configs, and ``save_ppo_run``: the one way to write
what it trained. ``rl/ppo.py``, the benchmarks (``bench/ppo.py``, ``bench/rft.py``, ``bench/critic_shadows.py``)
and Python users go through them:

    from rl.build import build_ppo, save_ppo_run
    from rl.ppo import parse

    trainer = build_ppo(*parse(["--config", "configs/rl/default.yaml", "--max_steps", "5"]))
    summary = trainer.train()
    save_ppo_run(trainer, summary)

``build_ppo`` reads in the order a run needs, each check before the work it guards: the seed, the start model
(one line if it is missing), the data, the toxic lexicon, the policy (``rl/policy.py``), the composite reward on
this process's device, the training sources that fit ``max_prompt_length``, the dev sample and its evaluator, the
trainer. ``algorithm: grpo | rloo`` (TRL's trainers) is ``rl/trl_algos.py``'s.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("detoxrl")


def training_sources(pairs, formatter, max_prompt_length: int) -> list[str]:
    """Distinct sources of the training pairs whose prompt fits ``max_prompt_length`` tokens."""
    sources = list(dict.fromkeys(p.source for p in pairs))
    lengths = [len(ids) for ids in formatter.tokenizer([formatter.prompt(s) for s in sources],
                                                       add_special_tokens=True)["input_ids"]]
    kept = [s for s, n in zip(sources, lengths) if n <= max_prompt_length]
    if len(kept) < len(sources):
        log.info("training sources: %d of %d fit max_prompt_length %d", len(kept), len(sources), max_prompt_length)
    return kept


def check_start_model(model_cfg) -> None:
    """The policy's start (by default the SFT run ``outputs/sft/default``) exists, or one line that names the
    command to run first, before any data or model loads."""
    from detoxrl.models.embedded import ALIASES
    from detoxrl.models.refs import looks_like_hub_id
    from detoxrl.paths import resolve_path

    from detoxrl.models.loading import check_model_config

    from detoxrl.config import prog_name
    from detoxrl.errors import UserError

    ref = model_cfg.model_name_or_path or ""
    if resolve_path(ref):
        check_model_config(ref)  # a broken config.json fails before the data loads
        return
    if ref in ALIASES or looks_like_hub_id(ref):
        return
    raise UserError(f"{prog_name('rl/ppo.py')}: model_name_or_path: '{ref}' does not exist. The RL stage starts "
                    "from an SFT run: train it first with `accelerate launch sft/train.py` (or `detoxrl sft`), which "
                    "writes outputs/sft/default, or point --model_name_or_path at a run folder or hub id")


@dataclass
class PPOConfigs:
    """The five configs ``rl/ppo.py`` parses (``parse`` returns them in this order)."""

    data: object
    vocab: object
    model: object
    reward: object
    args: object

    def save(self, path: str) -> None:
        from detoxrl.config import save_resolved_config

        save_resolved_config(path, self.data, self.vocab, self.model, self.reward, self.args)


@dataclass
class Parts:
    """What both PPO and TRL's trainers are built from."""

    policy: object
    reward: object
    prompts: list
    evaluator: object
    lexicon: object


def build_parts(configs: PPOConfigs) -> Parts:
    from transformers import set_seed

    from detoxrl.data import group_references, load_detox_data
    from detoxrl.distributed import process_device
    from detoxrl.vocab import load_lexicon
    from rewards.composite import CompositeReward
    from rl.dev_eval import dev_evaluator
    from rl.policy import load_policy

    a = configs.args
    set_seed(a.seed)  # before the adapter and value head are initialised
    check_start_model(configs.model)
    data = load_detox_data(configs.data)
    lexicon = load_lexicon(configs.vocab)
    policy = load_policy(configs.model, a.policy_adapter, a.critic)
    # the judges on this process's device (cuda:<local rank> on GPUs), not every rank's on GPU 0
    reward = CompositeReward(configs.reward, configs.vocab, device=process_device(a.use_cpu))
    log.info("reward: %s", reward.describe())
    prompts = training_sources(data.train, policy.formatter, a.max_prompt_length)
    dev_sources, dev_refs = group_references(data.dev, a.eval_samples, a.seed)
    evaluator = dev_evaluator(policy.formatter, lexicon, reward, dev_sources, dev_refs,
                              a.max_new_tokens) if a.eval_samples else None
    return Parts(policy, reward, prompts, evaluator, lexicon)


def build_ppo(data_cfg, vocab_cfg, model_cfg, reward_cfg, args, callbacks=None, accelerator=None, critic=None):
    """A ``DetoxPPOTrainer`` ready to ``train()``, from ``rl.ppo.parse``'s five configs. ``callbacks``:
    ``rl.callbacks.PPOCallback`` instances; ``critic``: an ``rl.critics.Critic`` in place of the configured one.
    The trainer keeps its configs (``trainer.configs``) for ``save_ppo_run``."""
    from detoxrl.errors import UserError
    from rl.trainer import DetoxPPOTrainer

    if args.algorithm != "ppo":
        raise UserError(f"build_ppo builds algorithm ppo; algorithm {args.algorithm} runs TRL's trainer "
                        "(rl.trl_algos.build_trl_trainer)")
    configs = PPOConfigs(data_cfg, vocab_cfg, model_cfg, reward_cfg, args)
    p = build_parts(configs)
    trainer = DetoxPPOTrainer(args, p.policy, p.reward, p.prompts, accelerator=accelerator, evaluator=p.evaluator,
                              lexicon=p.lexicon, callbacks=callbacks, critic=critic)
    trainer.configs = configs
    return trainer


def save_ppo_run(trainer, summary: dict, minutes: float | None = None) -> None:
    """Write what ``trainer`` trained into its ``output_dir``: adapter/, merged/, value_head.safetensors,
    detoxrl.json, README.md (with ``summary``'s before/after dev metrics) and resolved_config.yaml. Collective:
    every process calls it (ZeRO-3/FSDP gather the weights); the main process writes."""
    from detoxrl.distributed import gathered
    from rl.save import full_module, save_ppo_result

    configs, acc = trainer.configs, trainer.accelerator
    minutes = summary.get("train_minutes", 0.0) if minutes is None else minutes
    module = full_module(trainer, configs.model)  # FSDP2: a CPU copy holding the gathered weights
    with gathered(trainer.model, acc):  # ZeRO-3: the full weights on every rank
        if acc.is_main_process:
            save_ppo_result(trainer, configs.model, summary, {
                "algorithm": "PPO", "family": trainer.policy.family, "finetuning": configs.model.finetuning,
                "policy_adapter": configs.args.policy_adapter, "reward": trainer.reward.describe(),
                "steps": summary["steps"], "batch": configs.args.rollout_batch_size * acc.num_processes,
                "minutes": minutes}, module)
    if acc.is_main_process:
        configs.save(os.path.join(configs.args.output_dir, "resolved_config.yaml"))
        log.info("saved to %s: adapter/, merged/, value_head.safetensors, detoxrl.json, README.md (%.1f min)",
                 configs.args.output_dir, minutes)
    acc.wait_for_everyone()
