"""RL detox stage: ``accelerate launch rl/ppo.py --config configs/rl/default.yaml``.

Reads top to bottom: parse configs (``parse``; from Python ``parser().parse_mapping(values, yaml)``) ->
``run_configs``: the data, toxic vocabulary, policy from the SFT run, composite reward and dev sample
(``rl/build.py``) -> ``algorithm``: ``ppo`` runs ``DetoxPPOTrainer`` (``build_ppo``; seq2seq and causal),
``grpo``/``rloo`` run TRL's trainers with the same reward (``rl/trl_algos.py``, causal only) -> save adapter,
merged model, value head, resolved config, ``detoxrl.json`` and a model card with the before/after dev metrics
(``save_ppo_run``). Also installed as
``detox-ppo``. ``algorithm: rft`` (in the YAML or as ``--algorithm rft``) hands the whole command line
over to ``rl/rft.py`` (rejection-sampling fine-tuning, its own options: configs/rl/rft.yaml).

Reward flags are flat (``--w_toxicity 2``); ``--reward.weights.toxicity 2`` and a nested
``reward: {weights: {toxicity: 2}}`` in the YAML mean the same. The critic's settings are one section the same
way: ``critic: {features: lexicon, replay_steps: 8}`` = ``--critic.features lexicon`` = ``--value_features lexicon``
(``rl/critics.py``). Runs as one process, under
``accelerate launch`` (configs in ``configs/accelerate/``), and as 2+ CPU processes with
``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 rl/ppo.py ...``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a file (accelerate launch rl/ppo.py): import the project, not sibling modules.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import time

from detoxrl.config import DetoxParser, config_value, run_cli
from detoxrl.data import DataConfig
from detoxrl.errors import UserError
from detoxrl.hub_push import claim_push, push_run
from detoxrl.log import setup_logging
from detoxrl.resume import resolve_resume
from detoxrl.vocab import VocabConfig
from rewards.composite import RewardConfig
from rl.build import PPOConfigs, build_ppo, save_ppo_run
from rl.config import DetoxPPOConfig, PPOModelConfig, reward_alias

CONFIGS = [DataConfig, VocabConfig, PPOModelConfig, RewardConfig, DetoxPPOConfig]


def parser() -> DetoxParser:
    """The stage's parser: ``parser().parse(argv)`` for a command line, ``parser().parse_mapping(values, yaml)`` from
    Python (dotted reward and critic names included)."""
    return DetoxParser(CONFIGS, prog="rl/ppo.py", aliases=reward_alias, sections=("critic",))


def parse(args=None):
    return parser().parse(args)


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
    return run_configs(*parse(args), callbacks=callbacks)


def run_configs(data_cfg: DataConfig, vocab_cfg: VocabConfig, model_cfg: PPOModelConfig, reward_cfg: RewardConfig,
                args: DetoxPPOConfig, callbacks=None) -> dict:
    """The stage from its parsed configs (``parse``'s five, in order): train, save, push; returns the summary."""
    configs = PPOConfigs(data_cfg, vocab_cfg, model_cfg, reward_cfg, args)
    a = configs.args
    if callbacks and a.algorithm != "ppo":
        raise UserError(f"callbacks are hooks of algorithm ppo's trainer; algorithm {a.algorithm} runs TRL's, "
                        "which takes transformers' TrainerCallback")
    resume = resolve_resume(a.resume_from_checkpoint, a.output_dir, kind="ppo" if a.algorithm == "ppo" else "trl")
    push = claim_push(a)
    if a.algorithm != "ppo":
        from accelerate import PartialState

        from rl.build import build_parts
        from rl.trl_algos import run_trl

        p = build_parts(configs)
        summary = run_trl(a, p.policy, p.reward, p.prompts, configs.model, p.evaluator, resume)
        main_process = PartialState().is_main_process
    else:
        trainer = build_ppo(data_cfg, vocab_cfg, model_cfg, reward_cfg, args, callbacks=callbacks)
        start = time.perf_counter()  # training time: the build (loading) is not in it
        summary = trainer.train(resume_from=resume)
        summary["train_minutes"] = round((time.perf_counter() - start) / 60, 2)
        save_ppo_run(trainer, summary, (time.perf_counter() - start) / 60)
        main_process = trainer.accelerator.is_main_process
    if main_process and a.algorithm != "ppo":
        configs.save(os.path.join(a.output_dir, "resolved_config.yaml"))
    if push and main_process:
        push_run(a.output_dir, a.hub_model_id, a.hub_private_repo, a.hub_token, f"detoxrl {a.algorithm}")
    if a.algorithm == "ppo":
        trainer.accelerator.wait_for_everyone()
        trainer.accelerator.end_training()  # closes trackers (and the process group)
    return summary


def main(args=None) -> int:
    return run_cli(run, args)


if __name__ == "__main__":
    raise SystemExit(main())
