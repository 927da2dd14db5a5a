"""A simulated review loop: does a reviewer's hour make the model better on inputs no reviewer saw?

    python bench/feedback_loop.py --model outputs/sft/default --methods sft kto dpo orpo sft+dpo \\
        --round 100 --max_reviews 400 --seeds 42 43 --work outputs/bench/feedback_loop
    python bench/feedback_loop.py --model smollm2 --smoke        # minutes: 2 rounds of 4 reviews, 8 dev sentences

For each seed and method, from ``--model`` (the model the reviews start from):

1. **Review pool:** ParaDetox training sources the start run never trained on (``rl.rft.sft_used_groups``: its
   ``resolved_config.yaml`` names its data), shuffled by the seed, each with its human rewrites.
2. **A round:** the current model rewrites the next ``--round`` sources (greedy, its card's decoding). A simulated
   reviewer scores each rewrite with the independent judges of ``--eval_config`` (STA x SIM x ChrF against the
   human rewrites, as detox-eval's J does per sentence): at least ``--threshold`` is ``accept``, else ``reject``
   with the first human rewrite as the correction. The records go into the run's own store, stamped with the
   current model's version.
3. **Training:** ``detoxrl feedback train`` (``--feedback_config`` with ``--methods``' settings: ``sft`` = the SFT
   step alone; ``kto`` / ``dpo`` / ``orpo`` = that verdict step alone; ``sft+dpo`` etc. = both) from the START
   model on every record so far, so each point of the curve is "this many reviews", not a chain of retrainings.
   The trained model is the current model of the next round (its rewrites are what the next reviews judge).
4. **J:** ``detox-eval`` of the trained model on the dev split (``--dev_n`` sentences; 0: the whole split) with
   the independent judges. The start model is scored once per run (reviews 0).

Rows (``seed, method, reviews, accepted, J, STA, SIM, ChrF, train_min``) are appended to ``<work>/rows.jsonl``
(a re-run skips the rows it has), printed as a table, and plotted as J against reviews per method
(``<work>/j_vs_reviews.png``). Figures are printed, never asserted. Run alone: two torch jobs on 2 cores slow each
other several times over.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

STEPS = {"sft": {"sft": True, "verdicts": "none"}, "kto": {"sft": False, "verdicts": "kto"},
         "dpo": {"sft": False, "verdicts": "dpo"}, "orpo": {"sft": False, "verdicts": "orpo"}}
SMOKE = {"sft_max_steps": 2, "kto_max_steps": 2, "pref_max_steps": 2, "kto_batch_size": 2, "pref_batch_size": 2,
         "sft_batch_size": 2, "replay_pairs": 4, "feedback_repeat": 1, "min_verdicts": 1,
         "sft_overrides": ["guard_samples=0", "eval_max_pairs=4"]}


def method_values(method: str) -> dict:
    """``sft+dpo`` -> the SFT step and DPO; ``kto`` -> KTO alone."""
    parts = method.split("+")
    bad = [p for p in parts if p not in STEPS]
    if bad or not parts:
        raise SystemExit(f"bench/feedback_loop.py: method '{method}': parts must be {' | '.join(STEPS)}")
    verdicts = [STEPS[p]["verdicts"] for p in parts if p != "sft"]
    if len(verdicts) > 1:
        raise SystemExit(f"bench/feedback_loop.py: method '{method}' names two verdict steps")
    return {"sft": "sft" in parts, "verdicts": verdicts[0] if verdicts else "none"}


def review_pool(eval_config: str, model: str, seed: int) -> list:
    from detoxrl.data import load_detox_data
    from evaluation.evaluate import parser
    from rl.rft import sft_used_groups
    from rl.rft_select import source_pool

    data_cfg = parser().parse_mapping({"systems": ["delete"]}, eval_config)[2]
    used = sft_used_groups(model) if os.path.isdir(model) else None
    return [s for s in source_pool(load_detox_data(data_cfg).train, used, seed) if not s.seen_by_sft]


def dev_j(model: str, name: str, a, out: str) -> dict:
    from detoxrl.models.refs import resolve_model
    from evaluation.evaluate import parser, run_configs

    folder = model if os.path.isdir(model) else resolve_model(model).path  # an alias (smollm2) as its folder
    values = {"systems": [f"{name}={folder}"], "output_dir": out, **({"max_eval_sentences": a.dev_n} if a.dev_n else {})}
    scores = run_configs(*parser().parse_mapping(values, a.eval_config))["systems"][name]["scores"]
    return {k: scores[k] for k in ("J", "STA", "SIM", "FL")}


def review(model: str, sources: list, judges, threshold: float) -> list[dict]:
    """The simulated reviewer's records for ``sources`` (``rl.rft_select.Source``) rewritten by ``model``."""
    from evaluation.infer import Detoxifier
    from feedback.versions import model_version

    outputs = Detoxifier.from_pretrained(model, device="cpu")([s.text for s in sources])
    s = judges.score([x.text for x in sources], outputs, [list(x.references) for x in sources])
    version = model_version(model)
    records = []
    for src, out, sta, sim, fl in zip(sources, outputs, s["STA"], s["SIM"], s["FL"]):
        good = sta * sim * fl >= threshold or out.strip() == src.references[0].strip()
        records.append({"input": src.text, "output": out, "verdict": "accept" if good else "reject",
                        "correction": None if good else src.references[0], "model_version": version})
    return records


def run_one(a, seed: int, method: str, judges, done: set, rows_path: str) -> None:
    from detoxrl.config import DetoxParser
    from feedback.store import FeedbackStore
    from feedback.train import FeedbackTrainConfig, run

    work = os.path.join(a.work, f"{method}-s{seed}")
    os.makedirs(work, exist_ok=True)
    store = FeedbackStore(os.path.join(work, "feedback.db"))
    pool = review_pool(a.eval_config, a.model, seed)
    current, reviews = a.model, store.count()["records"]
    for target in range(a.round, a.max_reviews + 1, a.round):
        out = os.path.join(work, f"reviews-{target}")
        if (seed, method, target) in done and os.path.isdir(out):
            current, reviews = out, target
            continue
        if reviews < target:
            store.add_many(review(current, pool[reviews:target], judges, a.threshold))
            reviews = target
        values = {"store": store.path, "model": a.model, "output_dir": out, "overwrite": True, "seed": seed,
                  **method_values(method), **(SMOKE if a.smoke else {})}
        (cfg,) = DetoxParser([FeedbackTrainConfig], prog="bench/feedback_loop.py").parse_mapping(values,
                                                                                                 a.feedback_config)
        t0 = time.perf_counter()
        run(cfg)
        minutes = (time.perf_counter() - t0) / 60
        counts = store.count()
        row = {"seed": seed, "method": method, "reviews": target, "accepted": counts["accept"],
               **dev_j(out, "model", a, os.path.join(out, "eval")), "train_min": round(minutes, 2)}
        with open(rows_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        current = out


def report(rows: list[dict], work: str) -> str:
    lines = ["| seed | method | reviews | accepted | J | STA | SIM | ChrF | train min |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["seed"], r["method"], r["reviews"])):
        lines.append(f"| {r['seed']} | {r['method']} | {r['reviews']} | {r['accepted']} | {r['J']:.3f} | "
                     f"{r['STA']:.3f} | {r['SIM']:.3f} | {r['FL']:.3f} | {r['train_min']} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for key in sorted({(r["method"], r["seed"]) for r in rows}):
            pts = sorted((r["reviews"], r["J"]) for r in rows if (r["method"], r["seed"]) == key)
            ax.plot(*zip(*pts), marker="o", label=f"{key[0]} (seed {key[1]})")
        ax.set_xlabel("reviews")
        ax.set_ylabel("J on dev (independent judges)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(work, "j_vs_reviews.png"), dpi=120)
    except ImportError:
        pass
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="outputs/sft/default", help="The model the reviews start from.")
    p.add_argument("--methods", nargs="+", default=["sft", "kto", "dpo", "orpo"])
    p.add_argument("--round", type=int, default=100, help="Reviews per round.")
    p.add_argument("--max_reviews", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    p.add_argument("--threshold", type=float, default=0.5, help="A rewrite's STA x SIM x ChrF to accept it.")
    p.add_argument("--dev_n", type=int, default=0, help="Dev sentences for J (0: the whole split).")
    p.add_argument("--eval_config", default="configs/eval/default.yaml")
    p.add_argument("--feedback_config", default="configs/feedback/default.yaml")
    p.add_argument("--work", default="outputs/bench/feedback_loop")
    p.add_argument("--smoke", action="store_true", help="2 rounds of 4 reviews, 8 dev sentences, 2 training steps.")
    a = p.parse_args(argv)
    if a.smoke:
        a.round, a.max_reviews, a.dev_n, a.seeds = 4, 8, 8, a.seeds[:1]
    for m in a.methods:
        method_values(m)  # every method parses before anything loads
    from detoxrl.log import setup_logging
    from evaluation.evaluate import parser
    from evaluation.judges import Judges

    setup_logging()
    os.makedirs(a.work, exist_ok=True)
    rows_path = os.path.join(a.work, "rows.jsonl")
    rows = [json.loads(line) for line in open(rows_path, encoding="utf-8")] if os.path.isfile(rows_path) else []
    done = {(r["seed"], r["method"], r["reviews"]) for r in rows}
    _, judges_cfg, _, vocab, *_ = parser().parse_mapping({"systems": ["delete"]}, a.eval_config)
    judges = Judges(judges_cfg, vocab)
    if not any(r["reviews"] == 0 for r in rows):
        start = {"seed": None, "method": "start", "reviews": 0, "accepted": 0, "train_min": 0,
                 **dev_j(a.model, "start", a, os.path.join(a.work, "eval-start"))}
        with open(rows_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(start) + "\n")
    for seed in a.seeds:
        for method in a.methods:
            run_one(a, seed, method, judges, done, rows_path)
    rows = [json.loads(line) for line in open(rows_path, encoding="utf-8")]
    start = next(r for r in rows if r["reviews"] == 0)
    print(f"\nstart model {a.model}: J {start['J']:.3f}\n" +
          report([r for r in rows if r["reviews"]], a.work) + f"\n\nrows: {rows_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
