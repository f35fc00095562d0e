"""Data-parallel training under torchrun: one process per device, all in step.

torchrun starts N copies of ``python -m dlrun ...`` and tells each its RANK, LOCAL_RANK and
WORLD_SIZE. Every rank composes the same config, seeds the same RNGs, builds the same data and
model and draws the same per-epoch permutation; each trains on its own slice of that permutation
and DistributedDataParallel averages the gradients, so the ranks keep identical weights. Only
rank 0 writes the run directory. In one process every helper here is a no-op.

Importing this module does not import torch (the CLI uses it before Hydra runs).
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

    from dlrun.schema import TrainerConfig


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True in a plain run and on rank 0: the one process that writes the run directory."""
    return rank() == 0


def command() -> str:
    """How to start dlrun again the way it runs now (e.g. to resume)."""
    if world_size() == 1:
        return "dlrun"
    return f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', world_size())} -m dlrun"


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


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (nccl on CUDA, gloo on the CPU); returns this rank's device.

    On CUDA each process uses the GPU numbered by its LOCAL_RANK (among the GPUs it sees).
    """
    if world_size() == 1:
        return device
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        # modulo: a launcher may show each process only its own GPU (CUDA_VISIBLE_DEVICES)
        local = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
        device = torch.device("cuda", local)
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


def teardown(together: bool = False) -> None:
    """Leave the process group; together (after a run that ended normally): all ranks at once,
    since a rank that destroys its group while another still talks to it can abort at exit
    (seen once with gloo under load). A failed rank leaves at once: torchrun stops the rest."""
    if _active():
        import torch.distributed as dist

        if together:
            dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    if world_size() == 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the others (e.g. downloads a data set once)."""
    if not _active():
        yield
        return
    import torch.distributed as dist

    if not is_main():
        dist.barrier()
    yield
    if is_main():
        dist.barrier()


def check_task(name: str, trainable: bool, hand_gradients: bool) -> None:
    """Refuse, under torchrun, a task whose training DDP cannot share out."""
    if world_size() == 1:
        return
    if not trainable:
        raise DlrunError(
            f"task {name} has no gradient step to share out: data-parallel training does not "
            "apply, run it in one process (without torchrun)"
        )
    if hand_gradients:
        raise DlrunError(
            "task.impl=scratch fills the gradients by hand, so DistributedDataParallel cannot "
            "average them: use task.impl=torch under torchrun, or run it in one process"
        )


def trainer_settings(trainer: TrainerConfig) -> TrainerConfig:
    """Under torchrun, the eager train step: DDP averages the gradients in hooks that
    ``loss.backward()`` fires, which the fast path's ``torch.autograd.grad``, CUDA graphs and
    compiled steps bypass."""
    if world_size() == 1:
        return trainer
    return dataclasses.replace(trainer, fast=False, compile=False, cuda_graph=False)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model the loop trains: DistributedDataParallel under torchrun, else the model."""
    if not _active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    class DataParallel(DistributedDataParallel):
        """DDP that still answers the task's attribute look-ups (e.g. ``model.w``)."""

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                if name == "module":
                    raise
                return getattr(self.module, name)

    return DataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# --------------------------------------------------------------------------- the loop's helpers


def shard_size(n: int) -> int:
    """Examples per rank and epoch: n / world size, rounded up (the permutation is padded)."""
    size = world_size() if _active() else 1
    return -(-n // size)


def shard(order: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
    """This rank's slice of an epoch's order (None: 0..n-1 in turn, only in one process).

    The order is padded by repeating its start to a multiple of the world size (as
    DistributedSampler does), so every rank takes the same number of steps; rank r takes
    positions r, r + N, r + 2N, ... so that batch k of N ranks of batch size B together hold
    exactly batch k of one process with batch size N x B.
    """
    if not _active() or n == 0:
        return order
    import torch

    size = world_size()
    if order is None:
        order = torch.arange(n, device=device)
    total = shard_size(n) * size
    if total > n:
        order = order.repeat(-(-total // n))[:total]
    return order[rank() :: size]


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a 0-dim tensor over the ranks (every rank gets it)."""
    if not _active():
        return value
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def agree(signum: int | None, device: torch.device) -> int | None:
    """A stop signal seen by any rank stops every rank at the same epoch."""
    if not _active():
        return signum
    import torch
    import torch.distributed as dist

    flag = torch.tensor([signum or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a model's state, in key order: equal on ranks that hold the same weights."""
    import torch

    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe(model: nn.Module) -> dict[str, Any] | None:
    """For summary.json: world size, backend and every rank's weights digest (all must agree)."""
    if not _active():
        return None
    import torch.distributed as dist

    digests: list[Any] = [None] * world_size()
    dist.all_gather_object(digests, weights_digest(model.state_dict()))
    return {
        "world_size": world_size(),
        "backend": dist.get_backend(),
        "weights_sha256": digests,
        "in_sync": len(set(digests)) == 1,
    }
