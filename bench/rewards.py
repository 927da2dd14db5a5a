"""Composite-reward throughput on this machine: one batched call of N pairs vs N calls of one pair.

    python bench/rewards.py                                  # default reward, N = 64
    python bench/rewards.py --config configs/rewards/default.yaml --n 64 --w_fluency 0

The pairs are N ParaDetox dev sources with their first reference as the "output". The reward is
built once (loading is not timed) and warmed up on 4 other pairs; the source-embedding cache is
emptied before each timed run, so neither run is helped by it. Every judge's batch size is set to
N, so the batched run is one batch per judge. Prints sentences/s for both runs and their ratio, for
each judge alone and for the whole composite reward.
Any ``RewardConfig`` field is a flag (e.g. ``--toxicity_backend lexicon``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # bench/rewards.py != rewards/
sys.path.insert(0, os.path.dirname(_HERE))

from detoxrl.config import DetoxParser, run_cli  # noqa: E402
from detoxrl.data import DataConfig, load_detox_data  # noqa: E402
from detoxrl.log import setup_logging  # noqa: E402
from rewards.batching import set_torch_threads  # noqa: E402
from rewards.composite import CompositeReward, RewardConfig  # noqa: E402


@dataclass
class BenchConfig:
    n: int = field(default=64, metadata={"help": "Pairs scored (the batch size of the batched run)."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: the cores not busy at start)."})


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _main(args):
    setup_logging()
    bench, cfg, data_cfg = DetoxParser([BenchConfig, RewardConfig, DataConfig], prog="bench/rewards.py").parse(args)
    threads = set_torch_threads(bench.num_threads)
    cfg = replace(cfg, toxicity_batch_size=bench.n, similarity_batch_size=bench.n, fluency_batch_size=bench.n)
    data = load_detox_data(data_cfg)
    seen, pairs = set(), []
    for p in data.dev:
        if p.group not in seen:
            seen.add(p.group)
            pairs.append((p.source, p.target))
    if len(pairs) < bench.n + 4:
        raise SystemExit(f"only {len(pairs)} dev sources; lower --n")
    warm, pairs = pairs[:4], pairs[4 : 4 + bench.n]
    sources, outputs = [s for s, _ in pairs], [o for _, o in pairs]
    reward = CompositeReward(cfg)
    reward([s for s, _ in warm], [o for _, o in warm])

    judges = {"toxicity": lambda s, o: reward.toxicity(o), "similarity": lambda s, o: reward.similarity(s, o),
              "fluency": lambda s, o: reward.fluency(o), "composite": reward}
    rows = []
    for name, fn in judges.items():
        if name != "composite" and getattr(reward, name) is None:
            continue
        reward.clear_cache()
        batched = timed(lambda: fn(sources, outputs))
        reward.clear_cache()
        single = timed(lambda: [fn([s], [o]) for s, o in zip(sources, outputs)])
        rows.append((name, batched, single))
    print(f"reward: {reward.describe()}")
    print(f"torch threads: {threads}; {bench.n} ParaDetox dev pairs (source, first reference)")
    print(f"| part | batch of {bench.n}: sent/s | one at a time: sent/s | speed-up |")
    print("|---|---:|---:|---:|")
    for name, batched, single in rows:
        print(f"| {name} | {bench.n / batched:.1f} | {bench.n / single:.1f} | {single / batched:.2f}x |")


def main(args=None) -> int:
    return run_cli(_main, args)


if __name__ == "__main__":
    sys.exit(main())
