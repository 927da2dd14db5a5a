"""Length-sorted batching for every scorer, plus the device and thread helpers they use.

``sorted_batches(items, batch_size)`` yields lists of indices into ``items`` (texts, or token-id
lists), longest first by ``len``, so each batch pads little and a too-large batch fails on the first one.
Scorers fill their results back by index, so the output order is the input order.

``resolve_device``, ``check_device``, ``free_cores`` and ``set_torch_threads`` live in
``detoxrl.devices`` (inference needs them too) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized

from detoxrl.devices import check_device, free_cores, resolve_device, set_torch_threads

__all__ = ["check_device", "free_cores", "resolve_device", "set_torch_threads", "sorted_batches"]


def sorted_batches(items: Sequence[Sized], batch_size: int) -> Iterator[list[int]]:
    """Index batches of at most ``batch_size``, items sorted by ``len`` (longest first)."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i]))
    for start in range(0, len(order), max(1, batch_size)):
        yield order[start : start + batch_size]
