"""PPO checkpoints: written atomically, resumed exactly.

``<output_dir>/checkpoint-<step>/`` holds:

* ``adapter/``: the policy adapter (or full model), loadable by PEFT / transformers on its own;
* ``trainable.safetensors``: every trainable tensor of policy + value head (+ critic), for resuming;
* ``optimizer.pt``, ``scheduler.pt``: their state dicts (tensors and numbers only: loaded with
  ``torch.load(weights_only=True)``);
* ``rng_state.pt``: the torch, Python and prompt-sampler RNG states of every process;
* ``trainer_state.json``: step, KL controller, reward running moments, the
  before-training dev metrics and the log history;
* ``value_replay.safetensors`` (``value_replay_steps > 0``): the replay fit's per-rollout statistics
  (``rl/value_fit.py``), so the head refitted after a resumed step is the uninterrupted run's.

The folder is assembled in a temp folder and renamed in one step (``detoxrl.io.atomic_directory``), so
a crash never leaves a half-written checkpoint; older ones beyond ``save_total_limit`` are then removed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil

import torch
from safetensors.torch import load_file, save_file

from detoxrl.errors import UserError
from detoxrl.io import atomic_directory
from detoxrl.resume import checkpoints, latest_checkpoint as latest  # noqa: F401  (re-exported)

REPLAY_FILE = "value_replay.safetensors"
log = logging.getLogger("detoxrl")


def _rng_state(trainer) -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "prompts": trainer.prompt_gen.get_state()}


def save(trainer) -> str:
    """Write ``checkpoint-<step>`` for ``trainer`` (collective: every process must call it)."""
    from accelerate.utils import gather_object

    acc = trainer.accelerator
    rng = gather_object([_rng_state(trainer)])
    path = os.path.join(trainer.args.output_dir, f"checkpoint-{trainer.state.step}")
    if acc.is_main_process:
        module = trainer.unwrapped
        trainer.state.kl_controller = trainer.kl_ctl.state_dict()
        trainer.state.reward_moments = trainer.moments.state_dict()
        with atomic_directory(path) as tmp:
            module.policy.save_pretrained(os.path.join(tmp, "adapter"), safe_serialization=True)
            trainer.policy.tokenizer.save_pretrained(os.path.join(tmp, "adapter"))
            save_file({n: p.detach().contiguous().cpu() for n, p in module.named_parameters() if p.requires_grad},
                      os.path.join(tmp, "trainable.safetensors"))
            torch.save(trainer.optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
            torch.save(trainer.scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
            torch.save(rng, os.path.join(tmp, "rng_state.pt"))
            with open(os.path.join(tmp, "trainer_state.json"), "w", encoding="utf-8") as fh:
                json.dump(dataclasses.asdict(trainer.state), fh, indent=1)
            if trainer.value_replay is not None:
                save_file(trainer.value_replay.state_dict(), os.path.join(tmp, REPLAY_FILE))
        limit = trainer.args.save_total_limit
        if limit:
            for old in checkpoints(trainer.args.output_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return path


def load(path: str, trainer) -> None:
    """Restore weights, optimiser, scheduler, RNG and trainer state from ``path`` into ``trainer``."""
    state_file = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_file):
        raise UserError(f"resume_from_checkpoint: '{path}' is not a PPO checkpoint (no trainer_state.json)")
    module = trainer.unwrapped
    saved = load_file(os.path.join(path, "trainable.safetensors"))
    expected = {n for n, p in module.named_parameters() if p.requires_grad}
    if set(saved) != expected:
        missing, extra = sorted(expected - set(saved))[:3], sorted(set(saved) - expected)[:3]
        raise UserError(f"resume_from_checkpoint: '{path}' was written for another model or adapter setup "
                        f"(missing {missing}, unexpected {extra}); resume with the config that wrote it")
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    trainer.optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), weights_only=True))
    trainer.scheduler.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"), weights_only=True))
    rng = torch.load(os.path.join(path, "rng_state.pt"), weights_only=True)
    mine = rng[min(trainer.accelerator.process_index, len(rng) - 1)]
    torch.set_rng_state(mine["torch"])
    random.setstate(_as_tuple(mine["python"]))
    trainer.prompt_gen.set_state(mine["prompts"])
    with open(state_file, encoding="utf-8") as fh:
        raw = json.load(fh)
    trainer.state = type(trainer.state)(**raw)
    trainer.kl_ctl.load_state_dict(trainer.state.kl_controller)
    trainer.moments.load_state_dict(trainer.state.reward_moments)
    replay_file = os.path.join(path, REPLAY_FILE)
    if trainer.value_replay is not None:
        if os.path.isfile(replay_file):
            trainer.value_replay.load_state_dict(load_file(replay_file))
        else:
            log.warning("%s has no %s (written with value_replay_steps 0): the value replay buffer starts empty",
                        path, REPLAY_FILE)


def _as_tuple(state):
    """``random.setstate`` wants tuples; a round trip through torch.load may give lists."""
    return tuple(_as_tuple(s) if isinstance(s, list) else s for s in state)
