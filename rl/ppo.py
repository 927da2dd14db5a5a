"""RL detox stage: ``accelerate launch rl/ppo.py --config configs/rl/default.yaml``.

Reads top to bottom: parse configs -> training sources and a dev sample -> toxic vocabulary ->
the policy from the SFT run (``rl/policy.py``) -> the composite reward -> ``algorithm``:
``ppo`` runs ``DetoxPPOTrainer`` (seq2seq and causal), ``grpo``/``rloo`` run TRL's trainers with the
same reward (``rl/trl_algos.py``, causal only) -> save adapter, merged model, value head, resolved
config, ``detoxrl.json`` and a model card with the before/after dev metrics. Also installed as
``detox-ppo``. ``algorithm: rft`` (in the YAML or as ``--algorithm rft``) hands the whole command line
over to ``rl/rft.py`` (rejection-sampling fine-tuning, its own options: configs/rl/rft.yaml).

Reward flags are flat (``--w_toxicity 2``); ``--reward.weights.toxicity 2`` and a nested
``reward: {weights: {toxicity: 2}}`` in the YAML mean the same. Runs as one process, under
``accelerate launch`` (configs in ``configs/accelerate/``), and as 2+ CPU processes with
``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 rl/ppo.py ...``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a file (accelerate launch rl/ppo.py): import the project, not sibling modules.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import logging
import time

from detoxrl.config import DetoxParser, config_value, prog_name, run_cli, save_resolved_config
from detoxrl.data import DataConfig, group_references, load_detox_data
from detoxrl.errors import UserError
from detoxrl.hub_push import claim_push, push_run
from detoxrl.log import setup_logging
from detoxrl.resume import resolve_resume
from detoxrl.vocab import VocabConfig, load_lexicon
from rewards.composite import CompositeReward, RewardConfig
from rl.config import DetoxPPOConfig, PPOModelConfig

log = logging.getLogger("detoxrl")
CONFIGS = [DataConfig, VocabConfig, PPOModelConfig, RewardConfig, DetoxPPOConfig]


def reward_alias(name: str) -> str:
    """``reward.weights.toxicity`` -> ``w_toxicity``; ``reward.form`` -> ``form``; other names unchanged."""
    parts = name.split(".")
    if parts[:2] == ["reward", "weights"] and len(parts) == 3:
        return f"w_{parts[2]}"
    if parts[0] == "reward" and len(parts) == 2:
        return parts[1]
    return name


def parse(args=None):
    return DetoxParser(CONFIGS, prog="rl/ppo.py", aliases=reward_alias).parse(args)


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

    ref = model_cfg.model_name_or_path or ""
    if resolve_path(ref):
        check_model_config(ref)  # a broken config.json fails before the data loads
        return
    if ref in ALIASES or looks_like_hub_id(ref):
        return
    raise UserError(f"{prog_name('rl/ppo.py')}: model_name_or_path: '{ref}' does not exist. The RL stage starts "
                    "from an SFT run: train it first with `accelerate launch sft/train.py` (or `detoxrl sft`), which "
                    "writes outputs/sft/default, or point --model_name_or_path at a run folder or hub id")


def wants_rft(args: list[str]) -> bool:
    """Whether a command line asks for ``algorithm: rft`` (flag, or the YAML of ``--config`` without a flag)."""
    for i, arg in enumerate(args):
        if arg == "--algorithm" and i + 1 < len(args):
            return args[i + 1] == "rft"
        if arg.startswith("--algorithm="):
            return arg.split("=", 1)[1] == "rft"
    if "--config" in args and args.index("--config") + 1 < len(args):
        return config_value(args[args.index("--config") + 1], "algorithm") == "rft"
    return False


def run(args=None, callbacks=None) -> dict:
    """The stage from a command line (``args``; default ``sys.argv``); ``callbacks``: ``rl.callbacks.PPOCallback``
    instances for ``algorithm: ppo``."""
    args = list(sys.argv[1:] if args is None else args)
    if wants_rft(args):
        from rl.rft import run as run_rft

        if callbacks:
            raise UserError("callbacks are hooks of algorithm ppo's trainer; algorithm rft has none")
        return run_rft(args)
    setup_logging()
    data_cfg, vocab_cfg, model_cfg, reward_cfg, ppo_args = parse(args)
    if callbacks and ppo_args.algorithm != "ppo":
        raise UserError(f"callbacks are hooks of algorithm ppo's trainer; algorithm {ppo_args.algorithm} runs TRL's, "
                        "which takes transformers' TrainerCallback")
    from transformers import set_seed

    set_seed(ppo_args.seed)  # before the adapter and value head are initialised
    resume = resolve_resume(ppo_args.resume_from_checkpoint, ppo_args.output_dir,
                            kind="ppo" if ppo_args.algorithm == "ppo" else "trl")
    push = claim_push(ppo_args)
    check_start_model(model_cfg)
    data = load_detox_data(data_cfg)
    lexicon = load_lexicon(vocab_cfg)

    from detoxrl.distributed import process_device
    from rl.policy import load_policy

    policy = load_policy(model_cfg, ppo_args.policy_adapter, ppo_args.critic)
    # the judges on this process's device (cuda:<local rank> on GPUs), not every rank's on GPU 0
    reward = CompositeReward(reward_cfg, vocab_cfg, device=process_device(ppo_args.use_cpu))
    log.info("reward: %s", reward.describe())
    prompts = training_sources(data.train, policy.formatter, ppo_args.max_prompt_length)
    dev_sources, dev_refs = group_references(data.dev, ppo_args.eval_samples, ppo_args.seed)

    from rl.dev_eval import dev_evaluator

    evaluator = dev_evaluator(policy.formatter, lexicon, reward, dev_sources, dev_refs,
                              ppo_args.max_new_tokens) if ppo_args.eval_samples else None
    start = time.perf_counter()
    if ppo_args.algorithm != "ppo":
        from rl.trl_algos import run_trl

        summary = run_trl(ppo_args, policy, reward, prompts, model_cfg, evaluator, resume)
        from accelerate import PartialState

        if PartialState().is_main_process:
            save_resolved_config(os.path.join(ppo_args.output_dir, "resolved_config.yaml"), data_cfg, vocab_cfg,
                                 model_cfg, reward_cfg, ppo_args)
        if push and PartialState().is_main_process:
            push_run(ppo_args.output_dir, ppo_args.hub_model_id, ppo_args.hub_private_repo, ppo_args.hub_token,
                     f"detoxrl {ppo_args.algorithm}")
        return summary

    from detoxrl.distributed import gathered
    from rl.save import full_module, save_ppo_result
    from rl.trainer import DetoxPPOTrainer

    trainer = DetoxPPOTrainer(ppo_args, policy, reward, prompts, evaluator=evaluator, lexicon=lexicon,
                              callbacks=callbacks)
    summary = trainer.train(resume_from=resume)
    minutes = (time.perf_counter() - start) / 60
    summary["train_minutes"] = round(minutes, 2)
    main_process, out = trainer.accelerator.is_main_process, ppo_args.output_dir
    module = full_module(trainer, model_cfg)  # FSDP2: a CPU copy holding the gathered weights
    with gathered(trainer.model, trainer.accelerator):  # ZeRO-3: the full weights on every rank
        if main_process:
            save_ppo_result(trainer, model_cfg, summary, {
                "algorithm": "PPO", "family": policy.family, "finetuning": model_cfg.finetuning,
                "policy_adapter": ppo_args.policy_adapter, "reward": reward.describe(), "steps": summary["steps"],
                "batch": ppo_args.rollout_batch_size * trainer.accelerator.num_processes, "minutes": minutes},
                module)
    if main_process:
        save_resolved_config(os.path.join(out, "resolved_config.yaml"), data_cfg, vocab_cfg, model_cfg, reward_cfg,
                             ppo_args)
        log.info("saved to %s: adapter/, merged/, value_head.safetensors, detoxrl.json, README.md (%.1f min)",
                 out, minutes)
        if push:
            push_run(out, ppo_args.hub_model_id, ppo_args.hub_private_repo, ppo_args.hub_token, "detoxrl ppo")
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # closes trackers (and the process group)
    return summary


def main(args=None) -> int:
    return run_cli(run, args)


if __name__ == "__main__":
    raise SystemExit(main())
