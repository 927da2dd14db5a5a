"""What GPUs, several processes and sharded engines need from both stages (mostly the RL stage), in one place.

* ``process_device(use_cpu)``: this process's device, accelerate's ``PartialState().device`` (``cuda:<local rank>``
  under ``accelerate launch`` on GPUs). The judges and the dev evaluation go there; ``torch.device("cuda")`` would
  put every rank's judges on GPU 0.
* ``place_reference(model, accelerator)``: the frozen reference of ``finetuning: full`` beside the policy: moved to
  the process's device, or sharded like the policy through TRL's ``prepare_deepspeed`` (ZeRO-3) / ``prepare_fsdp``.
* ``gathered(model, accelerator)``: the whole policy module with full parameters, for generation, the reference
  pass, the dev evaluation and saving. Under ZeRO-3 it is TRL's ``unwrap_model_for_generation`` (DeepSpeed's
  ``GatheredParameters``); under FSDP2 every ``FSDPModule`` is unsharded and kept so through the forwards (FSDP's own
  ``unshard``/``reshard``). Written by hand for FSDP because TRL's helper yields FSDP models still sharded, and a
  PPO rollout runs a different number of forwards on every rank (finished rows are dropped), which per-forward
  all-gathers cannot take. Elsewhere it is ``accelerator.unwrap_model``. Collective: every rank must enter it.
* ``full_state_dict(model)``: under FSDP2 the whole state dict on the main process's CPU (torch's
  ``get_model_state_dict``). Saving needs it: ``save_pretrained`` cannot read FSDP2's unsharded parameters (views of
  its all-gather buffer), so the RL stage saves from a CPU copy that holds these weights (``rl/save.py``).
* ``writable(params, accelerator)`` and ``assign(param, value)``: write a value every rank computed alike into
  parameters that may be sharded (ZeRO-3: gathered with ``modifier_rank=0``; FSDP2: each rank keeps its shard).
* ``fill_deepspeed_clipping(accelerator, max_grad_norm)``: DeepSpeed clips inside its own step (``accelerate``'s
  ``clip_grad_norm_`` only reads the norm there), and accelerate turns a ``gradient_clipping: auto`` into 1.0;
  this puts ``max_grad_norm`` there instead, as the transformers Trainer does.

FSDP1 is refused for PPO (``check_backend``): its wrapped submodules cannot run a forward while their parameters
are summoned, so it has no gather that generation can use. Use ``fsdp_version: 2`` (``configs/accelerate/fsdp.yaml``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from detoxrl.errors import UserError


def process_device(use_cpu: bool = False) -> torch.device:
    """The device accelerate gives this process (creating the shared ``PartialState`` if needed)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu).device


def backend(accelerator) -> tuple[int, int | None]:
    """``(zero_stage, fsdp_version)`` of ``accelerator``: ``(0, None)`` for plain DDP or one process."""
    from trl.distributed import DistributedBackend

    b = DistributedBackend(accelerator)
    return b.zero_stage, b.fsdp_version


def params_sharded(accelerator) -> bool:
    """Whether parameters are sharded across processes (ZeRO-3 or FSDP): a module alone holds only its shard."""
    zero_stage, fsdp_version = backend(accelerator)
    return zero_stage == 3 or bool(fsdp_version)


def check_backend(accelerator) -> None:
    """One line for the engines PPO cannot generate under (FSDP1)."""
    if backend(accelerator)[1] == 1:
        raise UserError("PPO under FSDP needs fsdp_version: 2 in the accelerate config (FSDP1 cannot run generation "
                        "on gathered parameters); use configs/accelerate/fsdp.yaml or deepspeed_zero3.yaml")


def fill_deepspeed_clipping(accelerator, max_grad_norm: float | None) -> None:
    """Set DeepSpeed's ``gradient_clipping`` to ``max_grad_norm`` when the config leaves it ``auto`` (or unset)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    config = plugin.deepspeed_config
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = float(max_grad_norm or 0.0)


def place_reference(model, accelerator):
    """The frozen reference model next to the policy (see the module docstring)."""
    zero_stage, fsdp_version = backend(accelerator)
    if zero_stage == 3:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(model, accelerator)
    if fsdp_version:
        from trl.models.utils import prepare_fsdp

        return prepare_fsdp(model, accelerator)
    return model.to(accelerator.device)


@contextmanager
def gathered(model, accelerator):
    """Yield the unwrapped ``model`` with full parameters on every rank (see the module docstring)."""
    zero_stage, fsdp_version = backend(accelerator)
    if zero_stage == 3:
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(model, accelerator) as unwrapped:
            yield unwrapped
        return
    unwrapped = accelerator.unwrap_model(model)
    if fsdp_version == 2:
        with unsharded(unwrapped):
            yield unwrapped
        return
    yield unwrapped


@contextmanager
def unsharded(module):
    """Every FSDP2 ``FSDPModule`` in ``module`` unsharded, and left so by the forwards run inside, then resharded.

    Inside, a forward issues no collective, so ranks may run different numbers of forwards (generation)."""
    from torch.distributed.fsdp import FSDPModule

    shards = [m for m in module.modules() if isinstance(m, FSDPModule)]
    if shards:  # FSDP2 picks its root at the first forward, and generation calls a submodule (the policy) first;
        shards[0]._get_fsdp_state()._lazy_init()  # so root the outermost one now (a no-op once done)
    for m in shards:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield module
    finally:
        for m in shards:
            m.reshard()
            m.set_reshard_after_forward(True)


@contextmanager
def writable(params, accelerator):
    """Under ZeRO-3, ``params`` gathered and re-partitioned with rank 0's values on exit; elsewhere nothing."""
    if backend(accelerator)[0] == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            yield
        return
    yield


@torch.no_grad()
def assign(param: torch.Tensor, value: torch.Tensor) -> None:
    """``param`` (plain or an FSDP2 ``DTensor`` shard) set to the full ``value``."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    value = value.reshape(param.shape).to(param.dtype)
    if isinstance(param, DTensor):
        value = distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    param.copy_(value.to(param.device))


def full_state_dict(model) -> dict | None:
    """FSDP2: ``model``'s whole state dict on the main process's CPU, None on the others (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if torch.distributed.get_rank() == 0 else None
