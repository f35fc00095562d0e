"""torch's (and NumPy's) CPU threads for a run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from dlrun.engine.steps import mlp_kernel

if TYPE_CHECKING:
    from torch import nn

    from dlrun.config.trainer import TrainerConfig

SMALL_MODEL = 1_000_000  # parameters


@contextlib.contextmanager
def cpu_threads(trainer: TrainerConfig, model: nn.Module, device: torch.device) -> Iterator[None]:
    """torch's CPU threads for the run (``trainer.threads``), restored afterwards; NumPy's BLAS
    gets as many when the MLP kernel may train the model.

    A small model's ops are microseconds long; sharing each one out to a thread pool costs more
    than it saves, and on a busy machine a thread waiting for a core stalls every op.
    """
    if device.type != "cpu":
        yield
        return
    wanted = trainer.threads
    if wanted == 0:
        small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL
        wanted = 1 if small and any(True for _ in model.parameters()) else 0
    before = torch.get_num_threads()
    blas = contextlib.nullcontext()
    if wanted and trainer.mlp_kernel and mlp_kernel.layout(model) is not None:
        from threadpoolctl import threadpool_limits

        blas = threadpool_limits(wanted, user_api="blas")
    if wanted:
        torch.set_num_threads(wanted)
    try:
        with blas:
            yield
    finally:
        torch.set_num_threads(before)
