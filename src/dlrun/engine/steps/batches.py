"""What a train step is, and the batches the loop feeds it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

Batch = tuple[torch.Tensor, ...]
Step = Callable[[Batch], torch.Tensor]  # trains on one batch; returns its loss, on the device
# trains an epoch's first `count` batches of `size` (data, order, size, count) as the loop would
# feed them to the step, in one call; returns their losses in one tensor
EpochCall = Callable[[Batch, "torch.Tensor | None", int, int], torch.Tensor]

# Past this many bytes of data an epoch's gather no longer fits in cache: it writes the whole
# shuffled copy out to memory and the steps read it back, where gathering each batch just
# before its step keeps it in cache (MNIST's 188 MB: 30% less CPU time for the gather and the
# first product, measured on one thread). Smaller data gathers once, saving an op per batch.
EPOCH_GATHER_BYTES = 2**24


def batches(data: Batch, order: torch.Tensor | None, size: int, fast: bool) -> Iterator[Batch]:
    """The epoch's batches: index slices of ``order`` (None: the data's own order)."""
    if order is not None and fast:
        if sum(t.numel() * t.element_size() for t in data) <= EPOCH_GATHER_BYTES:
            data = tuple(t.index_select(0, order) for t in data)  # each batch is then a view
            order = None
        else:
            for idx in order.split(size):
                yield tuple(t.index_select(0, idx) for t in data)
            return
    if order is None:
        yield from zip(*(t.split(size) for t in data), strict=True)
    else:
        for idx in order.split(size):
            yield tuple(t[idx] for t in data)


def whole_epoch(step: Step) -> EpochCall | None:
    """The step's whole-epoch call, where it has one (the MLP kernel's ``epoch``): a step of a
    few microseconds costs less than the torch ops that slice its batch and hold its loss."""
    return getattr(step, "epoch", None)


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
