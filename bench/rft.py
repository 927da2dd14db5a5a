"""RFT rounds vs PPO steps at equal wall minutes, from the same SFT model, scored by detox-eval's
independent judges.

    python bench/rft.py                      # smoke: 1 RFT round of 16 sources x 2, PPO for as long, 16 dev sentences
    python bench/rft.py --rft_config configs/rl/rft.yaml --smoke false --n 0   # the real comparison (~2 h on 2 cores)

1. RFT: ``rl/rft.py --config <rft_config>`` from ``--model`` into ``<output_dir>/rft`` (``--smoke`` shrinks it
   to one round of 16 sources x 2 samples); its wall minutes M are measured (command start to finish, model
   and reward loading included; its own before/after dev decoding is off).
2. PPO: ``configs/rl/default.yaml`` from the same model into ``<output_dir>/ppo``, stepping until M wall minutes
   have passed since its own start (loading included), then saved as ``rl/ppo.py`` saves; the steps it got
   are reported. ``--ppo_minutes`` sets another budget.
3. ``detox-eval`` (``--eval_config``, default configs/eval/default.yaml) scores delete, the SFT model, RFT and
   PPO on the same seeded dev sample (``--n``; 0: all 591 sentences), greedy.

Extra flags after ``--`` go to both training runs' shared reward (e.g. ``-- --w_fluency 0``). Run on an
otherwise idle machine: the comparison is by wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # bench/rewards.py != rewards/
sys.path.insert(0, os.path.dirname(_HERE))

SMOKE_RFT = ["--rounds", "1", "--sources_per_round", "16", "--samples_per_source", "2", "--max_new_tokens", "24"]


def run_rft(model: str, config: str, out: str, smoke: bool, extra: list[str]) -> float:
    """Run RFT; returns its wall minutes."""
    from rl.rft import run

    start = time.perf_counter()
    run(["--config", config, "--model_name_or_path", model, "--output_dir", out, "--eval_samples", "0",
         "--report_to", "none", *(SMOKE_RFT if smoke else []), *extra])
    return (time.perf_counter() - start) / 60


def run_ppo_for(model: str, minutes: float, out: str, extra: list[str]) -> tuple[int, float]:
    """PPO (configs/rl/default.yaml) stepping until ``minutes`` of wall time since this call; returns
    (steps, minutes)."""
    from rl.build import build_ppo, save_ppo_run
    from rl.ppo import parse

    start = time.perf_counter()
    trainer = build_ppo(*parse([
        "--config", "configs/rl/default.yaml", "--model_name_or_path", model, "--output_dir", out,
        "--max_steps", "100000", "--save_steps", "100000", "--eval_samples", "0", "--sample_every", "0",
        "--report_to", "none", "--disable_tqdm", "true", *extra]))
    while (time.perf_counter() - start) / 60 < minutes:
        stats = trainer.step()
        print(f"ppo step {trainer.state.step}: {(time.perf_counter() - start) / 60:.1f} of {minutes:.1f} min, "
              f"score {stats['reward/score']:.3f}, kl {stats['ppo/kl']:.2f}", flush=True)
    used = (time.perf_counter() - start) / 60
    save_ppo_run(trainer, {"before": {}, "after": {}, "steps": trainer.state.step, "train_minutes": round(used, 2)},
                 used)
    return trainer.state.step, used


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Flags after -- go to both training runs (reward fields, e.g. --w_fluency 0).")
    p.add_argument("--model", default="outputs/sft/default", help="The SFT run both start from.")
    p.add_argument("--rft_config", default="configs/rl/rft.yaml")
    p.add_argument("--smoke", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                   help="true (default): one tiny RFT round; false: the RFT config as it is.")
    p.add_argument("--ppo_minutes", type=float, default=None, help="PPO wall budget (default: RFT's minutes).")
    p.add_argument("--n", type=int, default=16, help="Dev sentences scored (seeded sample; 0: all).")
    p.add_argument("--eval_config", default="configs/eval/default.yaml")
    p.add_argument("--output_dir", default=None, help="Where rft/, ppo/ and eval/ go (default: a temp folder).")
    p.add_argument("--skip", nargs="*", default=[], choices=["rft", "ppo"], help="Reuse that run from output_dir.")
    args = list(sys.argv[1:] if argv is None else argv)
    extra = args[args.index("--") + 1:] if "--" in args else []
    a = p.parse_args(args[: args.index("--")] if "--" in args else args)
    from detoxrl.log import setup_logging
    from detoxrl.runcard import read_card
    from evaluation.evaluate import main as detox_eval
    from evaluation.report import read_report

    setup_logging()
    root = a.output_dir or tempfile.mkdtemp(prefix="bench-rft-")
    rft_dir, ppo_dir, eval_dir = (os.path.join(root, d) for d in ("rft", "ppo", "eval"))
    rft_minutes = None
    if "rft" not in a.skip:
        rft_minutes = run_rft(a.model, a.rft_config, rft_dir, a.smoke, extra)
    else:
        rft_minutes = read_card(rft_dir)["metrics"]["train_minutes"]
    budget = a.ppo_minutes if a.ppo_minutes is not None else rft_minutes
    if "ppo" not in a.skip:
        steps, ppo_minutes = run_ppo_for(a.model, budget, ppo_dir, extra)
    else:
        metrics = read_card(ppo_dir)["metrics"]
        steps, ppo_minutes = metrics["steps"], metrics["train_minutes"]
    eval_args = ["--config", a.eval_config, "--systems", "delete", f"sft={a.model}", f"rft={rft_dir}",
                 f"ppo={ppo_dir}", "--output_dir", eval_dir] + (["--max_eval_sentences", str(a.n)] if a.n else [])
    code = detox_eval(eval_args)
    if code:
        return code
    report = read_report(eval_dir)
    rounds = read_card(rft_dir)["metrics"]["log"]
    print(f"\nRFT vs PPO at equal wall minutes, from {a.model}; {report['test_set']['sentences']} dev sentences")
    print("| system | wall min | what | J | STA | SIM | FL | copy |\n|---|---:|---|---:|---:|---:|---:|---:|")
    pairs = sum(r["pairs"] for r in rounds)
    what = {"delete": "baseline", "sft": "start", "rft": f"{len(rounds)} rounds, {pairs} pairs",
            "ppo": f"{steps} steps"}
    minutes = {"rft": rft_minutes, "ppo": ppo_minutes}
    for name, row in report["systems"].items():
        s = row["scores"]
        wall = f"{minutes[name]:.1f}" if name in minutes else "-"
        print(f"| {name} | {wall} | {what[name]} | {s['J']:.3f} | {s['STA']:.3f} | {s['SIM']:.3f} | {s['FL']:.3f} | "
              f"{s['copy']:.1%} |")
    print(f"\nruns and report under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
