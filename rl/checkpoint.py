"""PPO checkpoints through ``accelerator.save_state``/``load_state``: written atomically, resumed exactly, right under
DDP, DeepSpeed and FSDP.

``<output_dir>/checkpoint-<step>/`` holds:

* ``adapter/``: the policy adapter (or full model), loadable by PEFT / transformers on its own (not under FSDP);
* accelerate's state: ``optimizer.bin``, ``scheduler.bin``, ``random_states_<rank>.pkl`` (torch, Python, numpy
  and CUDA RNG of every process; accelerate loads them with ``weights_only=True``). Under DeepSpeed the engine's
  own folder (``pytorch_model/``, every rank's ZeRO shard), under FSDP accelerate's sharded files;
* ``trainable.safetensors``: every trainable tensor of policy + value head (+ critic), and the value head; written by
  the save hook ``keep_trainable`` in place of accelerate's full ``model.safetensors`` (which would hold the frozen
  base too) and read back by ``load_trainable``, which checks the names first;
* ``sampler_state.pt``: every process's prompt-sampler generator state (tensors only: ``weights_only=True``);
* ``trainer_state.json``: step, KL controller, reward running moments, the before-training dev metrics and the log
  history;
* ``value_replay.safetensors`` (``value_replay_steps > 0``): the replay fit's per-rollout statistics
  (``rl/value_fit.py``), so the head refitted after a resumed step is the uninterrupted run's.

The PPO extras are files of our own rather than objects registered with ``register_for_checkpointing``, because
accelerate loads registered objects with pickle (``weights_only=False``). Every process writes into
``.checkpoint-<step>.tmp`` and the main process renames it in one step when all are done, so a crash never leaves a
half-written checkpoint; older ones beyond ``save_total_limit`` are then removed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from detoxrl.errors import UserError
from detoxrl.resume import checkpoints, latest_checkpoint as latest  # noqa: F401  (re-exported)

REPLAY_FILE = "value_replay.safetensors"
TRAINABLE_FILE = "trainable.safetensors"
SAMPLER_FILE = "sampler_state.pt"
log = logging.getLogger("detoxrl")


def _name(name: str) -> str:
    """A parameter's name without DDP's ``module.`` prefix, so a run resumes under another number of processes."""
    return name[len("module."):] if name.startswith("module.") else name


def _saved(model) -> dict[str, torch.nn.Parameter]:
    """What a checkpoint keeps of ``model``, by name: its trainable tensors and the value head (frozen under the
    replay fit or the feature critic, but part of the policy's state)."""
    return {_name(n): p for n, p in model.named_parameters() if p.requires_grad or "value_head." in n}


def keep_trainable(models, weights, output_dir) -> None:
    """accelerate save hook (every process calls it): the main process writes ``trainable.safetensors`` instead of
    each model's full state dict."""
    from accelerate import PartialState

    for model, state in zip(models, weights):
        names = set(_saved(model))
        if PartialState().is_main_process:
            save_file({_name(n): t.detach().contiguous().cpu() for n, t in state.items() if _name(n) in names},
                      os.path.join(output_dir, TRAINABLE_FILE))
    weights.clear()  # accelerate writes no model.safetensors


def load_trainable(models, input_dir) -> None:
    """accelerate load hook: ``trainable.safetensors`` into the model, names checked first."""
    for model in models:
        saved = load_file(os.path.join(input_dir, TRAINABLE_FILE))
        params = _saved(model)
        if set(saved) != set(params):
            missing, extra = sorted(set(params) - set(saved))[:3], sorted(set(saved) - set(params))[:3]
            raise UserError(f"resume_from_checkpoint: '{input_dir}' was written for another model or adapter setup "
                            f"(missing {missing}, unexpected {extra}); resume with the config that wrote it")
        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    models.clear()  # loaded: accelerate has nothing left to load


def register_hooks(accelerator) -> None:
    accelerator.register_save_state_pre_hook(keep_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)


def save(trainer) -> str:
    """Write ``checkpoint-<step>`` for ``trainer`` (collective: every process must call it)."""
    from accelerate.utils import gather_object

    from detoxrl.distributed import backend, gathered

    acc = trainer.accelerator
    sampler = gather_object([trainer.prompt_gen.get_state()])
    path = os.path.join(trainer.args.output_dir, f"checkpoint-{trainer.state.step}")
    tmp = os.path.join(trainer.args.output_dir, f".checkpoint-{trainer.state.step}.tmp")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
    acc.wait_for_everyone()
    try:
        acc.save_state(tmp, safe_serialization=True)
        with gathered(trainer.model, acc) as module:
            if acc.is_main_process:
                trainer.state.kl_controller = trainer.kl_ctl.state_dict()
                trainer.state.reward_moments = trainer.moments.state_dict()
                if not backend(acc)[1]:  # FSDP2's parameters are not save_pretrained's (its state is in accelerate's files)
                    module.policy.save_pretrained(os.path.join(tmp, "adapter"), safe_serialization=True)
                    trainer.policy.tokenizer.save_pretrained(os.path.join(tmp, "adapter"))
                torch.save(sampler, os.path.join(tmp, SAMPLER_FILE))
                with open(os.path.join(tmp, "trainer_state.json"), "w", encoding="utf-8") as fh:
                    json.dump(dataclasses.asdict(trainer.state), fh, indent=1)
                if trainer.critic.replay is not None:
                    save_file(trainer.critic.replay.state_dict(), os.path.join(tmp, REPLAY_FILE))
        acc.wait_for_everyone()
    except BaseException:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if acc.is_main_process:
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
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
    if not os.path.isfile(os.path.join(path, SAMPLER_FILE)):
        raise UserError(f"resume_from_checkpoint: '{path}' was written by an older detoxrl (no {SAMPLER_FILE}) and "
                        "cannot be resumed; start a new run from its adapter/ folder (--model_name_or_path)")
    trainer.accelerator.load_state(path)
    sampler = torch.load(os.path.join(path, SAMPLER_FILE), weights_only=True)
    trainer.prompt_gen.set_state(sampler[min(trainer.accelerator.process_index, len(sampler) - 1)])
    with open(state_file, encoding="utf-8") as fh:
        raw = json.load(fh)
    trainer.state = type(trainer.state)(**raw)
    trainer.kl_ctl.load_state_dict(trainer.state.kl_controller)
    trainer.moments.load_state_dict(trainer.state.reward_moments)
    replay_file = os.path.join(path, REPLAY_FILE)
    if trainer.critic.replay is not None:
        if os.path.isfile(replay_file):
            trainer.critic.replay.load_state_dict(load_file(replay_file))
        else:
            log.warning("%s has no %s (written with value_replay_steps 0): the value replay buffer starts empty",
                        path, REPLAY_FILE)
