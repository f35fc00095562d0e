"""dlrun's loop against hand-written loops, measured side by side in one run.

    python benchmarks/bench.py                  # every case on the CPU, full sizes
    python benchmarks/bench.py --device cuda    # the same on a GPU
    python benchmarks/bench.py --quick          # smaller sizes: a check that it all runs

Prints one JSON line per case. Training cases: seconds per epoch of dlrun (the real `dlrun`
command, timed from its metrics.jsonl, so start-up is excluded), of (a) a plain loop over tensors
preloaded on the device, and of (b) the tutorial's DataLoader loop with a per-sample transform;
same model, optimizer, batch size and seed; the accuracy each reaches; and the ratios. dlrun also
runs once with trainer.mlp_kernel=false ("dlrun_autograd": its autograd step). flop_limit: the
machine's float32 matrix-product throughput on one thread and on all, measured in the same
invocation; each training case reports ``vs_flop_limit``, its times over the time its FLOPs take
at that throughput (one thread for the small MLPs, as dlrun trains them; all for k-means). kmeans:
dlrun's Lloyd iteration against scikit-learn's KMeans (lloyd) from the same initial centres,
with both inertias. On CUDA (cuda_limits.py) the MLPs are also timed against a hand-written loop
replaying the whole step from one CUDA graph, mnist-mlp also without the graph and in bf16, and
k-means against the device's matmul throughput and memory bandwidth, all in the same invocation.
start-up: wall seconds of a few commands. fizzbuzz_fast: the experiment preset at seeds 0 to 4.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cuda_limits beside this file
import cuda_limits  # noqa: E402 - only its CUDA code needs a GPU, and only with --device cuda

DLRUN = [sys.executable, "-m", "dlrun"]


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def dlrun(workdir: Path, name: str, *args: str) -> tuple[list[dict], dict]:
    """Run the real command; its metrics rows and summary."""
    run_dir = workdir / name
    cmd = [
        *DLRUN,
        *args,
        "trainer.plots=false",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows, json.loads((run_dir / "summary.json").read_text())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def threads(args, device: torch.device):
    """The hand-written loops on as many CPU threads as dlrun gives these small models."""
    before = torch.get_num_threads()
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


# --------------------------------------------------------------------------- the FLOP limit

_limits: dict[str, float] = {}


def sgemm_gflops(quick: bool = False) -> dict[str, float]:
    """This machine's float32 matrix-product throughput (GFLOP/s), on one thread and on all,
    measured once per invocation: the best of NumPy's and torch's BLAS on square products large
    enough to run at their peak (best of 5, so a busy moment costs little)."""
    if _limits:
        return _limits
    from threadpoolctl import threadpool_limits

    size = 1024 if quick else 2048
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    t = torch.from_numpy(a)
    before = torch.get_num_threads()
    for name, count in (("1_thread", 1), ("all_threads", os.cpu_count() or 1)):
        torch.set_num_threads(count)
        best = math.inf
        with threadpool_limits(count, user_api="blas"):
            for product in (lambda: a @ a, lambda: t @ t):
                product()  # warm-up: the BLAS's buffers and threads
                for _ in range(5):
                    start = time.perf_counter()
                    product()
                    best = min(best, time.perf_counter() - start)
        _limits[name] = round(2 * size**3 / best / 1e9, 1)
    torch.set_num_threads(before)
    return _limits


def vs_limit(seconds: dict[str, float], gflop: float, threads: str, quick: bool) -> dict:
    """Each time over the time its FLOPs take at the machine's sgemm throughput."""
    floor = gflop / sgemm_gflops(quick)[threads]
    return {name: round(s / floor, 2) for name, s in seconds.items()}


def mlp_gflop(sizes: list[int], samples: int) -> float:
    """A step's forward and backward: 6 FLOPs per weight per sample (2 forward, 4 backward)."""
    weights = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    return 6 * weights * samples / 1e9


def case_flop_limit(args, device: torch.device, work: Path) -> None:
    emit(
        {
            "case": "flop_limit",
            "sgemm_gflops": sgemm_gflops(args.quick),
            "cpu_count": os.cpu_count(),
            "cpu": _cpu_name(),
        }
    )


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


# --------------------------------------------------------------------------- the loops


def mlp(sizes: list[int]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def plain_loop(model, opt, x, y, batch, epochs, seed, device) -> list[float]:
    """(a) tensors on the device, a permutation per epoch, index batches, eager steps."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    times = []
    for _ in range(epochs):
        sync(device)
        t = time.perf_counter()
        order = torch.randperm(len(x), generator=g, device=device)
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def dataloader_loop(model, opt, loader, epochs, device) -> list[float]:
    """(b) the tutorial's loop: a DataLoader drawing samples one by one through a transform."""
    times = []
    for _ in range(epochs):
        sync(device)
        t = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


@torch.no_grad()
def accuracy(model, x, y) -> float:
    return float((model(x).argmax(1) == y).float().mean())


class PerSample(torch.utils.data.Dataset):
    """uint8 images (or any rows) served one at a time through a transform, as the tutorial."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), int(self.y[i])


# --------------------------------------------------------------------------- cases


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def mnist_data(root: Path | None, work: Path, train_n: int) -> tuple[Path, str]:
    """MNIST's IDX files from root when present, else generated learnable ones of that shape."""
    if root is not None and (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        if train_n >= 60000:
            return root, "MNIST"
        from dlrun.tasks.mnist import MNISTDataConfig
        from dlrun.tasks.mnist.task import load

        data = MNISTDataConfig(root=str(root), download=False)
        (xtr, ytr), (xte, yte) = load(data, "train"), load(data, "test")
        arrays = xtr.numpy()[:train_n], ytr.numpy()[:train_n], xte.numpy(), yte.numpy()
        kind = f"MNIST (first {train_n} training images)"
    else:
        rng = np.random.default_rng(0)
        protos = rng.integers(0, 256, (10, 28, 28))

        def make(n: int) -> tuple[np.ndarray, np.ndarray]:
            y = rng.integers(0, 10, n)
            noise = rng.normal(0, 90, (n, 28, 28))
            return np.clip(protos[y] + noise, 0, 255).astype(np.uint8), y.astype(np.uint8)

        (xtr, ytr), (xte, yte) = make(train_n), make(10000)
        arrays = xtr, ytr, xte, yte
        kind = f"generated, MNIST's shape ({train_n} training images)"
    raw = work / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    names += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name, array in zip(names, arrays, strict=True):
        write_idx(raw / name, array)
    return work / "mnist", kind


def case_mnist(args, device: torch.device, work: Path) -> None:
    from dlrun.tasks.mnist import MNISTDataConfig
    from dlrun.tasks.mnist.task import load

    train_n = 10000 if args.quick else 60000
    epochs = 1 if args.quick else args.mnist_epochs
    root, kind = mnist_data(args.data_root, work, train_n)
    common = (
        "task=mnist-mlp",
        f"data.root={root}",
        "data.download=false",
        f"trainer.epochs={epochs}",
        "trainer.checkpoint_every=0",
        f"device={device}",
        "seed=0",
    )
    rows, _ = dlrun(work, "mnist", *common)
    d_times = [r["time_s"] for r in rows if r["split"] == "train"]
    d_acc = [r["accuracy"] for r in rows if r["split"] == "val"][-1]
    # dlrun's own step with the MLP kernel off: autograd and the fused update
    rows, _ = dlrun(work, "mnist_autograd", *common, "trainer.mlp_kernel=false")
    a_time = statistics.median(r["time_s"] for r in rows if r["split"] == "train")
    a_acc = [r["accuracy"] for r in rows if r["split"] == "val"][-1]

    data = MNISTDataConfig(root=str(root), download=False)
    (xtr, ytr), (xte, yte) = load(data, "train"), load(data, "test")
    with threads(args, device):
        baselines_mnist = _mnist_baselines(xtr, ytr, xte, yte, epochs, device)
    p_times, p_acc, l_times, l_acc, l_epochs = baselines_mnist

    d, p, dl = statistics.median(d_times), statistics.median(p_times), statistics.median(l_times)
    extra = {}
    if device.type == "cuda":  # the step kinds side by side, against the hand-written graph loop
        from dlrun.tasks.mnist.task import normalise

        for name, setting in (
            ("no_graph", "trainer.cuda_graph=false"),
            ("bf16", "trainer.precision=bf16"),
        ):
            rows, _ = dlrun(work, f"mnist_{name}", *common, setting)
            extra[f"dlrun_{name}_s_per_epoch"] = statistics.median(
                r["time_s"] for r in rows if r["split"] == "train"
            )
        torch.manual_seed(0)
        x, y = normalise(xtr).to(device), ytr.to(device)
        extra |= cuda_limits.mlp_limit(
            mlp([784, 128, 10]).to(device), cuda_limits.adam(1e-3), x, y, 64, d
        )
    emit(
        {
            **extra,
            "case": "mnist-mlp",
            "device": str(device),
            "data": kind,
            "epochs": {"dlrun": epochs, "plain": epochs, "dataloader": l_epochs},
            "s_per_epoch": {
                "dlrun": round(d, 4),
                "dlrun_autograd": round(a_time, 4),
                "plain": round(p, 4),
                "dataloader": round(dl, 4),
            },
            "accuracy": {
                "dlrun": d_acc,
                "dlrun_autograd": a_acc,
                "plain": round(p_acc, 4),
                "dataloader": round(l_acc, 4),
            },
            "dlrun_vs_plain": ratio(d, p),
            "dataloader_vs_dlrun": ratio(dl, d),
            "gflop_per_epoch": round(mlp_gflop([784, 128, 10], train_n), 2),
            "vs_flop_limit": vs_limit(
                {"dlrun": d, "dlrun_autograd": a_time, "plain": p, "dataloader": dl},
                mlp_gflop([784, 128, 10], train_n),
                "1_thread",  # dlrun and the loops train this small model on one thread
                args.quick,
            ),
        }
    )


def _mnist_baselines(xtr, ytr, xte, yte, epochs, device):
    from dlrun.tasks.mnist.task import normalise

    x, y = normalise(xtr).to(device), ytr.to(device)
    tx, ty = normalise(xte).to(device), yte.to(device)
    torch.manual_seed(0)
    model = mlp([784, 128, 10]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    p_times = plain_loop(model, opt, x, y, 64, epochs, 0, device)
    p_acc = accuracy(model, tx, ty)

    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    dataset = PerSample(xtr.numpy(), ytr.numpy(), transform)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    model = mlp([784, 128, 10]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    l_epochs = 1
    l_times = dataloader_loop(model, opt, loader, l_epochs, device)
    l_acc = accuracy(model, tx, ty)
    return p_times, p_acc, l_times, l_acc, l_epochs


def case_fizzbuzz(args, device: torch.device, work: Path) -> None:
    epochs = 1000 if args.quick else 10000
    common = ("task=fizzbuzz", f"trainer.epochs={epochs}", f"device={device}")
    _, summary = dlrun(work, "fizzbuzz", *common)
    d_total = summary["wall_s"]  # after start-up; validation and checkpoints included
    # dlrun's own step with the MLP kernel off: autograd and the fused update
    _, autograd = dlrun(work, "fizzbuzz_autograd", *common, "trainer.mlp_kernel=false")
    a_total = autograd["wall_s"]

    from dlrun.tasks.fizzbuzz.task import binary, classes

    def encode(n: torch.Tensor) -> torch.Tensor:
        return 2 * binary(n, 10) - 1

    numbers = torch.arange(101, 1024)
    x, y = encode(numbers).to(device), classes(numbers).to(device)
    play = torch.arange(1, 101)
    px, py = encode(play).to(device), classes(play).to(device)

    with threads(args, device):
        p_total, p_correct, l_total, l_epochs = _fizzbuzz_baselines(x, y, px, py, epochs, device)
    gflop = mlp_gflop([10, 100, 4], len(x)) * epochs  # every training number once an epoch
    extra = {}
    if device.type == "cuda":  # against the hand-written graph loop, per epoch
        torch.manual_seed(0)
        extra = cuda_limits.mlp_limit(
            mlp([10, 100, 4]).to(device), cuda_limits.sgd(0.05), x, y, 128, d_total / epochs
        )
    emit(
        {
            **extra,
            "case": "fizzbuzz",
            "device": str(device),
            "epochs": epochs,
            "train_s": {
                "dlrun": round(d_total, 2),
                "dlrun_autograd": round(a_total, 2),
                "plain": round(p_total, 2),
                "dataloader": round(l_total, 2),
            },
            "s_per_epoch": {
                "dlrun": round(d_total / epochs, 6),
                "dlrun_autograd": round(a_total / epochs, 6),
                "plain": round(p_total / epochs, 6),
                "dataloader": round(l_total / epochs, 6),
            },
            "correct_of_100": {
                "dlrun": summary["final"]["correct"],
                "dlrun_autograd": autograd["final"]["correct"],
                "plain": p_correct,
            },
            "dataloader_epochs_timed": l_epochs,
            "dlrun_vs_plain": ratio(d_total, p_total),
            "dataloader_vs_dlrun": ratio(l_total, d_total),
            "gflop": round(gflop, 1),
            "vs_flop_limit": vs_limit(
                {
                    "dlrun": d_total,
                    "dlrun_autograd": a_total,
                    "plain": p_total,
                    "dataloader": l_total,
                },
                gflop,
                "1_thread",
                args.quick,
            ),
        }
    )


def _fizzbuzz_baselines(x, y, px, py, epochs, device):
    torch.manual_seed(0)
    model = mlp([10, 100, 4]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    p_total = sum(plain_loop(model, opt, x, y, 128, epochs, 0, device))
    p_correct = round(100 * accuracy(model, px, py))

    l_epochs = max(1, epochs // 10)  # the slowest loop: a tenth of the epochs, scaled up
    torch.manual_seed(0)
    dataset = PerSample(x.cpu(), y.cpu(), lambda row: row)
    loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True)
    model = mlp([10, 100, 4]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    l_total = sum(dataloader_loop(model, opt, loader, l_epochs, device)) * epochs / l_epochs
    return p_total, p_correct, l_total, l_epochs


def case_kmeans(args, device: torch.device, work: Path) -> None:
    from sklearn.cluster import KMeans as SKKMeans

    from dlrun.runs.setup import seed_everything
    from dlrun.tasks.kmeans import KMeansConfig, KMeansDataConfig
    from dlrun.tasks.kmeans import task as kmeans

    n, d, k = (100_000, 16, 20) if args.quick else (args.kmeans_n, args.kmeans_d, args.kmeans_k)
    iters = args.kmeans_iters
    rng = np.random.default_rng(0)
    points = rng.random((n, d), dtype=np.float32)
    path = work / "points.npy"
    np.save(path, points)
    task_args = (f"task.k={k}", "task.init=random", "task.tol=0", f"task.max_iter={iters}")
    rows, summary = dlrun(
        work,
        "kmeans",
        "task=kmeans",
        f"data.path={path}",
        *task_args,
        f"trainer.validate_every={iters}",
        "trainer.checkpoint_every=0",
        f"device={device}",
        "seed=0",
    )
    per_iter = statistics.median(r["time_s"] for r in rows if r["split"] == "train")

    # the centres that run started from: the same seed, the same task construction
    seed_everything(0)
    cfg = KMeansConfig(k=k, init="random", tol=0.0, max_iter=iters)
    task = kmeans.KMeans(cfg, KMeansDataConfig(path=str(path)), torch.device("cpu"))
    start = task.build_model().centers.numpy().astype(np.float64)
    sk = math.inf  # this machine's noise: scikit-learn's best of 3 fits (dlrun: the median)
    for _ in range(3):
        oracle = SKKMeans(k, init=start, n_init=1, algorithm="lloyd", tol=0.0, max_iter=iters)
        t = time.perf_counter()
        oracle.fit(points)
        sk = min(sk, (time.perf_counter() - t) / oracle.n_iter_)
    extra = {}
    if device.type == "cuda":  # the device's own floor for this iteration
        limits = cuda_limits.device_limits(device, args.quick)
        floor = cuda_limits.kmeans_floor_s(n, d, k, limits)
        extra = {
            "device_limits": limits,
            **floor,
            "dlrun_vs_floor": ratio(per_iter, floor["floor_s"]),
        }
    emit(
        {
            **extra,
            "case": "kmeans",
            "device": str(device),
            "points": [n, d],
            "k": k,
            "iterations": {"dlrun": summary["epochs_completed"], "sklearn": int(oracle.n_iter_)},
            "s_per_iter": {"dlrun": round(per_iter, 4), "sklearn": round(sk, 4)},
            "inertia": {"dlrun": summary["final"]["inertia"], "sklearn": float(oracle.inertia_)},
            "inertia_rel_diff": abs(summary["final"]["inertia"] / oracle.inertia_ - 1),
            "dlrun_vs_sklearn": ratio(per_iter, sk),
            "gflop_per_iter": round(2 * n * d * k / 1e9, 2),  # the (points, centres) product
            "vs_flop_limit": vs_limit(
                {"dlrun": per_iter, "sklearn": sk}, 2 * n * d * k / 1e9, "all_threads", args.quick
            ),
        }
    )


def wall(cmd: list[str], cwd: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return round(best, 3)


def case_startup(args, device: torch.device, work: Path) -> None:
    repeat = 1 if args.quick else 3
    torch_s = wall([sys.executable, "-c", "import torch"], work, repeat)
    run_s = wall([*DLRUN, "task=fizzbuzz", "trainer.epochs=1", f"device={device}"], work, repeat)
    emit(
        {
            "case": "startup",
            "best_of": repeat,
            "wall_s": {
                "import_torch": torch_s,
                "dlrun_fizzbuzz_1_epoch": run_s,
                "dlrun_help": wall([*DLRUN, "--help"], work, repeat),
                "dlrun_config_error": wall([*DLRUN, "trainer.epochz=1"], work, repeat),
            },
            "run_minus_import_torch_s": round(run_s - torch_s, 3),
        }
    )


def case_fizzbuzz_fast(args, device: torch.device, work: Path) -> None:
    seeds = range(2 if args.quick else 5)
    results = {}
    for seed in seeds:
        _, summary = dlrun(
            work, f"fast{seed}", "+experiment=fizzbuzz_fast", f"seed={seed}", f"device={device}"
        )
        results[seed] = {"correct": summary["final"]["correct"], "run_s": summary["wall_s"]}
    emit({"case": "fizzbuzz_fast", "device": str(device), "seeds": results})


CASES = {
    "flop_limit": case_flop_limit,
    "startup": case_startup,
    "fizzbuzz": case_fizzbuzz,
    "mnist-mlp": case_mnist,
    "kmeans": case_kmeans,
    "fizzbuzz_fast": case_fizzbuzz_fast,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--quick", action="store_true", help="small sizes (a check it runs)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--data-root", type=Path, default=os.environ.get("DLRUN_DATA"))
    parser.add_argument("--mnist-epochs", type=int, default=2)
    parser.add_argument("--kmeans-n", type=int, default=1_000_000)
    parser.add_argument("--kmeans-d", type=int, default=64)
    parser.add_argument("--kmeans-k", type=int, default=100)
    parser.add_argument("--kmeans-iters", type=int, default=10)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of the hand-written loops (dlrun picks 1 for these small models)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="dlrun-bench-") as tmp:
        for name in args.cases:
            CASES[name](args, device, Path(tmp))


if __name__ == "__main__":
    main()
