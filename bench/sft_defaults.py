"""The CPU defaults of the embedded policy, compared at equal wall minutes with detox-eval's independent judges:
the SFT loss (ce, toxic_mask with each strategy, toxic_penalty), LoRA vs full fine-tuning, and more pairs
vs more epochs: every training pair (``*_all_pairs``), the default 4,000, or 500 (``*_500_pairs``, several passes
even in an 8-minute budget, where the default sees about 1,100 pairs once).

    python bench/sft_defaults.py                                    # smoke: 2 variants, 0.5 min each, 16 sentences
    python bench/sft_defaults.py --minutes 24 --seeds 42 43 --n 0 --variants all   # the comparison of issue #19

Every variant is ``sft/train.py --config configs/sft/default.yaml`` plus its overrides (``VARIANTS``). Equal wall
minutes: each variant first trains ``--calibration_steps`` steps to measure its seconds per step, then trains
``floor(minutes x 60 / seconds per step)`` steps (the cosine schedule spans them), with the dev guard off (the
final eval_loss stays). One ``detox-eval`` call then scores delete and every run on the same seeded dev sample
(``--n``; 0: all 591) with the judges of ``--eval_config`` (default configs/eval/default.yaml), greedy. The table
gives J per seed, the mean, and the difference to the current default (``lora_toxic_context``); a variant that
beats it by >= 0.02 J on every seed is flagged. Full fine-tuning uses learning rate 5e-5 (the usual rate for
full fine-tuning a model of this size; LoRA keeps the config's 3e-4): set by hand, not tuned. Run on an
otherwise idle machine: the budgets are wall time.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # bench/rewards.py != rewards/
sys.path.insert(0, os.path.dirname(_HERE))

DEFAULT = "lora_toxic_context"
FULL = ["--finetuning", "full", "--learning_rate", "5e-5"]
ALL_PAIRS = ["--max_train_pairs", "1000000"]  # more than ParaDetox has: every training pair
VARIANTS = {
    "lora_toxic_context": [],  # configs/sft/default.yaml as it is
    "lora_ce": ["--loss", "ce"],
    "lora_toxic_only": ["--mask_strategy", "toxic_only"],
    "lora_inverse_toxic": ["--mask_strategy", "inverse_toxic"],
    "lora_toxic_penalty": ["--loss", "toxic_penalty"],
    "full_toxic_context": FULL,
    "full_ce": [*FULL, "--loss", "ce"],
    "lora_toxic_context_all_pairs": ALL_PAIRS,
    "lora_ce_all_pairs": ["--loss", "ce", *ALL_PAIRS],
    "lora_toxic_context_500_pairs": ["--max_train_pairs", "500"],
}
SMOKE = ["lora_toxic_context", "lora_ce"]
QUIET = ["--report_to", "none", "--disable_tqdm", "true", "--eval_strategy", "no", "--guard_samples", "0"]


def train(name: str, seed: int, steps: int, out: str, extra: list[str]) -> dict:
    from sft.train import run

    start = time.perf_counter()
    summary = run(["--config", "configs/sft/default.yaml", *VARIANTS[name], *QUIET, "--max_steps", str(steps),
                   "--seed", str(seed), "--output_dir", out, "--save_steps", str(max(steps, 1)), *extra])
    return {"minutes": summary["train_minutes"], "wall_minutes": (time.perf_counter() - start) / 60}


def seconds_per_step(name: str, steps: int, root: str, extra: list[str]) -> float:
    result = train(name, 0, steps, os.path.join(root, "calibration", name), extra)
    return result["minutes"] * 60 / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other flags go to every SFT run.")
    p.add_argument("--minutes", type=float, default=0.5, help="Training wall minutes per run (default: smoke 0.5).")
    p.add_argument("--variants", nargs="+", default=SMOKE, help=f"Names, or 'all': {', '.join(VARIANTS)}.")
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--calibration_steps", type=int, default=6)
    p.add_argument("--n", type=int, default=16, help="Dev sentences scored (seeded sample; 0: all).")
    p.add_argument("--eval_config", default="configs/eval/default.yaml")
    p.add_argument("--output_dir", default=None, help="Where the runs and eval/ go (default: a temp folder).")
    a, extra = p.parse_known_args(argv)
    names = list(VARIANTS) if a.variants == ["all"] else a.variants
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    from detoxrl.log import setup_logging
    from evaluation.evaluate import main as detox_eval
    from evaluation.report import read_report

    setup_logging()
    root = a.output_dir or tempfile.mkdtemp(prefix="bench-sft-defaults-")
    runs: dict[str, dict] = {}
    for name in names:
        s_step = seconds_per_step(name, a.calibration_steps, root, extra)
        steps = max(1, math.floor(a.minutes * 60 / s_step))
        for seed in a.seeds:
            key = f"{name}-s{seed}"
            runs[key] = {"name": name, "seed": seed, "steps": steps, "s_per_step": s_step,
                         **train(name, seed, steps, os.path.join(root, key), extra)}
    eval_dir = os.path.join(root, "eval")
    args = ["--config", a.eval_config, "--systems", "delete", *[f"{k}={os.path.join(root, k)}" for k in runs],
            "--output_dir", eval_dir] + (["--max_eval_sentences", str(a.n)] if a.n else [])
    code = detox_eval(args)
    if code:
        return code
    report = read_report(eval_dir)
    scores = {k: report["systems"][k]["scores"] for k in runs}
    base = {seed: scores.get(f"{DEFAULT}-s{seed}", {}).get("J") for seed in a.seeds}
    print(f"\nSFT variants at {a.minutes:g} training minutes each; {report['test_set']['sentences']} dev sentences; "
          f"delete J {report['systems']['delete']['scores']['J']:.3f}")
    seeds = " | ".join(f"J seed {s}" for s in a.seeds)
    print(f"| variant | steps | s/step | {seeds} | mean J | vs {DEFAULT} | copy |")
    print("|---|---:|---:|" + "---:|" * len(a.seeds) + "---:|---:|---:|")
    winners = []
    for name in names:
        keys = [f"{name}-s{s}" for s in a.seeds]
        js = [scores[k]["J"] for k in keys]
        deltas = [j - base[s] for j, s in zip(js, a.seeds) if base[s] is not None]
        delta = f"{sum(deltas) / len(deltas):+.3f}" if deltas and name != DEFAULT else "-"
        if name != DEFAULT and deltas and len(deltas) == len(a.seeds) and min(deltas) >= 0.02:
            winners.append(name)
        copy = sum(scores[k]["copy"] for k in keys) / len(keys)
        r = runs[keys[0]]
        print(f"| {name} | {r['steps']} | {r['s_per_step']:.2f} | " + " | ".join(f"{j:.3f}" for j in js) +
              f" | {sum(js) / len(js):.3f} | {delta} | {copy:.1%} |")
    print(f"\nbeat {DEFAULT} by >= 0.02 J on every seed: {', '.join(winners) or 'none'}")
    print(f"runs and report under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
