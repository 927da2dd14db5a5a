"""A PPO run with shadow feature critics beside the live one: per step, the explained variance each would have had.

    python bench/critic_shadows.py outputs/bench/b64_s43.jsonl --config configs/rl/default.yaml --seed 43 \\
        --output_dir outputs/rl/b64_s43

Everything after ``<out.jsonl>`` is ``rl/ppo.py``'s command line; the run trains exactly as ``rl/ppo.py`` would (the
shadows' values never reach PPO). It needs a feature critic (``value_features lexicon*``). Each shadow has the live
critic's features, buffer length and ridge, with its own ``value_units`` and ``value_shrink`` (``SHADOWS``), and is
fitted on its own GAE returns: GAE is linear in the values, so with the live values ``V``, returns ``R`` and a
shadow's values ``V'`` its returns are ``R' = R + returns(GAE(rewards 0, values V' - V))``. One row per step:
``{"step", "live", "<shadow>": explained variance, ...}``, appended (a resumed run's shadows start empty). The shadow equal to the live setting must repeat
``live`` exactly: a check on the wrapper. Shadow fits cost milliseconds a step (no extra model pass).
Written by hand: it wraps ``FeatureCritic`` in place, which no hook of the trainer offers.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHADOWS = {"raw_s0.5": ("raw", 0.5), "raw_s0.25": ("raw", 0.25), "rollout_s0.25": ("rollout", 0.25),
           "rollout_s0.5": ("rollout", 0.5), "rollout_s1": ("rollout", 1.0)}


def main(out_path: str, ppo_argv: list[str]) -> None:
    import rl.feature_critic as fc
    from rl.core import explained_variance, gae

    live_update, live_features = fc.FeatureCritic.update, fc.FeatureCritic.features
    shadows: dict[int, dict[str, fc.FeatureCritic]] = {}  # live critic id -> its shadows
    last_score: dict[int, torch.Tensor] = {}
    gamma_lam: dict[str, float] = {}
    steps: dict[int, int] = {}

    def shadows_of(live: fc.FeatureCritic) -> dict[str, fc.FeatureCritic]:
        if id(live) not in shadows:
            shadows[id(live)] = {name: fc.FeatureCritic(live.kind, live.tokenizer, live.lexicon, live.replay.steps,
                                                        live.replay.ridge, shrink, live.group,
                                                        live.max_length_ratio, units)
                                 for name, (units, shrink) in SHADOWS.items()}
        return shadows[id(live)]

    def is_shadow(critic) -> bool:
        return any(critic is s for group in shadows.values() for s in group.values())

    def features(self, sources, response, mask, score):
        if not is_shadow(self):
            last_score[id(self)] = score.detach().cpu()
        return live_features(self, sources, response, mask, score)

    def shadow_input(shadow, live, inp, mask):
        """The live input in the shadow's units: only the sibling's score (the last column) depends on them."""
        centre, scale = fc.rollout_units(last_score[id(live)]) if shadow.units == "rollout" else (0.0, 1.0)
        x = inp.x.clone()
        if live.kind == "lexicon+sibling":
            x[..., -1] = ((inp.x[..., -1] * inp.scale + inp.centre) - centre) / scale * mask.double()
        return fc.CriticInput(x, centre, scale)

    def update(self, inp, returns, mask, reduce=None):
        if is_shadow(self):
            return live_update(self, inp, returns, mask, reduce)
        m = mask.cpu().float()
        V, R = self.values(inp, mask).cpu(), returns.detach().cpu().float()  # the values GAE ran on
        steps[id(self)] = steps.get(id(self), 0) + 1
        row = {"step": steps[id(self)], "live": explained_variance(V, R, m)}
        for name, shadow in shadows_of(self).items():
            sinp = shadow_input(shadow, self, inp, m)
            V2 = shadow.values(sinp, m).cpu()
            R2 = R + gae(torch.zeros_like(V2), V2 - V, m, gamma_lam["gamma"], gamma_lam["lam"])[1]
            row[name] = explained_variance(V2, R2, m)
            live_update(shadow, sinp, R2, m, None)
        with open(out_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        return live_update(self, inp, returns, mask, reduce)

    import rl.config as cfg

    post_init = cfg.DetoxPPOConfig.__post_init__

    def read_gae(self):
        post_init(self)
        gamma_lam.update(gamma=self.gamma, lam=self.lam)

    cfg.DetoxPPOConfig.__post_init__ = read_gae
    fc.FeatureCritic.features, fc.FeatureCritic.update = features, update
    sys.argv = ["rl/ppo.py", *ppo_argv]
    runpy.run_path(os.path.join(ROOT, "rl", "ppo.py"), run_name="__main__")


if __name__ == "__main__":
    if len(sys.argv) < 3 or not sys.argv[1].endswith(".jsonl"):
        sys.exit("usage: python bench/critic_shadows.py <out.jsonl> <rl/ppo.py arguments>")
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[1])), exist_ok=True)
    main(sys.argv[1], sys.argv[2:])
