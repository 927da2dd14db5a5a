"""Inference throughput on this machine: ``detox`` file mode (batched) vs a one-by-one loop.

    python bench/infer.py                          # 64 sentences, outputs/sft/default (else smollm2)
    python bench/infer.py --n 128 --batch_size 16 --model smollm2

The sentences are a seeded sample (``group_references``, ``split_seed``) of N + 2 ParaDetox dev
sources; the model is loaded once (not timed) and warmed up on the first 2.
File mode is what ``detox --input in.txt --output out.txt`` does after loading: read the file,
rewrite every line in length-sorted batches, write the output atomically. The loop calls
``Detoxifier`` on one sentence at a time. Decoding is the model card's (greedy, 64 new tokens for
the default SFT model) unless overridden. Prints sentences/s for both, their ratio, and the share
of sentences whose output is the same both ways (batching pads, which can flip a close greedy pick).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # bench/rewards.py != rewards/
sys.path.insert(0, os.path.dirname(_HERE))

from detoxrl.config import DetoxParser, run_cli  # noqa: E402
from detoxrl.data import DataConfig, group_references, load_detox_data  # noqa: E402
from detoxrl.devices import set_torch_threads  # noqa: E402
from detoxrl.validate import read_lines  # noqa: E402
from evaluation.infer import Detoxifier, write_lines  # noqa: E402
from detoxrl.log import setup_logging  # noqa: E402
from detoxrl.runcard import has_card  # noqa: E402
from detoxrl.paths import resolve_path  # noqa: E402


@dataclass
class BenchConfig:
    n: int = field(default=64, metadata={"help": "Dev sentences rewritten each way."})
    model: str | None = field(
        default=None, metadata={"help": "Model (default: outputs/sft/default if trained, else smollm2)."})
    batch_size: int | None = field(default=None, metadata={"help": "File-mode batch size (default: the card's)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Override the card's max_new_tokens."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: the cores not busy at start)."})


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def default_bench_model() -> str:
    sft = resolve_path("outputs/sft/default")
    return sft if sft and has_card(sft) else "smollm2"


def _main(args):
    setup_logging()
    bench, data_cfg = DetoxParser([BenchConfig, DataConfig], prog="bench/infer.py").parse(args)
    threads = set_torch_threads(bench.num_threads)
    sources, _ = group_references(load_detox_data(data_cfg).dev, bench.n + 2, seed=data_cfg.split_seed)
    if len(sources) < bench.n + 2:
        raise SystemExit(f"only {len(sources)} dev sources; lower --n")
    warm, sources = sources[:2], sources[2:]
    model = bench.model or default_bench_model()
    detox = Detoxifier.from_pretrained(model, device="cpu", gen_batch_size=bench.batch_size,
                                       max_new_tokens=bench.max_new_tokens)
    detox(warm)

    folder = tempfile.mkdtemp()
    src, dst = os.path.join(folder, "in.txt"), os.path.join(folder, "out.txt")
    write_lines(src, sources)
    _, batched = timed(lambda: write_lines(dst, detox.rewrite(read_lines(src))))
    batched_out = read_lines(dst)
    single_out, single = timed(lambda: [detox(s) for s in sources])
    same = sum(a == b for a, b in zip(batched_out, single_out)) / bench.n
    s = detox.settings
    print(f"model: {detox.what}; torch threads: {threads}; {bench.n} ParaDetox dev sentences")
    print(f"decoding: max_new_tokens {s.max_new_tokens}, num_beams {s.num_beams}, do_sample {s.do_sample}; "
          f"file-mode batch size {s.gen_batch_size}")
    print("| mode | seconds | sent/s |")
    print("|---|---:|---:|")
    print(f"| file mode, batches of {s.gen_batch_size} | {batched:.1f} | {bench.n / batched:.2f} |")
    print(f"| one by one | {single:.1f} | {bench.n / single:.2f} |")
    print(f"speed-up: {single / batched:.2f}x; same output both ways: {same:.0%}")


def main(args=None) -> int:
    return run_cli(_main, args)


if __name__ == "__main__":
    sys.exit(main())
