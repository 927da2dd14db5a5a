"""Device and CPU-thread choice, shared by generation, inference, the judges and the entry points.

``resolve_device("auto")`` is CUDA when available, else CPU; any other value is passed to
``torch.device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``).

``free_cores()`` is the number of CPU cores not busy right now: ``os.cpu_count()`` minus the
1-minute load average, at least 1. On a CPU shared with another torch process, running more
threads than free cores is far slower than running fewer (OpenMP threads spin-wait for each
other): MiniLM training steps measured 8.3 s with 2 threads against 1.0 s with 1 thread while a
second training run held the other core of this 2-core machine.
"""

from __future__ import annotations

import os

import torch


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> ``cuda`` if available else ``cpu``; anything else -> ``torch.device(spec)``."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def check_device(name: str, value: str) -> None:
    """Raise ``ValueError`` naming field ``name`` if ``value`` is not a device spelling, or names CUDA where torch
    has none."""
    if value == "auto":
        return
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}: '{value}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: '{value}', but this torch ({torch.__version__}) sees no CUDA GPU; use cpu or auto "
                         "(or install the CUDA build of torch on a GPU machine)")


def free_cores() -> int:
    """``os.cpu_count()`` minus the 1-minute load average (rounded), at least 1."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on every platform
        return cores
    return max(1, min(cores, cores - round(load)))


def set_torch_threads(requested: int = 0) -> int:
    """``torch.set_num_threads(requested or free_cores())``; returns the number set (entry points call it)."""
    threads = requested if requested > 0 else free_cores()
    torch.set_num_threads(threads)
    return threads
