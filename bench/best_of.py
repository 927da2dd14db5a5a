"""Best-of-n benchmark: greedy vs best-of-4 vs best-of-8 decoding of one model, scored by detox-eval's
independent judges, with seconds per sentence (generation, and generation + reranking).

    python bench/best_of.py                                   # smoke: 16 dev sentences, outputs/rl/default
    python bench/best_of.py --n 0 --model outputs/rl/default  # the whole dev split (what docs/best-of-n.md reports)
    python bench/best_of.py --best_of 2 4 8 16 --n 200
    python bench/best_of.py --n 0 --nested        # one best-of-8 pass; best-of-4 from each sentence's first 4

One ``detox-eval`` call scores ``greedy=<model>`` and ``best<N>=<model>@best_of=N`` for each N, on the same
seeded dev sample (``--n``; 0: all 591 sentences), with the judges and the fixed sampling settings of
``--config`` (default configs/eval/default.yaml: temperature 0.7, top_p 1, seed 42; the reranker is the
composite reward of its rerank_config). Extra flags go to detox-eval (e.g. ``--temperature 1.0``). Prints
J, STA, SIM, FL, copy, and seconds per sentence split into sampling and reranking. Timings are wall clock:
run it on an otherwise idle machine.

``--nested`` samples once, best-of-max(``--best_of``), exactly as ``detox-eval``'s ``@best_of=N`` system does
(same seed, batches and scores), and takes each smaller best-of-k from every sentence's first k candidates:
those are k independent samples, so the row is a draw of best-of-k decoding, at 1/N of the sampling cost per
row saved. Its seconds are the best-of-N times scaled by k/N (marked "~"). No detox-eval files are written;
``--output_dir`` gets ``nested.json`` (scores, outputs, and every candidate with its reward).
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


HEADER = ("| decoding | J | STA | SIM | FL | copy | s/sentence | sampling s/sent | reranking s/sent |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def table_row(label: str, s: dict, greedy_j: float | None, total: float, sampling: float, rerank: float,
              mark: str = "") -> str:
    """One row of the printed table; ``greedy_j`` (None on the greedy row) adds the J difference, ``mark``
    ("~") flags seconds that are scaled, not measured."""
    delta = "" if greedy_j is None else f" ({s['J'] - greedy_j:+.3f})"
    return (f"| {label} | {s['J']:.3f}{delta} | {s['STA']:.3f} | {s['SIM']:.3f} | {s['FL']:.3f} | {s['copy']:.1%} | "
            f"{mark}{total:.2f} | {mark}{sampling:.2f} | {mark}{rerank:.2f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other flags go to detox-eval.")
    p.add_argument("--model", default="outputs/rl/default", help="Model to decode (default: outputs/rl/default).")
    p.add_argument("--best_of", type=int, nargs="+", default=[4, 8], help="Sample counts to compare with greedy.")
    p.add_argument("--n", type=int, default=16, help="Dev sentences (seeded sample; 0: the whole dev split).")
    p.add_argument("--config", default="configs/eval/default.yaml", help="detox-eval config (judges, sampling).")
    p.add_argument("--output_dir", default=None, help="Where eval.json goes (default: a temp folder).")
    p.add_argument("--nested", action="store_true",
                   help="One best-of-max pass; smaller best-of-k from each sentence's first k candidates.")
    a, extra = p.parse_known_args(argv)
    if any(n < 2 for n in a.best_of):
        p.error("--best_of values must be >= 2")
    if a.nested:
        return nested(a, extra)
    from evaluation.evaluate import main as detox_eval
    from evaluation.report import read_report

    out = a.output_dir or tempfile.mkdtemp(prefix="bench-best-of-")
    systems = [f"greedy={a.model}"] + [f"best{n}={a.model}@best_of={n}" for n in a.best_of]
    args = ["--config", a.config, "--systems", *systems, "--output_dir", out, *extra]
    args += ["--max_eval_sentences", str(a.n)] if a.n else []
    code = detox_eval(args)
    if code:
        return code
    report = read_report(out)
    n = report["test_set"]["sentences"]
    print(f"\nbest-of-n on {n} dev sentences ({report['test_set']['source']}), model {a.model}")
    print(HEADER)
    greedy_j = report["systems"]["greedy"]["scores"]["J"]
    for name, row in report["systems"].items():
        total = (row.get("generation_seconds") or 0.0) / n
        sampling = row.get("sampling_seconds", row.get("generation_seconds") or 0.0) / n
        rerank = row.get("rerank_seconds", 0.0) / n
        label = "greedy" if name == "greedy" else f"best of {row['best_of']}"
        print(table_row(label, row["scores"], None if name == "greedy" else greedy_j, total, sampling, rerank))
    print(f"\nreport: {os.path.join(out, 'eval.md')}")
    return 0


def nested(a, extra: list[str]) -> int:
    """Greedy and one best-of-max sampling pass, each smaller best-of-k read from the first k candidates."""
    import time

    from detoxrl.generate import generate_rewrites
    from detoxrl.log import setup_logging
    from detoxrl.rerank import best_of_n
    from evaluation.evaluate import LazyReranker, load_test_set, parse, system_settings
    from evaluation.judges import Judges
    from evaluation.report import system_scores
    from evaluation.systems import load_system_model, parse_system
    from rewards.batching import set_torch_threads

    setup_logging()
    out = a.output_dir or tempfile.mkdtemp(prefix="bench-best-of-")
    top = max(a.best_of)
    args = ["--config", a.config, "--systems", f"greedy={a.model}", "--output_dir", out, *extra]
    cfg, judges_cfg, data_cfg, vocab, prompt, generation = parse(args + (["--max_eval_sentences", str(a.n)] if a.n
                                                                          else []))
    set_torch_threads(cfg.num_threads)
    test = load_test_set(data_cfg, cfg.eval_split, cfg.max_eval_sentences)
    reranker = LazyReranker(cfg.rerank_config)
    judges = Judges(judges_cfg, vocab)
    model, formatter, _ = load_system_model(a.model, prompt, cfg.eval_device)
    start = time.perf_counter()
    greedy = generate_rewrites(model, formatter, test.sources, generation, progress=True)
    rows = {"greedy": (greedy, time.perf_counter() - start, 0.0)}
    settings = system_settings(parse_system(f"best={a.model}@best_of={top}"), generation)
    result = best_of_n(model, formatter, test.sources, settings, reranker, progress=True)
    for k in sorted(set(a.best_of)):
        rows[k] = (result.best_of_first(k), result.generate_seconds * k / top, result.rerank_seconds * k / top)
    n = len(test.sources)
    print(f"\nbest-of-n on {n} {cfg.eval_split} sentences ({test.description['source']}), model {a.model}; "
          f"best-of-k < {top} from the first k of the {top} candidates, seconds scaled (~)")
    print(HEADER)
    report = {"test_set": test.description, "judges": judges_cfg.describe(), "model": a.model, "best_of": top,
              "sampling": {"temperature": settings.temperature, "top_p": settings.top_p, "seed": settings.seed},
              "systems": {}}
    greedy_j = None
    for key, (outputs, sampling, rerank) in rows.items():
        s = system_scores(test.sources, outputs, test.references,
                          judges.score(test.sources, outputs, test.references), sampling + rerank)
        label = "greedy" if key == "greedy" else f"best of {key}"
        mark = "~" if key != "greedy" and key < top else ""
        print(table_row(label, s, greedy_j, (sampling + rerank) / n, sampling / n, rerank / n, mark))
        greedy_j = s["J"] if greedy_j is None else greedy_j  # rows start with greedy
        report["systems"][label] = {"scores": s, "sampling_seconds": sampling, "rerank_seconds": rerank,
                                    "outputs": outputs}
    report["candidates"] = [{"source": src, "candidates": c, "scores": sc}
                            for src, c, sc in zip(test.sources, result.candidates, result.scores)]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "nested.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, ensure_ascii=False)
    print(f"\nreport: {os.path.join(out, 'nested.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
