"""How many sequences must a PPO step hold for explained variance to stay above 0 at every step? An offline bound
for issue #14.

``ppo/explained_variance`` is ``1 - Var(R - V) / Var(R)`` over one rollout's tokens (``rl.core``). With 16
sequences per rollout it is a noisy statistic: a copy of the source scores about 2.6 standard deviations below a
rewrite (the copy penalty), so one unexpected copy in a batch of 16 decides the step's sign. This asks how often it
is <= 0 for critics of increasing strength, at rollouts of 16, 32 and 64 sequences, without training anything:

    python bench/critic_bound.py            # reads outputs/rl/rft/rounds/round-1.jsonl (1,024 sources x 4 samples)
    python bench/critic_bound.py --samples <rft run>/rounds/round-1.jsonl --tokenizer outputs/sft/default/merged

Input: an RFT round file (``detoxrl rft``): training sources (never dev), ``k >= 3`` samples each from the SFT
model at PPO's temperature, each with the composite reward's score. Rollouts take samples 0 and 1 of ``B/2``
sources in file order (two samples per prompt, so the ``+sibling`` critic can read the other one). The reward is
the score z-normalised over the file at the last token (no KL: PPO's first step). Critics:

* ``oracle x a``: each source's expected score, estimated from its *other* ``k - 1`` samples, times ``a``, constant
  over the tokens: the best a critic that knows the source but not its own rewrite can do;
* ``lexicon``: the replay ridge fit of ``rl/value_fit.py`` (``value_ridge`` fixed) on the last rollouts (the
  same 144 sequences whatever ``B``: 9 rollouts of 16, PPO's step 10) over the per-token features of the rewrite
  so far that ``value_features: lexicon`` reads (``rl/feature_critic.py``);
* ``lexicon+sibling``: the same plus the other sample's score (the RLOO baseline; a valid baseline, since the
  sibling is drawn independently of this sample's tokens).

A fitted critic's prediction ``p`` is shrunk towards the buffer's mean return ``m``: ``V = m + a (p - m)``. Every
critic's values enter GAE (gamma 1, ``--lam``) as PPO's would, so the returns bootstrap from them. The table gives,
per critic and rollout size, the mean and minimum explained variance and the share of rollouts above 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # bench/rewards.py != rewards/
sys.path.insert(0, os.path.dirname(_HERE))

HISTORY = 144  # sequences in the replay fit: 9 rollouts of 16, what PPO has seen before step 10
SHRINK = (1.0, 0.5, 0.25)


def rollout_ev(values: list, zs: list[float], lam: float) -> tuple[float, list]:
    """PPO's explained variance of one rollout, and its GAE returns, when ``values[i]`` ``(T_i,)`` are the critic's
    and the only reward is ``zs[i]`` at the last token."""
    import torch

    from rl.core import explained_variance, gae

    T = max(len(v) for v in values)
    mask = torch.zeros(len(values), T, dtype=torch.float64)
    v = torch.zeros_like(mask)
    r = torch.zeros_like(mask)
    for i, (vi, z) in enumerate(zip(values, zs)):
        mask[i, : len(vi)] = 1
        v[i, : len(vi)] = vi
        r[i, len(vi) - 1] = z
    _, returns = gae(r, v, mask, 1.0, lam)
    return explained_variance(v, returns, mask), [returns[i, : len(vi)] for i, vi in enumerate(values)]


def run_critic(seqs: list[dict], size: int, lam: float, shrink: float, predict) -> list[float]:
    """Explained variance of every rollout from the one after ``HISTORY`` sequences on; ``predict(buffer, batch,
    shrink)`` gives each sequence's values from the rollouts before (``buffer``: ``(features, returns)`` pairs)."""
    buffer: list[tuple] = []
    evs = []
    first = HISTORY // size
    for j in range(len(seqs) // size):
        batch = seqs[j * size : (j + 1) * size]
        values = predict(buffer, batch, shrink)
        ev, returns = rollout_ev(values, [s["z"] for s in batch], lam)
        if j >= first:
            evs.append(ev)
        buffer = (buffer + [(s["x"], R) for s, R in zip(batch, returns)])[-HISTORY:]
    return evs


def oracle(buffer, batch, shrink):
    import torch

    return [torch.full((s["x"].shape[0],), shrink * s["oracle"], dtype=torch.float64) for s in batch]


def fitted(columns: list[int], ridge: float):
    def predict(buffer, batch, shrink):
        import torch

        from rl.value_fit import ValueReplay, rollout_moments

        if not buffer:
            return [torch.zeros(s["x"].shape[0], dtype=torch.float64) for s in batch]
        x = torch.cat([f[:, columns] for f, _ in buffer])[None]
        y = torch.cat([R for _, R in buffer])[None]
        replay = ValueReplay(1, ridge)
        replay.add(rollout_moments(x, y, torch.ones_like(y)))
        w, b, _ = replay.fit()
        mean = float(y.mean())
        return [mean + shrink * (s["x"][:, columns] @ w + b - mean) for s in batch]

    return predict


def main(argv: list[str] | None = None) -> None:
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from detoxrl.prompts import build_target
    from detoxrl.vocab.config import VocabConfig
    from detoxrl.vocab.lexicon import load_lexicon
    from rl.feature_critic import PREFIX_FEATURES, prefix_features

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", default="outputs/rl/rft/rounds/round-1.jsonl", help="an RFT round file (k >= 3)")
    ap.add_argument("--tokenizer", default="outputs/sft/default/merged", help="the policy's tokenizer folder")
    ap.add_argument("--lexicon_dir", default="../shared/data/lexicons")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64], help="sequences per rollout (even)")
    ap.add_argument("--ridge", type=float, default=100.0, help="value_ridge of the fitted critics")
    ap.add_argument("--lam", type=float, default=0.95)
    args = ap.parse_args(argv)

    for flag, path in (("--samples", args.samples), ("--tokenizer", args.tokenizer), ("--lexicon_dir", args.lexicon_dir)):
        if not os.path.exists(path):
            sys.exit(f"{flag} {path}: not found (the round file comes from `detoxrl rft --config configs/rl/rft.yaml`, "
                     "the tokenizer from `sft/train.py`)")
    bad = [s for s in args.sizes if s < 2 or s % 2 or s > HISTORY]
    if bad:
        sys.exit(f"--sizes {bad}: every size must be even, at least 2 and at most {HISTORY}")
    with open(args.samples, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    k = min(len(r["scores"]) for r in rows)
    if k < 3:
        sys.exit(f"--samples {args.samples}: {k} samples per source; the oracle needs at least 3 (rft's k)")
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    lexicon = load_lexicon(VocabConfig(lexicon_dir=args.lexicon_dir, lexicon_lang="en"))
    scores = torch.tensor([r["scores"][:k] for r in rows], dtype=torch.float64)
    z = (scores - scores.mean()) / scores.std()
    seqs = []
    for i, row in enumerate(tqdm(rows, desc="features", unit="source")):
        for a, b in ((0, 1), (1, 0)):
            ids = tok(build_target(row["samples"][a], tok, "causal"), add_special_tokens=False)["input_ids"]
            x = prefix_features(tok, lexicon, row["source"], ids)
            sibling = torch.full((x.shape[0], 1), float(z[i, b]), dtype=torch.float64)
            others = float((z[i].sum() - z[i, a]) / (k - 1))
            seqs.append({"x": torch.cat([x, sibling], 1), "z": float(z[i, a]), "oracle": others})

    lexicon_cols = list(range(len(PREFIX_FEATURES)))
    critics = {"oracle": oracle, "lexicon": fitted(lexicon_cols, args.ridge),
               "lexicon+sibling": fitted(lexicon_cols + [len(PREFIX_FEATURES)], args.ridge)}
    print(f"{args.samples}: {len(rows)} sources x samples 0-1, lam {args.lam}, ridge {args.ridge}, fit on the last "
          f"{HISTORY} sequences; per rollout size: mean EV, min EV, share of rollouts with EV > 0")
    print("| critic | shrink a | " + " | ".join(f"B={s}: mean | min | > 0" for s in args.sizes) + " |")
    print("|---|---:|" + "---:|---:|---:|" * len(args.sizes))
    for name, predict in critics.items():
        for shrink in SHRINK:
            cells = []
            for size in args.sizes:
                evs = torch.tensor(run_critic(seqs, size, args.lam, shrink, predict))
                cells.append(f"{evs.mean():.3f} | {evs.min():.3f} | {(evs > 0).double().mean():.0%} of {len(evs)}")
            print(f"| {name} | {shrink:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
