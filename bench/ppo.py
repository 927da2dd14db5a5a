"""RL benchmark: samples/s of our PPO against TRL's ``GRPOTrainer``, side by side in one run, and
(``--quality``) the dev metrics of the SFT model against the PPO model under independent judges.

Speed: both sides start from the same policy (the default SFT run, or ``--model``) with a fresh
LoRA adapter (r16, all linear layers), the same training prompts (chat template), the composite
reward of ``configs/rl/default.yaml``, the same completions per step (``--batch``), sampling
temperature, ``max_new_tokens``, KL coefficient (so both compute reference log-probs), one
optimiser pass per step, and ``gradient_checkpointing=False``. GRPO samples ``--generations``
completions per prompt; so does PPO in the benchmark (``--no-grouped``: one per prompt, as in
training), so the longest response of a batch, which sets the generation time, comes from the same
kind of batch on both sides. Samples/s = completions per step / wall time of a step,
after ``--warmup`` untimed steps; our PPO also prints where its step time goes.

    python bench/ppo.py                               # speed: 2 warm-up + 5 timed steps each
    python bench/ppo.py --quality outputs/rl/default  # + detox-eval of SFT vs that PPO run

Run it on an otherwise idle machine: two torch processes on 2 cores slow each other 3-8x.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detoxrl.log import setup_logging  # noqa: E402
from rl.ppo import parse, training_sources  # noqa: E402


def setup(model: str, batch: int, steps: int, extra: list[str]):
    from detoxrl.data import load_detox_data
    from rewards.composite import CompositeReward
    from rl.policy import load_policy
    from transformers import set_seed

    data_cfg, vocab_cfg, model_cfg, reward_cfg, args = parse([
        "--config", "configs/rl/default.yaml", "--model_name_or_path", model, "--report_to", "none",
        "--rollout_batch_size", str(batch), "--max_steps", str(steps), "--ppo_epochs", "1", "--save_steps", "0",
        "--eval_samples", "0", "--sample_every", "0", "--disable_tqdm", "true", "--output_dir", tempfile.mkdtemp(),
        *extra])
    set_seed(args.seed)
    policy = load_policy(model_cfg)
    prompts = training_sources(load_detox_data(data_cfg).train, policy.formatter, args.max_prompt_length)
    return args, policy, CompositeReward(reward_cfg, vocab_cfg), prompts, model_cfg


def bench_ppo(model, batch, warmup, steps, extra, group: int = 1) -> dict:
    from rl.trainer import DetoxPPOTrainer

    args, policy, reward, prompts, _ = setup(model, batch, warmup + steps, extra)
    trainer = DetoxPPOTrainer(args, policy, reward, prompts)
    if group > 1:  # GRPO's prompt structure: batch/group prompts, each answered group times
        draw = trainer.sample_sources
        trainer.sample_sources = lambda: [s for s in draw()[: batch // group] for _ in range(group)]
    times, parts = [], {}
    for i in range(warmup + steps):
        stats = trainer.step()
        if i >= warmup:
            times.append(stats["time/step_s"])
            for k, v in stats.items():
                if k.startswith("time/") and k != "time/step_s":
                    parts[k] = parts.get(k, 0.0) + v
    total = sum(times)
    return {"sps": batch * steps / total, "step_s": total / steps,
            "parts": {k.removeprefix("time/").removesuffix("_s"): v / steps for k, v in parts.items()}}


def bench_grpo(model, batch, generations, warmup, steps, extra) -> dict:
    from transformers import TrainerCallback

    from rl.trl_algos import build_trl_trainer

    args, policy, reward, prompts, _ = setup(model, batch, warmup + steps,
                                             ["--algorithm", "grpo", "--num_generations", str(generations), *extra])
    trainer = build_trl_trainer(args, policy, reward, prompts)
    stamps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stamps.append(("begin", time.perf_counter()))

        def on_step_end(self, *a, **k):
            stamps.append(("end", time.perf_counter()))

    trainer.add_callback(Clock())
    trainer.train()
    # TRL generates inside the step (steps_per_generation = gradient_accumulation_steps = 1), so each
    # begin->end interval holds generation, reward, reference and the update.
    begins = [t for k, t in stamps if k == "begin"]
    ends = [t for k, t in stamps if k == "end"]
    timed = [e - b for b, e in zip(begins, ends)][warmup:]
    total = sum(timed)
    return {"sps": batch * len(timed) / total, "step_s": total / len(timed)}


def quality(ppo_dir: str, sft_dir: str) -> None:
    from evaluation.evaluate import main as detox_eval

    out = os.path.join(ppo_dir, "eval_independent")
    code = detox_eval(["--config", "configs/eval/default.yaml", "--systems", "duplicate", "delete",
                       f"sft={sft_dir}", f"ppo={ppo_dir}", "--output_dir", out])
    if code == 0:
        print(open(os.path.join(out, "eval.md"), encoding="utf-8").read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="outputs/sft/default", help="SFT run (default: outputs/sft/default).")
    p.add_argument("--batch", type=int, default=16, help="Completions per step, both sides.")
    p.add_argument("--generations", type=int, default=4, help="GRPO completions per prompt.")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--quality", metavar="PPO_RUN", help="Also run detox-eval of --model vs this PPO run.")
    p.add_argument("--skip_speed", action="store_true")
    p.add_argument("--grouped", action=argparse.BooleanOptionalAction, default=True,
                   help="Give PPO GRPO's prompt structure (batch/generations prompts, each answered generations "
                        "times), so both sides generate for the same kind of batch (default: on).")
    a, extra = p.parse_known_args()
    setup_logging()
    if not a.skip_speed:
        grpo = bench_grpo(a.model, a.batch, a.generations, a.warmup, a.steps, extra)
        ours = bench_ppo(a.model, a.batch, a.warmup, a.steps, extra, a.generations if a.grouped else 1)
        print(f"\nRL speed: {a.batch} completions per step, {a.steps} timed steps after {a.warmup} warm-up")
        print("| trainer | s/step | samples/s | vs TRL GRPO |\n|---|---:|---:|---:|")
        print(f"| TRL GRPOTrainer | {grpo['step_s']:.2f} | {grpo['sps']:.2f} | 1.00x |")
        print(f"| detoxrl PPO | {ours['step_s']:.2f} | {ours['sps']:.2f} | {ours['sps'] / grpo['sps']:.2f}x |")
        print("PPO step breakdown (s): " + ", ".join(f"{k} {v:.2f}" for k, v in ours["parts"].items()))
    if a.quality:
        quality(a.quality, a.model)


if __name__ == "__main__":
    main()
