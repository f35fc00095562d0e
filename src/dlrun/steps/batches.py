"""What a train step is, and the batches the loop feeds it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

Batch = tuple[torch.Tensor, ...]
Step = Callable[[Batch], torch.Tensor]  # trains on one batch; returns its loss, on the device


def batches(data: Batch, order: torch.Tensor | None, size: int, fast: bool) -> Iterator[Batch]:
    """The epoch's batches: index slices of ``order`` (None: the data's own order)."""
    if order is not None and fast:  # one gather for the epoch; each batch is then a view
        data = tuple(t.index_select(0, order) for t in data)
        order = None
    if order is None:
        yield from zip(*(t.split(size) for t in data), strict=True)
    else:
        for idx in order.split(size):
            yield tuple(t[idx] for t in data)


def grouped(feed: Iterable[Batch], size: int) -> Iterator[tuple[Batch, ...]]:
    """``trainer.accumulate``: the epoch's batches in groups of ``size``, one update each; the
    last group of an epoch holds what is left (groups never span two epochs)."""
    group: list[Batch] = []
    for batch in feed:
        group.append(batch)
        if len(group) == size:
            yield tuple(group)
            group = []
    if group:
        yield tuple(group)
