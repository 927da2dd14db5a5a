"""A PPO run with shadow feature critics beside the live one: per step, the explained variance each would have had.

    python bench/critic_shadows.py outputs/bench/b64_s43.jsonl --config configs/rl/default.yaml --seed 43 \\
        --output_dir outputs/rl/b64_s43

Everything after ``<out.jsonl>`` is ``rl/ppo.py``'s command line; the run trains exactly as ``rl/ppo.py`` would (the
shadows' values never reach PPO). It needs a feature critic (``value_features lexicon*``). Each shadow has the live
critic's features, buffer length and ridge, with its own units (the fit's ``units``: raw or rollout; no config
field since it made no difference) and ``value_shrink`` (``SHADOWS``), and is fitted on its own GAE returns: GAE
is linear in the values, so with the live values ``V``, returns ``R`` and a shadow's values ``V'`` its returns are
``R' = R + returns(GAE(rewards 0, values V' - V))``. One row per step:
``{"step", "live", "<shadow>": explained variance, ...}``, appended (a resumed run's shadows start empty). The shadow
equal to the live setting must repeat ``live`` exactly: a check on the wiring. Shadow fits cost milliseconds a step
(no extra model pass). The shadows ride on the trainer's hooks (``rl/callbacks.py``): ``on_rollout`` keeps the
step's normalised scores, ``on_critic_update`` sees the live critic's input, values and returns.
"""

from __future__ import annotations

import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from rl.callbacks import PPOCallback  # noqa: E402  (after the path)

SHADOWS = {"raw_s0.5": ("raw", 0.5), "raw_s0.25": ("raw", 0.25), "rollout_s0.25": ("rollout", 0.25),
           "rollout_s0.5": ("rollout", 0.5), "rollout_s1": ("rollout", 1.0)}


class ShadowCritics(PPOCallback):
    """Fits the ``SHADOWS`` beside the live feature critic and appends one row per step to ``out_path``."""

    def __init__(self, out_path: str):
        self.out_path, self.shadows, self.score, self.steps = out_path, None, None, 0

    def on_rollout(self, trainer, rollout, breakdown, raw, score):
        self.score = score.detach().cpu()  # the scores the live critic's sibling feature was built from

    def _make(self, live):
        from rl.feature_critic import FeatureCritic

        return {name: FeatureCritic(live.kind, live.tokenizer, live.lexicon, live.replay.steps, live.replay.ridge,
                                    shrink, live.group, live.max_length_ratio, units)
                for name, (units, shrink) in SHADOWS.items()}

    def _shadow_input(self, shadow, live, inp, mask):
        """The live input in the shadow's units: only the sibling's score (the last column) depends on them."""
        from rl.feature_critic import CriticInput, rollout_units

        centre, scale = rollout_units(self.score) if shadow.units == "rollout" else (0.0, 1.0)
        x = inp.x.clone()
        if live.kind == "lexicon+sibling":
            x[..., -1] = ((inp.x[..., -1] * inp.scale + inp.centre) - centre) / scale * mask.double()
        return CriticInput(x, centre, scale)

    def on_critic_update(self, trainer, critic_input, values, returns, mask):
        from rl.core import explained_variance, gae

        live, a = trainer.critic.fit, trainer.args
        self.shadows = self.shadows or self._make(live)
        m = mask.cpu().float()
        V, R = values.cpu(), returns.detach().cpu().float()  # the values GAE ran on
        self.steps += 1
        row = {"step": self.steps, "live": explained_variance(V, R, m)}
        for name, shadow in self.shadows.items():
            inp = self._shadow_input(shadow, live, critic_input, m)
            V2 = shadow.values(inp, m).cpu()
            R2 = R + gae(torch.zeros_like(V2), V2 - V, m, a.gamma, a.lam)[1]
            row[name] = explained_variance(V2, R2, m)
            shadow.update(inp, R2, m, None)
        with open(self.out_path, "a") as f:
            f.write(json.dumps(row) + "\n")


def main(out_path: str, ppo_argv: list[str]) -> int:
    from detoxrl.config import run_cli
    from rl.ppo import run

    return run_cli(lambda argv: run(argv, callbacks=[ShadowCritics(out_path)]), ppo_argv)


if __name__ == "__main__":
    if len(sys.argv) < 3 or not sys.argv[1].endswith(".jsonl"):
        sys.exit("usage: python bench/critic_shadows.py <out.jsonl> <rl/ppo.py arguments>")
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[1])), exist_ok=True)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
