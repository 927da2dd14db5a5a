"""Measure the ``lm`` fluency calibration (``fluency_center``, ``fluency_scale``) on the ParaDetox neutral side.

    python -m rewards.calibrate_fluency [--num_sentences 2000] [--fluency_model ...] [--config data.yaml]

It samples ``num_sentences`` distinct neutral rewrites from the train split of the ``DataConfig``
(seeded), computes each one's mean token log-prob ``m`` with ``LMFluency.mean_logprob``, and prints

    fluency_center = q10(m)                   (10th percentile)
    fluency_scale  = (q75(m) - q25(m)) / (2 ln 3)

with the quantiles, the resulting FL of the neutral quartiles, and the FL of the same sentences
with their words shuffled (a sanity check that the transform separates them). Paste the two
values into ``FluencyConfig`` defaults (``DEFAULT_CALIBRATION``) or a YAML config.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field

from detoxrl.config import DetoxParser, run_cli
from detoxrl.data import DataConfig, load_detox_data
from detoxrl.log import setup_logging
from rewards.batching import set_torch_threads
from rewards.fluency import FluencyConfig, LMFluency, logistic_fluency


@dataclass
class CalibrateConfig:
    num_sentences: int = field(default=2000, metadata={"help": "Neutral sentences to score."})
    sample_seed: int = field(default=0, metadata={"help": "Seed of the sample and of the word shuffles."})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: the cores not busy at start)."})


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def calibration(values: list[float]) -> dict[str, float]:
    """``{"fluency_center": q10, "fluency_scale": IQR / (2 ln 3)}`` of the mean log-probs."""
    return {"fluency_center": quantile(values, 0.10),
            "fluency_scale": (quantile(values, 0.75) - quantile(values, 0.25)) / (2 * math.log(3))}


def shuffle_words(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def _main(args: list[str] | None) -> None:
    setup_logging()
    cal, fl_cfg, data_cfg = DetoxParser([CalibrateConfig, FluencyConfig, DataConfig],
                                        prog="rewards.calibrate_fluency").parse(args)
    set_torch_threads(cal.num_threads)
    data = load_detox_data(data_cfg)
    neutral = sorted({p.target for p in data.train})
    rng = random.Random(cal.sample_seed)
    sample = rng.sample(neutral, min(cal.num_sentences, len(neutral)))
    scorer = LMFluency(fl_cfg, cal.device)
    m = scorer.mean_logprob(sample)
    values = [float(v) for v in m if not math.isnan(v)]
    const = calibration(values)
    shuffled = scorer.mean_logprob([shuffle_words(s, rng) for s in sample])
    fl = logistic_fluency(m, const["fluency_center"], const["fluency_scale"])
    fl_shuf = logistic_fluency(shuffled, const["fluency_center"], const["fluency_scale"])
    print(f"{len(values)} ParaDetox neutral sentences, model {fl_cfg.fluency_model}")
    for q in (0.05, 0.10, 0.25, 0.50, 0.75, 0.90):
        print(f"  q{int(q * 100):02d}(m) = {quantile(values, q):.4f}")
    print(f"fluency_center: {const['fluency_center']:.4f}\nfluency_scale: {const['fluency_scale']:.4f}")
    print(f"FL neutral: mean {fl.mean():.3f}, median {fl.median():.3f}; "
          f"FL shuffled words: mean {fl_shuf.mean():.3f}, median {fl_shuf.median():.3f}; "
          f"neutral above its shuffle in {(m > shuffled).float().mean():.1%} of sentences")


def main(args: list[str] | None = None) -> int:
    return run_cli(_main, args)


if __name__ == "__main__":
    sys.exit(main())
