"""RL benchmark: samples/s of our PPO against TRL's GRPOTrainer on equal settings, each in its own process.

With ``--quality``, also the dev metrics of the SFT model against a PPO model under independent judges.

Equal settings on both sides: the same policy (the default SFT run, or ``--model``) with a fresh LoRA adapter
(r16, all linear layers, from ``configs/rl/value_head.yaml``: one response per prompt, the value head, one
minibatch), the same training prompts (chat template), the composite reward of that config, ``--batch``
completions per step, the same sampling temperature and ``max_new_tokens``, the same KL coefficient (so both
compute reference log-probs), one optimiser pass per step (``ppo_epochs 1`` = ``num_iterations 1``) and
``gradient_checkpointing=False``. Our per-row length cap (``max_new_tokens_ratio``) is off in the headline rows:
GRPO has none (``--cap R`` adds a row with it on).

Prompt structures. GRPO answers ``batch / generations`` prompts ``generations`` times each (``4 x 4``); our
PPO is measured both ways: ``16 x 1`` (distinct prompts, how PPO trains) and ``4 x 4`` (GRPO's structure).
``--grouped`` / ``--no-grouped`` keeps only one of ours.

Reported per side: seconds per step and samples/s (completions per step / mean step time over ``--steps``
steps after ``--warmup`` untimed ones), peak resident memory of its process (``ru_maxrss``, model loading
included); for ours also the seconds of each phase (generate, reward, reference, update) (and "other": the
step's time outside them) and the work counts it logs (prompt tokens prefilled, decode rows, tokens per scoring pass), which do not depend on the
machine's load.

    python bench/ppo.py                               # GRPO 4x4, ours 16x1 and 4x4: 2 warm-up + 5 timed steps
    python bench/ppo.py --no-grouped --cap 1.5        # ours 16x1 only, plus a row with the per-row cap
    python bench/ppo.py --quality outputs/rl/default  # + detox-eval of SFT vs that PPO run

Run it on an otherwise idle machine: two torch processes on 2 cores slow each other 3-8x. Extra flags
(e.g. ``--max_new_tokens 40``) go to both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def argv(model: str, batch: int, steps: int, extra: list[str]) -> list[str]:
    """``rl/ppo.py``'s command line for one side: configs/rl/value_head.yaml with the benchmark's settings."""
    return ["--config", os.path.join(ROOT, "configs/rl/value_head.yaml"), "--model_name_or_path", model,
            "--report_to", "none", "--rollout_batch_size", str(batch), "--max_steps", str(steps), "--ppo_epochs", "1",
            "--save_steps", str(10 * steps + 10), "--eval_samples", "0", "--sample_every", "0", "--disable_tqdm",
            "true", "--gradient_checkpointing", "false", "--output_dir", tempfile.mkdtemp(), *extra]


def bench_ppo(model, batch, warmup, steps, extra, group: int = 1) -> dict:
    """Our PPO through ``rl.build.build_ppo``; ``group > 1``: GRPO's prompt structure (``batch / group`` sources,
    each answered ``group`` times: ``samples_per_prompt``)."""
    from rl.build import build_ppo
    from rl.ppo import parse

    trainer = build_ppo(*parse(argv(model, batch, warmup + steps, ["--samples_per_prompt", str(group), *extra])))
    times, parts = [], {}
    for i in range(warmup + steps):
        stats = trainer.step()
        if i >= warmup:
            times.append(stats["time/step_s"])
            for k, v in stats.items():
                if k.startswith(("time/", "work/")) and k != "time/step_s":
                    parts[k] = parts.get(k, 0.0) + v
            parts["rollout/response_length"] = parts.get("rollout/response_length", 0.0) + stats["rollout/response_length"]
    total = sum(times)
    return {"sps": batch * steps / total, "step_s": total / steps, "parts": {k: v / steps for k, v in parts.items()}}


def bench_grpo(model, batch, generations, warmup, steps, extra) -> dict:
    from transformers import TrainerCallback

    from rl.build import PPOConfigs, build_parts
    from rl.ppo import parse
    from rl.trl_algos import build_trl_trainer

    configs = PPOConfigs(*parse(argv(model, batch, warmup + steps,
                                     ["--algorithm", "grpo", "--num_generations", str(generations), *extra])))
    p = build_parts(configs)
    trainer = build_trl_trainer(configs.args, p.policy, p.reward, p.prompts)
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
    return {"sps": batch * len(timed) / total, "step_s": total / len(timed), "parts": {}}


def side(spec: dict) -> dict:
    """One side of the benchmark, in this process (``--side``); adds the process's peak RSS in MB."""
    from detoxrl.log import setup_logging

    setup_logging()
    if spec["kind"] == "grpo":
        out = bench_grpo(spec["model"], spec["batch"], spec["group"], spec["warmup"], spec["steps"], spec["extra"])
    else:
        out = bench_ppo(spec["model"], spec["batch"], spec["warmup"], spec["steps"], spec["extra"], spec["group"])
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return out


def run_side(spec: dict) -> dict:
    """``side(spec)`` in a fresh Python process, so each side's memory and threads are its own."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--side", json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"bench/ppo.py: the {spec['label']} side failed (exit {proc.returncode}); its stderr is above")
    return json.loads(lines[-1])


def quality(ppo_dir: str, sft_dir: str) -> None:
    from evaluation.evaluate import main as detox_eval

    out = os.path.join(ppo_dir, "eval_independent")
    code = detox_eval(["--config", "configs/eval/default.yaml", "--systems", "duplicate", "delete",
                       f"sft={sft_dir}", f"ppo={ppo_dir}", "--output_dir", out])
    if code == 0:
        print(open(os.path.join(out, "eval.md"), encoding="utf-8").read())


def report(a, rows: list[tuple[dict, dict]]) -> str:
    grpo = next(r for s, r in rows if s["kind"] == "grpo")
    lines = [f"RL speed: {a.batch} completions per step, {a.steps} timed steps after {a.warmup} warm-up, each side "
             f"in its own process (settings: bench/ppo.py docstring)",
             "| trainer | prompts x completions | s/step | samples/s | vs TRL GRPO | peak RSS (MB) |",
             "|---|---|---:|---:|---:|---:|"]
    for s, r in rows:
        structure = f"{a.batch // s['group']} x {s['group']}"
        lines.append(f"| {s['label']} | {structure} | {r['step_s']:.2f} | {r['sps']:.2f} | "
                     f"{r['sps'] / grpo['sps']:.2f}x | {r['rss_mb']:.0f} |")
    for s, r in rows:
        if s["kind"] == "ppo":
            p = r["parts"]
            phases = ", ".join(f"{k.removeprefix('time/').removesuffix('_s')} {v:.2f}" for k, v in p.items()
                               if k.startswith("time/"))
            phases += f", other {r['step_s'] - sum(v for k, v in p.items() if k.startswith('time/')):.2f}"
            work = ", ".join(f"{k.removeprefix('work/')} {v:.0f}" for k, v in p.items() if k.startswith("work/"))
            lines.append(f"{s['label']} ({a.batch // s['group']} x {s['group']}), per step: seconds: {phases}; work: "
                         f"{work}; mean response {p['rollout/response_length']:.1f} tokens")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="outputs/sft/default", help="SFT run (default: outputs/sft/default).")
    p.add_argument("--batch", type=int, default=16, help="Completions per step, both sides.")
    p.add_argument("--generations", type=int, default=4, help="GRPO completions per prompt (and ours in 4 x 4).")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--grouped", action=argparse.BooleanOptionalAction, default=None,
                   help="Only GRPO's structure for ours (--grouped) or only distinct prompts (--no-grouped); "
                        "default: both.")
    p.add_argument("--cap", type=float, metavar="RATIO",
                   help="Add a row: ours on distinct prompts with max_new_tokens_ratio RATIO (not equal settings).")
    p.add_argument("--quality", metavar="PPO_RUN", help="Also run detox-eval of --model vs this PPO run.")
    p.add_argument("--skip_speed", action="store_true")
    p.add_argument("--side", help=argparse.SUPPRESS)
    a, extra = p.parse_known_args()
    if a.side:
        print(json.dumps(side(json.loads(a.side))))
        return
    if not a.skip_speed:
        common = dict(model=os.path.abspath(a.model) if os.path.exists(a.model) else a.model, batch=a.batch,
                      warmup=a.warmup, steps=a.steps, extra=extra)
        specs = [dict(kind="grpo", label="TRL GRPOTrainer", group=a.generations, **common)]
        if a.grouped in (None, False):
            specs.append(dict(kind="ppo", label="detoxrl PPO", group=1, **common))
        if a.grouped in (None, True):
            specs.append(dict(kind="ppo", label="detoxrl PPO", group=a.generations, **common))
        if a.cap is not None:
            specs.append(dict(kind="ppo", label=f"detoxrl PPO, cap {a.cap:g}", group=1,
                              **{**common, "extra": [*extra, "--max_new_tokens_ratio", str(a.cap)]}))
        rows = []
        for spec in specs:
            print(f"running {spec['label']} ({a.batch // spec['group']} x {spec['group']}) ...", file=sys.stderr)
            rows.append((spec, run_side(spec)))
        print("\n" + report(a, rows))
    if a.quality:
        quality(a.quality, a.model)


if __name__ == "__main__":
    main()
