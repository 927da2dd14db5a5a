"""Feedback training benchmark: after ``detox-feedback train`` on 50 reviewer corrections, does the model
write those corrections for their inputs?

    python bench/feedback.py                     # 50 corrections, configs/feedback/default.yaml, SFT step only
    python bench/feedback.py --verdicts auto     # + the KTO step on the same records (as the default config does)
    python bench/feedback.py --n 50 --model outputs/sft/default --work outputs/bench/feedback

What it does, exactly:

1. Test items: ``n`` source sentences drawn (seed ``--seed``) from the ParaDetox **dev** split of
   ``configs/sft/default.yaml``'s data (the model never trained on them), each with its first
   reference as the reviewer's "correction"; ``--control`` other dev sentences, with all their
   references, check that the rest of the model's behaviour does not collapse.
2. Before: the current model (``--model``, an SFT run folder) rewrites the inputs (greedy, its
   card's decoding settings, ``evaluation.infer.Detoxifier``).
3. A fresh feedback store gets one record per item, as a reviewer would leave it: ``accept`` when
   the rewrite already equals the correction after normalisation (``detoxrl.metrics.is_copy``'s
   ``norm_key``: lowercase, punctuation dropped), else ``reject`` with the correction.
4. ``feedback.train.run`` with ``configs/feedback/default.yaml`` (LoRA on the model's merged weights,
   ``data_mode: add``: the corrections, repeated, mixed with a sample of supervised pairs), except
   ``--verdicts`` (default ``none``: the SFT step alone, the one that learns corrections) and any
   of ``--steps --lr --batch --replay --repeat --kto_steps`` given (unset: the config's values).
5. After: the new model rewrites the same inputs and the control sentences.

Figures: exact match (output == correction after normalisation) and ChrF (sacrebleu, 0-1) against
the corrections, before and after; the control set's ChrF against its references and copy rate.
Printed as a table and written to ``<work>/bench.json``. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from detoxrl.config import DetoxParser  # noqa: E402
from detoxrl.data import load_detox_data, norm_key  # noqa: E402
from detoxrl.log import setup_logging  # noqa: E402
from detoxrl.metrics import chrf, copy_rate  # noqa: E402
from feedback.store import FeedbackStore  # noqa: E402
from feedback.train import FeedbackTrainConfig, run  # noqa: E402
from feedback.versions import model_version  # noqa: E402


def items(sft_config: str, n: int, control: int, seed: int):
    from sft.train import parse

    data = load_detox_data(parse(["--config", sft_config])[0])
    grouped: dict[str, tuple[str, list[str]]] = {}
    for p in data.dev:
        grouped.setdefault(p.group, (p.source, []))[1].append(p.target)
    groups = sorted(grouped)
    random.Random(seed).shuffle(groups)
    chosen = [grouped[g] for g in groups[:n]]
    ctrl = [grouped[g] for g in groups[n : n + control]]
    return [s for s, _ in chosen], [refs[0] for _, refs in chosen], [s for s, _ in ctrl], [r for _, r in ctrl]


def rewrite(model: str, texts: list[str]) -> tuple[list[str], float]:
    from evaluation.infer import Detoxifier

    det = Detoxifier.from_pretrained(model, device="cpu")
    start = time.perf_counter()
    out = det(texts)
    return out, time.perf_counter() - start


def exact(outputs: list[str], targets: list[str]) -> float:
    return sum(norm_key(o) == norm_key(t) for o, t in zip(outputs, targets)) / len(targets)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="outputs/sft/default")
    p.add_argument("--n", type=int, default=50, help="corrections (dev sentences)")
    p.add_argument("--control", type=int, default=50, help="other dev sentences, to check nothing else breaks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="outputs/bench/feedback", help="store, new model and bench.json go here")
    p.add_argument("--config", default="configs/feedback/default.yaml")
    p.add_argument("--verdicts", default="none", help="none (SFT step only) | auto (+ KTO) | kto | reward_model")
    p.add_argument("--steps", type=int, help="SFT steps (sft_max_steps)")
    p.add_argument("--lr", type=float, help="SFT learning rate (sft_learning_rate)")
    p.add_argument("--batch", type=int, help="SFT batch (sft_batch_size)")
    p.add_argument("--replay", type=int, help="supervised pairs mixed in (replay_pairs)")
    p.add_argument("--repeat", type=int, help="copies of each correction (feedback_repeat)")
    p.add_argument("--kto_steps", type=int, help="KTO steps (kto_max_steps)")
    a = p.parse_args()
    setup_logging()
    t0 = time.perf_counter()
    (cfg,) = DetoxParser([FeedbackTrainConfig], prog="bench/feedback.py").parse(["--config", a.config])
    inputs, corrections, ctrl_inputs, ctrl_refs = items(cfg.sft_config, a.n, a.control, a.seed)

    before, before_s = rewrite(a.model, inputs + ctrl_inputs)
    before, ctrl_before = before[: a.n], before[a.n :]
    if os.path.isdir(a.work):
        shutil.rmtree(a.work)
    os.makedirs(a.work)
    store = FeedbackStore(os.path.join(a.work, "feedback.db"))
    version = model_version(a.model)
    store.add_many([dict(input=i, output=o, verdict="accept" if norm_key(o) == norm_key(c) else "reject",
                         correction=None if norm_key(o) == norm_key(c) else c, model_version=version)
                    for i, o, c in zip(inputs, before, corrections)])
    counts = store.count()

    out_dir = os.path.join(a.work, "model")
    args = ["--config", a.config, "--store", store.path, "--model", a.model, "--output_dir", out_dir,
            "--verdicts", a.verdicts, "--sft_overrides", "guard_samples=16", "eval_max_pairs=32"]
    for flag, name in (("steps", "sft_max_steps"), ("lr", "sft_learning_rate"), ("batch", "sft_batch_size"),
                       ("replay", "replay_pairs"), ("repeat", "feedback_repeat"), ("kto_steps", "kto_max_steps")):
        if getattr(a, flag) is not None:
            args += [f"--{name}", str(getattr(a, flag))]
    (cfg,) = DetoxParser([FeedbackTrainConfig], prog="bench/feedback.py").parse(args)
    t_train = time.perf_counter()
    summary = run(cfg)
    train_s = time.perf_counter() - t_train

    after, after_s = rewrite(out_dir, inputs + ctrl_inputs)
    after, ctrl_after = after[: a.n], after[a.n :]
    refs = [[c] for c in corrections]
    result = {
        "n": a.n, "control": a.control, "model": a.model, "parent_version": version, "new_version": summary["version"],
        "records": counts, "steps": summary["steps"], "train_seconds": round(train_s, 1),
        "settings": {k: getattr(cfg, k) for k in ("sft_max_steps", "sft_learning_rate", "sft_batch_size",
                                                  "replay_pairs", "feedback_repeat", "sft_loss", "verdicts",
                                                  "kto_max_steps", "seed")},
        "before": {"exact": exact(before, corrections), "chrf": chrf(before, refs),
                   "control_chrf": chrf(ctrl_before, ctrl_refs), "control_copy": copy_rate(ctrl_inputs, ctrl_before)},
        "after": {"exact": exact(after, corrections), "chrf": chrf(after, refs),
                  "control_chrf": chrf(ctrl_after, ctrl_refs), "control_copy": copy_rate(ctrl_inputs, ctrl_after)},
        "generation_seconds": {"before": round(before_s, 1), "after": round(after_s, 1)},
        "total_seconds": round(time.perf_counter() - t0, 1),
        "examples": [{"input": i, "correction": c, "before": b, "after": o}
                     for i, c, b, o in list(zip(inputs, corrections, before, after))[:10]],
    }
    with open(os.path.join(a.work, "bench.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, ensure_ascii=False)
    b, f = result["before"], result["after"]
    print(f"\nFeedback training on {a.n} corrections of {a.model} ({counts['reject']} rejected with a correction, "
          f"{counts['accept']} already right) -> {summary['version']} ({' + '.join(summary['steps'])}, "
          f"{train_s / 60:.1f} min training, {result['total_seconds'] / 60:.1f} min in all)")
    print("| metric | before | after |\n|---|---:|---:|")
    print(f"| exact match with the correction ({a.n} inputs) | {b['exact']:.1%} | {f['exact']:.1%} |")
    print(f"| ChrF vs the correction ({a.n} inputs) | {b['chrf']:.3f} | {f['chrf']:.3f} |")
    print(f"| control: ChrF vs references ({a.control} other dev inputs) | {b['control_chrf']:.3f} | "
          f"{f['control_chrf']:.3f} |")
    print(f"| control: copy rate | {b['control_copy']:.1%} | {f['control_copy']:.1%} |")
    print(f"written to {os.path.join(a.work, 'bench.json')}")


if __name__ == "__main__":
    main()
