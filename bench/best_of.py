"""Best-of-n benchmark: greedy vs best-of-4 vs best-of-8 decoding of one model, scored by detox-eval's
independent judges, with seconds per sentence (generation, and generation + reranking).

    python bench/best_of.py                                   # smoke: 16 dev sentences, outputs/rl/default
    python bench/best_of.py --n 0 --model outputs/rl/default  # the whole dev split (what docs/best-of-n.md reports)
    python bench/best_of.py --best_of 2 4 8 16 --n 200

One ``detox-eval`` call scores ``greedy=<model>`` and ``best<N>=<model>@best_of=N`` for each N, on the same
seeded dev sample (``--n``; 0: all 591 sentences), with the judges and the fixed sampling settings of
``--config`` (default configs/eval/default.yaml: temperature 0.7, top_p 1, seed 42; the reranker is the
composite reward of its rerank_config). Extra flags go to detox-eval (e.g. ``--temperature 1.0``). Prints
J, STA, SIM, FL, copy, and seconds per sentence split into sampling and reranking. Timings are wall clock:
run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # bench/rewards.py != rewards/
sys.path.insert(0, os.path.dirname(_HERE))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other flags go to detox-eval.")
    p.add_argument("--model", default="outputs/rl/default", help="Model to decode (default: outputs/rl/default).")
    p.add_argument("--best_of", type=int, nargs="+", default=[4, 8], help="Sample counts to compare with greedy.")
    p.add_argument("--n", type=int, default=16, help="Dev sentences (seeded sample; 0: the whole dev split).")
    p.add_argument("--config", default="configs/eval/default.yaml", help="detox-eval config (judges, sampling).")
    p.add_argument("--output_dir", default=None, help="Where eval.json goes (default: a temp folder).")
    a, extra = p.parse_known_args(argv)
    if any(n < 2 for n in a.best_of):
        p.error("--best_of values must be >= 2")
    from evaluation.evaluate import main as detox_eval

    out = a.output_dir or tempfile.mkdtemp(prefix="bench-best-of-")
    systems = [f"greedy={a.model}"] + [f"best{n}={a.model}@best_of={n}" for n in a.best_of]
    args = ["--config", a.config, "--systems", *systems, "--output_dir", out, *extra]
    args += ["--max_eval_sentences", str(a.n)] if a.n else []
    code = detox_eval(args)
    if code:
        return code
    with open(os.path.join(out, "eval.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    n = report["test_set"]["sentences"]
    print(f"\nbest-of-n on {n} dev sentences ({report['test_set']['source']}), model {a.model}")
    print("| decoding | J | STA | SIM | FL | copy | s/sentence | sampling s/sent | reranking s/sent |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    greedy_j = report["systems"]["greedy"]["scores"]["J"]
    for name, row in report["systems"].items():
        s = row["scores"]
        total = (row.get("generation_seconds") or 0.0) / n
        sampling = row.get("sampling_seconds", row.get("generation_seconds") or 0.0) / n
        rerank = row.get("rerank_seconds", 0.0) / n
        label = "greedy" if name == "greedy" else f"best of {row['best_of']}"
        delta = "" if name == "greedy" else f" ({s['J'] - greedy_j:+.3f})"
        print(f"| {label} | {s['J']:.3f}{delta} | {s['STA']:.3f} | {s['SIM']:.3f} | {s['FL']:.3f} | "
              f"{s['copy']:.1%} | {total:.2f} | {sampling:.2f} | {rerank:.2f} |")
    print(f"\nreport: {os.path.join(out, 'eval.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
