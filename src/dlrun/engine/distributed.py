"""Data-parallel training under torchrun: one process per device, all in step.

torchrun starts N copies of ``python -m dlrun ...`` and tells each its RANK, LOCAL_RANK and
WORLD_SIZE. Every rank composes the same config, seeds the same RNGs, builds the same data and
model and draws the same per-epoch permutation; each trains on its own slice of that permutation
and DistributedDataParallel averages the gradients, so the ranks keep identical weights. Only
rank 0 writes the run directory.

A run holds one :class:`Strategy` (from :func:`strategy`) and hands it to the loop and the
checkpoint code: :class:`Strategy` is one process, where every method is the trivial case, and
:class:`DataParallel` is torchrun's. The module functions are what the CLI needs before Hydra
runs. Importing this module does not import torch.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from dlrun.errors import DlrunError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dlrun.config.trainer import TrainerConfig


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True in a plain run and on rank 0: the one process that writes the run directory."""
    return rank() == 0


def hydra_overrides(argv: list[str]) -> list[str]:
    """Extra Hydra overrides for this process: none on rank 0.

    Hydra runs on every rank and would give each its own timestamped run directory. Ranks > 0
    get a private temporary directory instead (no .hydra record; removed at exit) and write
    nothing to it: rank 0's directory is the run's.
    """
    if world_size() > 1 and ("-m" in argv or "--multirun" in argv):
        raise DlrunError(
            "-m (multirun) does not run under torchrun: start one torchrun per configuration"
        )
    if is_main():
        return []
    scratch = tempfile.mkdtemp(prefix=f"dlrun-rank{rank()}-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    # two levels down: what tidies an empty run directory's parents stays inside the scratch dir
    return [f"hydra.run.dir={scratch}/rank/{rank()}", "hydra.output_subdir=null"]


class Strategy:
    """One process: it writes the run directory, trains on every example, reduces nothing."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """The one process that shows progress and writes the run directory."""
        return self.rank == 0

    def command(self) -> str:
        """How to start dlrun again the way it runs now (e.g. to resume)."""
        return "dlrun"

    def setup(self, device: torch.device) -> torch.device:
        """This process's device (a data-parallel rank joins its process group here)."""
        return device

    def trainer_settings(self, trainer: TrainerConfig) -> TrainerConfig:
        return trainer

    def check_task(self, name: str, trainable: bool, hand_gradients: bool) -> None:
        """Refuse a task whose training this strategy cannot share out."""

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block before the others (e.g. downloads a data set once)."""
        yield

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model the loop trains."""
        return model

    def shard_size(self, n: int) -> int:
        """This process's examples per epoch."""
        return n

    def shard(
        self, order: torch.Tensor | None, n: int, device: torch.device
    ) -> torch.Tensor | None:
        """This process's slice of an epoch's order (None: 0..n-1 in turn)."""
        return order

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over the processes (every process gets it)."""
        return value

    def agree(self, signum: int | None, device: torch.device) -> int | None:
        """A stop signal seen by any process stops every process at the same epoch."""
        return signum

    def describe(self, model: nn.Module) -> dict[str, Any] | None:
        """For summary.json's "distributed" (None: one process, nothing to record)."""
        return None

    def teardown(self, together: bool = False) -> None:
        """Leave whatever :meth:`setup` joined."""


class DataParallel(Strategy):
    """torchrun's ranks, averaging gradients with DistributedDataParallel (nccl or gloo)."""

    def __init__(self, rank: int, world_size: int, local_rank: int = 0, per_node: int = 0) -> None:
        self.rank, self.world_size = rank, world_size
        self.local_rank, self.per_node = local_rank, per_node or world_size

    def command(self) -> str:
        """Several machines: the same on each, with their rendezvous (--rdzv_endpoint=...)."""
        nodes = self.world_size // self.per_node
        several = f"--nnodes={nodes} " if nodes > 1 else ""
        return f"torchrun {several}--nproc_per_node={self.per_node} -m dlrun"

    def setup(self, device: torch.device) -> torch.device:
        """Join torchrun's process group (nccl on CUDA, gloo on the CPU); returns this rank's
        device. On CUDA each process uses the GPU numbered by its LOCAL_RANK (among those it
        sees)."""
        import torch
        import torch.distributed as dist

        if device.type == "cuda":
            self.check_gpu_count(torch.cuda.device_count())
            # modulo: a launcher may show each process only its own GPU (CUDA_VISIBLE_DEVICES)
            device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
            backend = "nccl"
        elif device.type == "cpu":
            backend = "gloo"
        else:
            raise DlrunError(
                f"device={device.type}: data-parallel training runs on cuda (nccl) or cpu (gloo)"
            )
        if not dist.is_initialized():
            dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        return device

    def check_gpu_count(self, visible: int) -> None:
        """Refuse more processes on this node than GPUs they can see, before the process group
        forms: NCCL cannot put two ranks on one GPU, and would fail later with its own error.
        torchrun's local processes share one environment, so each sees the same GPUs."""
        if os.environ.get("TORCHELASTIC_RUN_ID") is not None and self.per_node > visible:
            raise DlrunError(
                f"torchrun started {self.per_node} processes on this machine but only {visible} "
                f"GPU(s) are visible: use --nproc_per_node={visible} or fewer, "
                "or device=cpu to train the processes on the CPU (gloo)"
            )

    def trainer_settings(self, trainer: TrainerConfig) -> TrainerConfig:
        """The eager train step: DDP averages the gradients in hooks that ``loss.backward()``
        fires, which the fast path's ``torch.autograd.grad``, CUDA graphs and compiled steps
        bypass."""
        return dataclasses.replace(trainer, fast=False, compile=False, cuda_graph=False)

    def check_task(self, name: str, trainable: bool, hand_gradients: bool) -> None:
        if not trainable:
            raise DlrunError(
                f"task {name} has no gradient step to share out: data-parallel training does "
                "not apply, run it in one process (without torchrun)"
            )
        if hand_gradients:
            raise DlrunError(
                "task.impl=scratch fills the gradients by hand, so DistributedDataParallel "
                "cannot average them: use task.impl=torch under torchrun, or run it in one process"
            )

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        import torch.distributed as dist

        if not self.is_main:
            dist.barrier()
        yield
        if self.is_main:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel that still answers the task's attribute look-ups."""
        from torch.nn.parallel import DistributedDataParallel

        class Wrapped(DistributedDataParallel):
            def __getattr__(self, name: str) -> Any:  # e.g. ``model.w`` of a task
                try:
                    return super().__getattr__(name)
                except AttributeError:
                    if name == "module":
                        raise
                    return getattr(self.module, name)

        return Wrapped(model, device_ids=[device.index] if device.type == "cuda" else None)

    def shard_size(self, n: int) -> int:
        """n / world size, rounded up (the permutation is padded)."""
        return -(-n // self.world_size)

    def shard(
        self, order: torch.Tensor | None, n: int, device: torch.device
    ) -> torch.Tensor | None:
        """The order padded by repeating its start to a multiple of the world size (as
        DistributedSampler does), so every rank takes the same number of steps; rank r takes
        positions r, r + N, r + 2N, ... so that batch k of N ranks of batch size B together hold
        exactly batch k of one process with batch size N x B."""
        if n == 0:
            return order
        import torch

        if order is None:
            order = torch.arange(n, device=device)
        total = self.shard_size(n) * self.world_size
        if total > n:
            order = order.repeat(-(-total // n))[:total]
        return order[self.rank :: self.world_size]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total)
        return total / self.world_size

    def agree(self, signum: int | None, device: torch.device) -> int | None:
        import torch
        import torch.distributed as dist

        flag = torch.tensor([signum or 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def describe(self, model: nn.Module) -> dict[str, Any] | None:
        """World size, backend and every rank's weights digest (all must agree)."""
        import torch.distributed as dist

        digests: list[Any] = [None] * self.world_size
        dist.all_gather_object(digests, weights_digest(model.state_dict()))
        return {
            "world_size": self.world_size,
            "backend": dist.get_backend(),
            "weights_sha256": digests,
            "in_sync": len(set(digests)) == 1,
        }

    def teardown(self, together: bool = False) -> None:
        """Together (after a run that ended normally): all ranks at once, since a rank that
        destroys its group while another still talks to it can abort at exit (seen once with
        gloo under load). A failed rank leaves at once: torchrun stops the rest."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            if together:
                dist.barrier()
            dist.destroy_process_group()


def strategy() -> Strategy:
    """This process's strategy, from torchrun's environment (one process without it)."""
    if world_size() == 1:
        return Strategy()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    return DataParallel(rank(), world_size(), int(os.environ.get("LOCAL_RANK", "0")), per_node)


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a model's state, in key order: equal on ranks that hold the same weights."""
    import torch

    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
