"""The train step the loop calls once per batch, built once per run.

For the small models dlrun trains, a step costs little arithmetic and a lot of per-op overhead:
``optimizer.step()`` walks param groups, hooks and per-tensor Python; ``zero_grad`` frees and
re-allocates every gradient; indexing each batch is one more gather per step. The fast path
(``trainer.fast``, on by default):

- takes the gradients with ``torch.autograd.grad`` (nothing to zero, nothing accumulated),
- updates the parameters with the fused kernels that ``torch.optim`` itself uses with
  ``fused=True`` (SGD, Adam, AdamW), called directly on the optimizer's own state, so checkpoints
  and resume are unchanged; other optimizers call their (foreach) ``step()``,
- gathers the epoch's shuffled data once and slices batches out of it,
- on the CPU, trains a small MLP with a shared criterion in NumPy instead of per-op dispatch
  (``trainer.mlp_kernel``, src/dlrun/mlp_kernel.py), updating through the same fused kernels.

On top of it, opt-in: ``trainer.compile`` (torch.compile of the loss), ``trainer.precision=bf16``
(autocast, CUDA only) and ``trainer.cuda_graph`` (the whole step captured in one CUDA graph with
static batch buffers; anything that cannot be captured falls back to the fast eager step with a
line in the run log). ``trainer.fast=false`` is the textbook step: zero_grad, backward, step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch

from dlrun import mlp_kernel, optim
from dlrun.errors import DlrunError

if TYPE_CHECKING:
    from torch import nn

    from dlrun.schema import TrainerConfig
    from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")

Batch = tuple[torch.Tensor, ...]
Step = Callable[[Batch], torch.Tensor]


def check(trainer: TrainerConfig, device: torch.device) -> None:
    """Refuse options this device cannot honour, before any work starts."""
    if trainer.precision == "bf16" and device.type != "cuda":
        raise DlrunError(
            f"trainer.precision=bf16 needs a CUDA device (this run is on {device.type}); "
            "use trainer.precision=fp32 or device=cuda"
        )


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


# --------------------------------------------------------------------------- updates


def _direct_update(
    optimizer: torch.optim.Optimizer,
) -> Callable[[list[torch.Tensor], list[torch.Tensor]], None] | None:
    """The fused update of SGD, Adam or AdamW on the optimizer's own state (None: another one).

    The same kernels and state keys as ``torch.optim`` with ``fused=True``, without its per-step
    bookkeeping.
    """
    kind = optim.fused_kind(optimizer)
    group = optimizer.param_groups[0]

    if kind is torch.optim.SGD:

        def sgd(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
            momentum = group["momentum"]
            buffers, first = (
                optim.momentum_buffers(optimizer, params) if momentum != 0 else ([], False)
            )
            torch._fused_sgd_(
                params,
                grads,
                buffers,
                weight_decay=group["weight_decay"],
                momentum=momentum,
                lr=group["lr"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=False,
                is_first_step=first,
            )

        return sgd

    if kind in (torch.optim.Adam, torch.optim.AdamW):
        fused = torch._fused_adamw_ if kind is torch.optim.AdamW else torch._fused_adam_
        if kind is torch.optim.Adam and group.get("decoupled_weight_decay"):
            fused = torch._fused_adamw_

        def adam(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
            amsgrad = group["amsgrad"]
            states = optim.adam_states(optimizer, params)
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            fused(
                params,
                grads,
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=amsgrad,
                maximize=False,
            )

        return adam
    return None


# --------------------------------------------------------------------------- steps


def build(
    task: Task, model: nn.Module, optimizer: torch.optim.Optimizer | None, trainer: TrainerConfig
) -> Step:
    """The step for this run: train on one batch, return its loss (detached, on the device)."""
    if not task.uses_optimizer or optimizer is None:

        def no_grad_step(batch: Batch) -> torch.Tensor:
            with torch.no_grad():
                return task.loss(model, batch)

        if trainer.cuda_graph:
            log.info("trainer.cuda_graph: this task trains without an optimizer; running eager")
        return no_grad_step

    loss_fn: Callable[[Batch], torch.Tensor] = lambda batch: task.loss(model, batch)  # noqa: E731
    if trainer.compile:
        loss_fn = torch.compile(loss_fn)
    if trainer.precision == "bf16":
        inner = loss_fn

        def loss_fn(batch: Batch) -> torch.Tensor:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                return inner(batch).float()

    by_hand = task.hand_gradients  # loss() fills every .grad itself: no autograd
    if not trainer.fast or by_hand:
        if by_hand and (trainer.cuda_graph or trainer.compile):
            log.info("trainer.cuda_graph/compile: this task's gradients are by hand; running eager")

        def eager_step(batch: Batch) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(model, batch) if by_hand else loss_fn(batch)
            if not by_hand:
                loss.backward()
            optimizer.step()
            return loss.detach()

        return eager_step

    update = _direct_update(optimizer)
    kernel = mlp_kernel.build(task, model, optimizer, trainer, update)
    if kernel is not None:
        if trainer.cuda_graph:
            log.info("trainer.cuda_graph: device %s is not CUDA; running eager", task.device)
        return kernel

    params = [p for group in optimizer.param_groups for p in group["params"]]

    def fast_step(batch: Batch) -> torch.Tensor:
        loss = loss_fn(batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        if update is None:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
        else:
            used = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
            if used:
                with torch.no_grad():
                    update([p for p, _ in used], [g for _, g in used])
        return loss.detach()

    if trainer.cuda_graph:
        return _graphed(task, model, optimizer, trainer, fast_step, update is not None)
    return fast_step


def _graphed(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer: TrainerConfig,
    step: Step,
    direct: bool,
) -> Step:
    """``step`` replayed from CUDA graphs, one per batch size (the last batch may be smaller).

    Each graph reads its batch from static buffers that every call copies into. The run's first
    step is eager (it creates the optimizer state); capturing then needs a few warm-up steps, after
    which the model and optimizer state are restored, so the run trains exactly the steps the
    loop asks for. Anything that fails falls back to ``step``.
    """
    if task.device.type != "cuda":
        log.info("trainer.cuda_graph: device %s is not CUDA; running eager", task.device)
        return step
    if not direct:
        log.info(
            "trainer.cuda_graph: %s cannot be captured (SGD, Adam and AdamW can); running eager",
            type(optimizer).__name__,
        )
        return step
    if trainer.compile:
        log.info("trainer.cuda_graph: not combined with trainer.compile; running eager")
        return step

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
                log.info("trainer.cuda_graph: capture failed (%s); running eager", exc)
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize()
                return step(batch)
        graph, static, loss = graphs[shape]
        for buffer, t in zip(static, batch, strict=True):
            buffer.copy_(t, non_blocking=True)
        graph.replay()
        return loss.clone()

    return graph_step
