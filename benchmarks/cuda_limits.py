"""The limits bench.py reports its CUDA cases against, measured in the same invocation.

- an MLP's epoch: a hand-written loop that replays the whole step (the batch gather, forward,
  loss, backward and the fused capturable optimizer) from one CUDA graph per batch: what the
  launch-bound step costs when nothing but the GPU's work is left;
- k-means: the device's float32 matrix-product throughput and memory bandwidth, so that an
  iteration's floor is the larger of its product's time and the time to read its points.

Only runs with CUDA; imported by bench.py when ``--device`` is a CUDA device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

_device_limits: dict[str, float] = {}
MakeOpt = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def _timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """The best of ``repeat`` CUDA-event timings of ``fn`` (seconds), after one warm-up."""
    fn()
    best = math.inf
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


def device_limits(device: torch.device, quick: bool = False) -> dict[str, float]:
    """float32 matrix-product TFLOP/s (TF32 as torch's default leaves it: off) and memory
    bandwidth in GB/s (a device-to-device copy: each byte read once and written once)."""
    if _device_limits:
        return _device_limits
    size = 4096 if quick else 8192
    a = torch.randn(size, size, device=device)
    out = torch.empty_like(a)
    product = _timed(lambda: torch.matmul(a, a, out=out))
    n = (2**26 if quick else 2**28) // 4  # 256 MB (1 GB) of float32
    src, dst = torch.empty(n, device=device), torch.empty(n, device=device)
    copy = _timed(lambda: dst.copy_(src))
    _device_limits.update(
        matmul_tflops=round(2 * size**3 / product / 1e12, 1),
        bandwidth_gbs=round(2 * n * 4 / copy / 1e9, 1),
        name=torch.cuda.get_device_name(device),  # type: ignore[dict-item]
    )
    return _device_limits


def kmeans_floor_s(n: int, d: int, k: int, limits: dict[str, float]) -> dict[str, float]:
    """An iteration's floor: its (points, centres) product at the matmul throughput, and its
    two reads of the points (the product, the cluster sums) at the memory bandwidth."""
    product = 2 * n * d * k / (limits["matmul_tflops"] * 1e12)
    read = 2 * n * d * 4 / (limits["bandwidth_gbs"] * 1e9)
    return {"matmul_s": product, "read_s": read, "floor_s": max(product, read)}


def graph_loop_s_per_epoch(
    model: nn.Module,
    make_opt: MakeOpt,  # a fused, capturable optimizer
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    epochs: int,
    seed: int = 0,
) -> list[float]:
    """Seconds per epoch of the hand-written graph loop: a permutation per epoch on the device,
    then each full batch's indices copied into a static buffer and one graph replayed (the
    gather inside it). The last partial batch is left out: this is the floor, not a run."""
    device = x.device
    opt = make_opt(model.parameters())
    idx = torch.arange(batch, device=device)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
        loss.backward()
        opt.step()
        return loss.detach()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # the optimizer's state, cuBLAS's workspaces
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    full = len(x) // batch * batch
    times = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        order = torch.randperm(len(x), generator=g, device=device)[:full]
        for part in order.split(batch):
            idx.copy_(part)
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    assert torch.isfinite(loss).all()
    return times


def adam(lr: float) -> MakeOpt:
    return lambda params: torch.optim.Adam(params, lr=lr, fused=True, capturable=True)


def sgd(lr: float) -> MakeOpt:
    return lambda params: torch.optim.SGD(params, lr=lr, fused=True)


def mlp_limit(
    model: nn.Module,
    make_opt: MakeOpt,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    dlrun_s: float,
) -> dict[str, float]:
    """The graph loop's median seconds per epoch (over 3 epochs) and dlrun's time over it."""
    times = sorted(graph_loop_s_per_epoch(model, make_opt, x, y, batch, 3))
    return {"graph_loop_s_per_epoch": round(times[1], 5), "dlrun_vs_graph_loop": dlrun_s / times[1]}
