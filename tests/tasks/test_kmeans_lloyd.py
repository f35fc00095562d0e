"""The Lloyd passes (tasks/kmeans/lloyd.py): the CPU sweep against a brute-force oracle, the
GPU's sync-free pass run on the CPU against the CPU's own and scikit-learn's, and on CUDA."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrun.tasks.kmeans import KMeansConfig, KMeansDataConfig, lloyd
from dlrun.tasks.kmeans import task as kmeans


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_labels_counts_and_sums_match_brute_force(
    monkeypatch: pytest.MonkeyPatch, dtype: type, threads: int
) -> None:
    monkeypatch.setattr(lloyd, "CHUNK", 7 * 50)  # chunks of 50 rows: parts and tails uneven
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1013, 5)).astype(dtype)
    centers = x[rng.choice(len(x), 7, replace=False)].copy()
    labels, counts, sums = lloyd.lloyd_sums(x, centers, threads)

    xt, ct = torch.from_numpy(x).double(), torch.from_numpy(centers).double()
    want = torch.cdist(xt, ct).argmin(1).numpy()
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(counts, np.bincount(want, minlength=7))
    exact = torch.zeros(7, 5, dtype=torch.float64).index_add_(0, torch.from_numpy(want), xt)
    assert sums.dtype == dtype
    np.testing.assert_allclose(
        sums, exact.numpy(), rtol=0, atol=1e-4 if dtype == np.float32 else 1e-10
    )


def test_ties_go_to_the_first_centre_and_threads_agree() -> None:
    x = np.repeat(np.arange(4, dtype=np.float32)[:, None], 3, axis=1)  # on the line t * (1, 1, 1)
    x = np.tile(x, (300, 1))
    centers = np.array([[0.5] * 3, [1.5] * 3, [-0.5] * 3, [2.5] * 3], dtype=np.float32)
    one = lloyd.lloyd_sums(x, centers, 1)
    two = lloyd.lloyd_sums(x, centers, 2)
    # 0 is as far from centres 0 and 2; 1 from 0 and 1; 2 from 1 and 3; 3 is nearest centre 3
    np.testing.assert_array_equal(one[0][:4], [0, 0, 1, 3])
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_chunks_are_cache_sized_on_the_cpu_and_large_on_a_gpu() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert kmeans.chunk_rows(cpu, 100, 64) == kmeans.CHUNK // 100
    assert kmeans.chunk_rows(gpu, 100, 64) * 100 * 4 <= kmeans.DEVICE_CHUNK_BYTES
    assert kmeans.chunk_rows(gpu, 100, 64) >= 500_000  # 1M x 64, k=100: two chunks


def test_one_large_chunk_gives_the_same_bits_as_small_ones() -> None:
    torch.manual_seed(0)
    x, centers = torch.randn(5000, 16), torch.randn(40, 16)
    x_sq = (x * x).sum(1)
    small = kmeans.assign(x, centers, x_sq, rows=97)
    whole = kmeans.assign(x, centers, x_sq, rows=len(x))
    assert torch.equal(small[1], whole[1]) and torch.equal(small[0], whole[0])  # type: ignore[arg-type]


CPU = torch.device("cpu")


def test_an_iteration_reads_the_points_in_place_without_a_copy(dlrun, monkeypatch) -> None:
    """All the points are one batch: the loop draws no order for it, so no epoch copies the
    data (an index_select of 19 MB here, 256 MB at 1M x 64), even with trainer.shuffle=true."""
    seen, real = [], kmeans.KMeans.loss

    def loss(
        self: kmeans.KMeans, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        seen.append(batch[0].data_ptr() == self.train_data[0].data_ptr())
        return real(self, model, batch)

    monkeypatch.setattr(kmeans.KMeans, "loss", loss)
    r = dlrun(
        "task=kmeans",
        "data.kind=blobs",
        "data.n=300000",
        "data.d=16",
        "trainer.epochs=3",
        "trainer.shuffle=true",  # its config says false; one batch has no order either way
        "trainer.plots=false",
        "device=cpu",
    )
    assert r.code == 0, r.err
    assert seen and all(seen)


def test_the_gpu_pass_on_the_cpu_gives_the_cpu_pass_and_scikit_learns_inertia(
    tmp_path: Path,
) -> None:
    """The sync-free pass (the GPU's) run on the CPU, iteration by iteration, against the CPU's
    one-sweep pass and scikit-learn from the same start: the same centres and inertia."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs

    points, _ = make_blobs(3000, 5, centers=6, cluster_std=2.0, random_state=4)
    points = points.astype(np.float32)
    np.save(tmp_path / "p.npy", points)
    task = kmeans.KMeans(
        KMeansConfig(k=6, tol=0.0), KMeansDataConfig(path=str(tmp_path / "p.npy")), CPU
    )
    start = task.xc[:6] + task.offset
    cpu, dev = (kmeans.KMeansModel(start, len(points)) for _ in range(2))
    with torch.no_grad():
        for _ in range(30):
            task.loss(cpu, task.train_data)  # the CPU's sweep (and the squared norms, once)
            task.device_loss(dev, task.xc, dev.centers - task.offset)
            torch.testing.assert_close(dev.centers, cpu.centers, rtol=0, atol=1e-5)
        inertia = [float(task.evaluate(m)["inertia"]) for m in (cpu, dev)]
    oracle = KMeans(6, init=start.numpy(), n_init=1, algorithm="lloyd", tol=0.0, max_iter=30)
    oracle.fit(points)
    assert math.isclose(inertia[1], inertia[0], rel_tol=1e-6)
    assert math.isclose(inertia[1], oracle.inertia_, rel_tol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_iteration_never_waits_on_the_device_and_matches_scikit_learn() -> None:
    """1M x 16, k=50 on the GPU: no host sync inside an iteration (torch raises on one), and
    the inertia of 20 iterations is scikit-learn's from the same start."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs

    points, _ = make_blobs(1_000_000, 16, centers=50, random_state=0)
    points = points.astype(np.float32)
    cuda = torch.device("cuda")
    x = torch.as_tensor(points, device=cuda)
    offset = x.mean(0)
    xc = x - offset
    x_sq = (xc * xc).sum(1)
    centers = xc[:50].clone()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):
            d2, labels = kmeans.assign(xc, centers, x_sq)
            _, sums, counts, _ = lloyd.lloyd_device(xc, centers, d2, labels)  # type: ignore[arg-type]
            centers = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    inertia = float(kmeans.assign(xc, centers)[0].sum(dtype=torch.float64))  # type: ignore[union-attr]
    oracle = KMeans(50, init=points[:50], n_init=1, algorithm="lloyd", tol=0.0, max_iter=20)
    oracle.fit(points)
    assert math.isclose(inertia, oracle.inertia_, rel_tol=1e-4)
