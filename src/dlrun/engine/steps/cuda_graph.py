"""The fused step replayed from CUDA graphs (``trainer.cuda_graph``): one launch per step
instead of one per op."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import nn

    from dlrun.config.trainer import TrainerConfig
    from dlrun.engine.steps.batches import Batch, Step
    from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


def why_not(
    task: Task, optimizer: torch.optim.Optimizer, trainer: TrainerConfig, direct: bool
) -> str | None:
    """Why this run's step cannot be captured (None: it can); ``direct``: the optimizer updates
    through its fused kernel without ``step()``."""
    if task.device.type != "cuda":
        return f"device {task.device} is not CUDA"
    if not direct:
        return f"{type(optimizer).__name__} cannot be captured (SGD, Adam and AdamW can)"
    if trainer.compile:
        return "not combined with trainer.compile"
    return None


def graphed(model: nn.Module, optimizer: torch.optim.Optimizer, step: Step) -> Step:
    """``step`` replayed from CUDA graphs, one per batch size (the last batch may be smaller).

    Each graph reads its batch from static buffers that every call copies into. The run's first
    step is eager (it creates the optimizer state); capturing then needs a few warm-up steps, after
    which the model and optimizer state are restored, so the run trains exactly the steps the
    loop asks for. Anything that fails falls back to ``step``, with a line in the run log.
    """
    graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, Batch, torch.Tensor]] = {}
    failed = False

    def capture(batch: Batch) -> tuple[torch.cuda.CUDAGraph, Batch, torch.Tensor]:
        saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_opt = {
            p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for p, s in optimizer.state.items()
        }
        static = tuple(t.clone() for t in batch)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # kernels and workspaces warmed before capture
                    step(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                loss = step(static)
        finally:
            with torch.no_grad():  # undo the warm-up steps in place (the graph holds these)
                for k, v in model.state_dict().items():
                    v.copy_(saved_model[k])
                for p, s in optimizer.state.items():
                    for k, v in s.items():
                        if torch.is_tensor(v):
                            v.copy_(saved_opt[p][k])
        return graph, static, loss

    def graph_step(batch: Batch) -> torch.Tensor:
        nonlocal failed
        if failed:
            return step(batch)
        if not optimizer.state:  # the first step creates the optimizer's state, eagerly
            return step(batch)
        shape = tuple(batch[0].shape)
        if shape not in graphs:
            try:
                graphs[shape] = capture(batch)
            except Exception as exc:  # e.g. a host sync or a data-dependent shape in the loss
                failed = True
                log.info("trainer.cuda_graph: capture failed (%s); running uncaptured", exc)
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize()
                return step(batch)
        graph, static, loss = graphs[shape]
        for buffer, t in zip(static, batch, strict=True):
            buffer.copy_(t, non_blocking=True)
        graph.replay()
        return loss.clone()

    return graph_step
