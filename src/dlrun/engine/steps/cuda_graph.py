"""The fused step replayed from CUDA graphs (``trainer.cuda_graph``): one launch per step
instead of one per op. At a small batch a CUDA step is launch-bound (about a millisecond of
CPU issuing kernels for microseconds of GPU work), so this is the default on CUDA wherever the
step allows it (:func:`choose`)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import nn

    from dlrun.engine.steps.batches import Batch, Step

log = logging.getLogger("dlrun")


@dataclass(frozen=True)
class Facts:
    """What decides whether a run's step can be one CUDA graph: plain values, so that every
    branch of :func:`choose` is tested on any machine."""

    device: str  # the device type: cuda, cpu, mps
    optimizer: str | None  # the optimizer's class name; None: the task trains without one
    direct: bool  # its fused kernel updates the weights without step() (SGD, Adam, AdamW)
    hand_gradients: bool = False  # the task's loss() fills .grad itself
    accumulate: int = 1
    fast: bool = True
    compile: bool = False
    schedule: str | None = None  # the scheduler's kind; None: a constant learning rate


def why_not(facts: Facts) -> str | None:
    """Why this run's step cannot be replayed from a graph and stay exact (None: it can)."""
    if facts.device != "cuda":
        return f"device {facts.device} is not CUDA"
    if facts.optimizer is None:
        return "this task trains without an optimizer"
    if facts.hand_gradients:
        return "this task's gradients are by hand"
    if facts.accumulate > 1:
        return f"trainer.accumulate={facts.accumulate}"
    if not facts.fast:
        return "trainer.fast=false"
    if not facts.direct:
        return f"{facts.optimizer} cannot be captured (SGD, Adam and AdamW can)"
    if facts.compile:
        return "not combined with trainer.compile"
    if facts.schedule is not None:
        # a captured kernel holds the learning rate it was captured with
        return f"scheduler={facts.schedule} changes the learning rate between steps"
    return None


def choose(setting: bool | None, facts: Facts) -> tuple[bool, str | None]:
    """Whether to replay the step from a graph, and why not (None: no line for the log).

    ``setting`` is ``trainer.cuda_graph``: false never; true wherever the step allows, a line
    where it does not; null (the default) the same on CUDA, where the graph is the fastest
    exact step (one launch instead of one per op), and no line off CUDA.
    """
    if setting is False:
        return False, None
    reason = why_not(facts)
    if reason is None:
        return True, None
    if setting is None and facts.device != "cuda":
        return False, None
    return False, reason


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
