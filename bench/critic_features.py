"""Which hidden states can a linear value head read a response's return from? An offline study for issue #14.

PPO's ``ppo/explained_variance`` is rarely above 0 with the value head on the policy's last hidden state
(docs/rl.md, Critic). This asks, without training anything, which features a linear head *could* use:

    python bench/critic_features.py                    # reads outputs/rl/rft/rounds/round-1.jsonl (1,024 sources)
    python bench/critic_features.py --samples <rft run>/rounds/round-1.jsonl --model outputs/sft/default

Input: an RFT round file (``detoxrl rft``): training sources (never dev), ``k`` samples each from one model at
PPO's temperature, each with the composite reward's score (truncation penalty included). The first sample of
each source plays a PPO rollout row; rows are grouped in file order into rollouts of ``--rollout`` (16, PPO's
``rollout_batch_size``). Returns are those of PPO's first step: the score z-normalised over the file, and the
GAE return of a zero critic without KL, ``R_t = lam^(T-1-t) z`` over the response tokens (EOS included).

Each feature set is read at the position that predicts response token ``t`` (as ``rl/value_head.py`` does):
``last`` (the final hidden state: today's value head), ``layer<L>`` (the output of decoder layer ``L``),
``mean_*`` (the causal mean over response positions ``0..t`` of the same states: a summary of the rewrite so
far, still computable online) and ``copy`` (1 while the rewrite so far is a verbatim prefix of the source: the
reward's copy penalty is a large share of the score's variance). Every rollout ``j >= K`` is predicted by the
replay fit of ``rl/value_fit.py`` (ridge chosen by leave-one-rollout-out, or ``--ridge``) on rollouts
``j-K .. j-1``, exactly as ``value_replay_steps: K`` would before seeing it (every K predicts the same
rollouts: those after the largest K); the table gives the mean, the minimum and the share > 0 of those
explained variances. The last lines give the between-source share of the
score's variance (from the ``k`` samples per source, unbiased for finite ``k``: what a predictor that knew each
source's expected score, and nothing of its sampled rewrite, would explain at the first token) and the share a
copy / not-copy indicator explains (the reward's copy penalty).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # bench/rewards.py != rewards/
sys.path.insert(0, os.path.dirname(_HERE))


def between_source_share(scores: list[list[float]]) -> float:
    """Share of the score variance that lies between sources: ``(Var(means) - E[within var] / k) / Var(all)``."""
    import torch

    s = torch.tensor(scores, dtype=torch.float64)  # (n, k)
    k = s.shape[1]
    within = s.var(1, unbiased=True).mean()
    between = s.mean(1).var(unbiased=True) - within / k
    return float(between / s.reshape(-1).var(unbiased=True))


def copy_share(scores: list[float], copies: list[bool]) -> float:
    """Share of the score variance between copies and the rest: ``p (1 - p) (mean_copy - mean_rest)^2 / Var``."""
    import torch

    s, c = torch.tensor(scores, dtype=torch.float64), torch.tensor(copies)
    p = float(c.double().mean())
    if p in (0.0, 1.0):
        return 0.0
    return float(p * (1 - p) * (s[c].mean() - s[~c].mean()) ** 2 / s.var(unbiased=False))


def gae_returns(z: float, length: int, lam: float):
    """PPO's GAE(gamma=1, lam) returns (``rl.core.gae``) of a zero critic when the only reward is ``z`` at the
    last token: ``R_t = lam^(T-1-t) z``."""
    import torch

    from rl.core import gae

    rewards = torch.zeros(1, length, dtype=torch.float64)
    rewards[0, -1] = z
    zeros = torch.zeros_like(rewards)
    return gae(rewards, zeros, torch.ones_like(rewards), 1.0, lam)[1][0]


def causal_mean(states):
    """``(T, H)`` -> the mean of rows ``0..t`` at row ``t``."""
    import torch

    return states.cumsum(0) / torch.arange(1, states.shape[0] + 1, dtype=states.dtype)[:, None]


def copy_so_far(tok, source: str, response_ids: list[int]):
    """``(T, 1)``: 1 at token ``t`` while the rewrite so far (tokens ``0..t-1``, what the value at ``t`` has seen)
    is, after ``norm_key``, a prefix of the source: the rewrite is still a verbatim copy."""
    import torch

    from detoxrl.data.clean import norm_key

    key = norm_key(source)
    flags = [float(key.startswith(norm_key(tok.decode(response_ids[:t])))) for t in range(len(response_ids))]
    return torch.tensor(flags, dtype=torch.float64)[:, None]


def response_states(model, tok, formatter, source: str, output: str, layers: list[int]):
    """Hidden states ``{layer: (T, H)}`` at the positions predicting each response token (+ EOS), and the
    copy-so-far flags under ``"copy"``."""
    import torch

    prompt = formatter.prompt_ids(source)
    response = tok(formatter.target(output), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    p, t = len(prompt), len(response)
    return {**{layer: hidden[layer][0, p - 1 : p + t - 1].double() for layer in layers},
            "copy": copy_so_far(tok, source, response)}


def main(argv: list[str] | None = None) -> None:
    import torch
    from tqdm import tqdm

    from detoxrl.metrics import is_copy
    from detoxrl.models.trained import load_trained
    from rl.value_fit import ValueReplay, heldout_ev, rollout_moments

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", default="outputs/rl/rft/rounds/round-1.jsonl", help="an RFT round file")
    ap.add_argument("--model", default="outputs/sft/default", help="the model that drew the samples")
    ap.add_argument("--sources", type=int, default=0, help="first N sources of the file (0: all)")
    ap.add_argument("--rollout", type=int, default=16)
    ap.add_argument("--replay", type=int, nargs="+", default=[8, 32],
                    help="K values: rollouts in the fit (value_replay_steps); every K predicts the same rollouts")
    ap.add_argument("--ridge", type=float, default=None, help="fixed strength (default: leave-one-rollout-out)")
    ap.add_argument("--lam", type=float, default=0.95)
    ap.add_argument("--layers", type=int, nargs="+", default=[15, 20], help="decoder layers besides the last")
    args = ap.parse_args(argv)

    if not os.path.isfile(args.samples):
        sys.exit(f"--samples {args.samples}: no such file; run `detoxrl rft --config configs/rl/rft.yaml` first "
                 "(it writes <output_dir>/rounds/round-1.jsonl) or pass another round file")
    with open(args.samples, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rows = rows[: args.sources or None]
    n_roll = len(rows) // args.rollout
    first = max(args.replay)  # the rollouts predicted: from `first` on, so every K is scored on the same ones
    if n_roll <= first:
        sys.exit(f"--sources {len(rows)}: {n_roll} rollouts of {args.rollout}, need more than --replay {first}")
    rows = rows[: n_roll * args.rollout]
    scores = torch.tensor([r["scores"][0] for r in rows], dtype=torch.float64)
    z = (scores - scores.mean()) / scores.std()

    trained = load_trained(args.model)
    model, fmt = trained.model, trained.formatter
    tok = fmt.tokenizer
    depth = model.config.num_hidden_layers
    layers = [*args.layers, depth]
    names = {depth: "last", **{layer: f"layer{layer}" for layer in args.layers}}
    feats: dict[str, list] = {}
    returns = []
    for row, zi in tqdm(list(zip(rows, z.tolist())), desc="features", unit="seq"):
        states = response_states(model, tok, fmt, row["source"], row["samples"][0], layers)
        copy = states.pop("copy")
        feats.setdefault("copy", []).append(copy)
        returns.append(gae_returns(zi, copy.shape[0], args.lam))
        for layer, h in states.items():
            feats.setdefault(names[layer], []).append(h)
            feats.setdefault(f"mean_{names[layer]}", []).append(causal_mean(h))
    feats["last+mean_last"] = [torch.cat([a, b], 1) for a, b in zip(feats["last"], feats["mean_last"])]
    feats["mean_last+copy"] = [torch.cat([a, b], 1) for a, b in zip(feats["mean_last"], feats["copy"])]

    print(f"{args.samples}: {len(rows)} sources, {n_roll} rollouts of {args.rollout} (rollouts {first + 1}-{n_roll} "
          f"predicted), ridge {args.ridge or 'leave-one-rollout-out'}, lam {args.lam}, "
          f"{sum(len(r) for r in returns)} tokens; per K: mean EV, min EV, share of rollouts with EV > 0")
    heads = "".join(f" | {'K=' + str(k):>6} {'min':>7} {'> 0':>5}" for k in args.replay)
    print(f"{'features':<16} {'dims':>5}{heads}")
    for name, per_seq in feats.items():
        moments = []
        for j in range(n_roll):
            part = slice(j * args.rollout, (j + 1) * args.rollout)
            x = torch.cat(per_seq[part])[None]
            y = torch.cat(returns[part])[None]
            moments.append(rollout_moments(x, y, torch.ones_like(y)))
        line = f"{name:<16} {per_seq[0].shape[-1]:>5}"
        for k in args.replay:
            evs = []
            for j in range(first, n_roll):
                replay = ValueReplay(k, args.ridge)
                for m in moments[j - k : j]:
                    replay.add(m)
                w, b, _ = replay.fit()
                evs.append(heldout_ev(w, b, moments[j]))
            evs_t = torch.tensor(evs)
            line += f" | {evs_t.mean():>6.3f} {evs_t.min():>7.3f} {(evs_t > 0).float().mean():>5.0%}"
        print(line)
    k_scores = [r["scores"] for r in rows if len(r["scores"]) > 1]
    if k_scores:
        print(f"between-source share of the score variance ({len(k_scores)} sources x {len(k_scores[0])} samples): "
              f"{between_source_share(k_scores):.3f}")
    every = [(r["source"], o, sc) for r in rows for o, sc in zip(r["samples"], r["scores"])]
    print(f"share of the score variance a copy indicator explains ({len(every)} samples): "
          f"{copy_share([s for *_, s in every], [is_copy(src, o) for src, o, _ in every]):.3f}")


if __name__ == "__main__":
    main()
