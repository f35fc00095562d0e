"""kmeans: Lloyd's algorithm against scikit-learn's, empty clusters, data sources, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException

from dlrun.errors import ConfigError
from dlrun.runs.setup import seed_everything
from dlrun.tasks.kmeans import KMeansConfig, KMeansDataConfig
from dlrun.tasks.kmeans import task as kmeans
from tests.config.test_config import objects

CPU = torch.device("cpu")


def blobs(path: Path, n: int = 1500, d: int = 3, centers: int = 5) -> np.ndarray:
    from sklearn.datasets import make_blobs

    points, _ = make_blobs(n, d, centers=centers, cluster_std=1.5, random_state=1)
    points = points.astype(np.float32)
    np.save(path, points)
    return points


def initial_centers(seed: int, **task: object) -> torch.Tensor:
    """The centres a run with this seed starts from (the run seeds, then builds the task)."""
    data_keys = {"path", "kind", "n", "d"}
    cfg = KMeansConfig(**{k: v for k, v in task.items() if k not in data_keys})
    data = KMeansDataConfig(**{k: v for k, v in task.items() if k in data_keys})
    seed_everything(seed)
    return kmeans.KMeans(cfg, data, CPU).build_model().centers.clone()


@pytest.mark.parametrize(("init", "tol"), [("random", 0.0), ("k-means++", 1e-4)])
def test_lloyd_matches_scikit_learn_from_the_same_centres(
    dlrun, tmp_path: Path, init: str, tol: float
) -> None:
    from sklearn.cluster import KMeans

    points = blobs(tmp_path / "blobs.npy")
    start = initial_centers(3, path=str(tmp_path / "blobs.npy"), k=5, init=init, tol=tol)
    r = dlrun(
        f"data.path={tmp_path / 'blobs.npy'}",
        "task=kmeans",
        "task.k=5",
        f"task.init={init}",
        f"task.tol={tol}",
        "seed=3",
        "trainer.plots=false",
        "device=cpu",  # the start it is compared from is drawn by the CPU's generator
    )
    assert r.code == 0, r.err
    oracle = KMeans(5, init=start.numpy(), n_init=1, algorithm="lloyd", tol=tol, max_iter=100)
    oracle.fit(points)
    assert oracle.n_iter_ > 2  # the start is not already the answer

    summary = r.summary()
    assert math.isclose(summary["objective"], oracle.inertia_, rel_tol=1e-4)
    assert summary["epochs_completed"] == oracle.n_iter_  # converged at the same iteration
    assert summary["final"]["empty_reseeded"] == 0
    state = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["optimizer"] is None
    np.testing.assert_array_equal(state["model"]["labels"].numpy(), oracle.labels_)
    np.testing.assert_allclose(
        state["model"]["centers"].numpy(), oracle.cluster_centers_, atol=1e-4
    )
    # inertia falls every iteration (Lloyd's algorithm never increases it)
    inertia = [m["inertia"] for m in r.metrics() if m["split"] == "val"]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(inertia, inertia[1:], strict=False))
    assert inertia[0] > inertia[-1]


def test_default_is_the_tutorial_data_and_converges(dlrun) -> None:
    r = dlrun("task=kmeans", "device=cpu")  # the centres are checked against the CPU's maths
    assert r.code == 0, r.err
    summary = r.summary()
    assert 1 < summary["epochs_completed"] < 100  # stopped early: converged
    assert "converged after" in r.out
    # the tutorial's data: 100 points uniform on [0, 1)^2 from numpy's RNG at the run's seed
    np.random.seed(0)
    x = torch.as_tensor(np.random.rand(100, 2), dtype=torch.float32)
    state = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    centers, labels = state["centers"], state["labels"]
    assert centers.shape == (3, 2) and labels.shape == (100,)
    assert torch.equal(labels, torch.cdist(x, centers).argmin(1))
    # a fixed point of Lloyd's algorithm: each centre is the mean of its points
    for j in range(3):
        torch.testing.assert_close(centers[j], x[labels == j].mean(0), atol=1e-3, rtol=0)
    inertia = float(((x - centers[labels]) ** 2).sum())
    assert math.isclose(summary["objective"], inertia, rel_tol=1e-5)
    assert math.isclose(summary["final"]["loss"], inertia / 100, rel_tol=1e-5)
    assert (r.run_dir / "plots" / "clusters.png").stat().st_size > 10_000


def test_an_empty_cluster_is_reseeded_from_the_farthest_point(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.cat([torch.randn(30, 2) * 0.1, torch.randn(30, 2) * 0.1 + 5])
    x[7] = torch.tensor([0.0, 2.0])  # the point farthest from its centre below
    np.save(tmp_path / "x.npy", x.numpy())
    data = KMeansDataConfig(path=str(tmp_path / "x.npy"))
    task = kmeans.KMeans(KMeansConfig(k=3, tol=0.0), data, CPU)
    start = torch.tensor([[0.0, 0.0], [5.0, 5.0], [100.0, -100.0]])  # the last one gets no point
    model = kmeans.KMeansModel(start, len(x))
    with torch.no_grad():
        loss = task.loss(model, task.train_data)
        assert torch.isfinite(loss)
        assert int(model.empty_reseeded) == 1
        torch.testing.assert_close(model.centers[2], x[7])  # re-seeded at the farthest point
        for _ in range(10):
            if task.converged(model):
                break
            task.loss(model, task.train_data)
        metrics = task.evaluate(model)
    assert torch.isfinite(model.centers).all()
    assert torch.bincount(model.labels, minlength=3).min() >= 1
    assert int(metrics["empty_reseeded"]) == 1
    assert math.isfinite(float(metrics["inertia"]))


def test_an_empty_cluster_in_a_run_gives_no_nan(dlrun, tmp_path: Path) -> None:
    # 2 distinct values, k=3: two initial centres coincide, so one cluster starts empty
    points = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 20, axis=0)
    np.save(tmp_path / "two.npy", points)
    r = dlrun(
        "task=kmeans",
        f"data.path={tmp_path / 'two.npy'}",
        "task.init=random",
        "trainer.plots=false",
    )
    assert r.code == 0, r.err
    rows = [m for m in r.metrics() if m["split"] == "val"]
    assert all(math.isfinite(m["inertia"]) for m in rows)
    assert rows[-1]["empty_reseeded"] >= 1
    assert rows[-1]["inertia"] == pytest.approx(0.0, abs=1e-6)
    state = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.isfinite(state["centers"]).all()


def test_chunked_distances_match_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kmeans, "CHUNK", 7)  # 2 points a chunk at k=3: many chunk boundaries
    torch.manual_seed(1)
    x, centers = torch.randn(101, 4), torch.randn(3, 4)
    d2, labels = kmeans.assign(x, centers)
    brute = ((x[:, None, :] - centers[None]) ** 2).sum(2)
    assert torch.equal(labels, brute.argmin(1))
    torch.testing.assert_close(d2, brute.min(1).values)


def test_blobs_and_csv_data(dlrun, tmp_path: Path) -> None:
    r = dlrun(
        "task=kmeans",
        "data.kind=blobs",
        "data.n=500",
        "data.d=3",
        "data.centers=4",
        "task.k=4",
        "trainer.plots=false",
    )
    assert r.code == 0, r.err
    state = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state["centers"].shape == (4, 3) and state["labels"].shape == (500,)
    # well-separated blobs (std 1 in a box of +-10): far below the inertia of one cluster
    assert r.summary()["objective"] < 3 * 500 * 3

    csv = tmp_path / "points.csv"
    csv.write_text("a,b\n0,0\n0,1\n10,10\n10,11\n")
    r = dlrun("task=kmeans", f"data.path={csv}", "task.k=2", "trainer.plots=false")
    assert r.code == 0, r.err
    assert r.summary()["objective"] == pytest.approx(1.0)  # each point 0.5 from its centre


def test_resume_continues_from_the_checkpointed_centres(dlrun, tmp_path: Path) -> None:
    # exact equality with the uninterrupted run: the CPU's promise (docs/resume.md)
    args = ("task=kmeans", "data.kind=blobs", "data.n=1000", "task.k=6", "task.tol=0", "device=cpu")
    full = dlrun(*args, "trainer.plots=false")
    part = dlrun(*args, "trainer.plots=false", "trainer.epochs=2")
    assert full.code == 0 and part.code == 0, full.err + part.err
    assert full.summary()["epochs_completed"] > 3  # the resumed part has work left
    resumed = dlrun(f"resume={part.run_dir}", "trainer.epochs=100")
    assert resumed.code == 0, resumed.err
    assert resumed.summary()["objective"] == full.summary()["objective"]
    assert resumed.summary()["epochs_completed"] == full.summary()["epochs_completed"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("task.k=5", "data.n=3"), "task.k=5 is more clusters than the 3 points"),
        (("task.k=0",), "task.k=0 is not allowed"),
        (("task.init=farthest",), "task.init=farthest is not allowed"),
        (("data.kind=gauss",), "data.kind=gauss is not allowed"),
    ],
)
def test_impossible_settings_are_one_line_errors(dlrun, args: tuple, expected: str) -> None:
    r = dlrun("task=kmeans", *args, "trainer.plots=false")
    assert r.code == 2
    assert r.err.startswith(f"dlrun: error: {expected}") and r.err.count("\n") == 1, r.err


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.csv", "x,y\n1,2\n3,oops\n", "line 3, column 2: 'oops' is not a number"),
        ("gap.csv", "1,2\n3,\n", "line 2, column 2 is empty"),
        ("nan.csv", "1,2\nnan,4\n", "line 2, column 1: 'nan' (missing"),
        ("ragged.csv", "1,2\n3,4,5\n", "line 2 has 3 fields, expected 2"),
        ("empty.csv", "x,y\n", "has no data rows"),
        ("nan.npy", None, "element [1, 0] is nan"),
        ("missing.csv", "", "no such file"),
    ],
)
def test_bad_data_files_are_named(dlrun, tmp_path: Path, name: str, content, expected) -> None:
    path = tmp_path / name
    if name == "nan.npy":
        np.save(path, np.array([[0.0, 1.0], [np.nan, 2.0]]))
    elif name != "missing.csv":
        path.write_text(content)
    r = dlrun("task=kmeans", f"data.path={path}", "task.k=1", "trainer.plots=false")
    assert r.code == 2
    assert r.err.startswith(f"dlrun: error: data.path={path}: {expected}"), r.err
    assert r.err.count("\n") == 1


def test_config_defaults_and_schema() -> None:
    cfg = objects("task=kmeans")
    assert isinstance(cfg.task, KMeansConfig) and isinstance(cfg.data, KMeansDataConfig)
    assert (cfg.task.k, cfg.task.init, cfg.task.max_iter) == (3, "k-means++", 100)
    assert (cfg.data.kind, cfg.data.n, cfg.data.d, cfg.data.path) == ("uniform", 100, 2, None)
    assert cfg.trainer.epochs == 100
    assert objects("task=kmeans", "task.max_iter=7").trainer.epochs == 7  # follows max_iter
    cfg = objects("task=kmeans", "data.kind=blobs", "data.n=500")
    assert (cfg.data.kind, cfg.data.n) == ("blobs", 500)
    with pytest.raises(ConfigError, match=r"^task\.tol="):
        objects("task=kmeans", "task.tol=-1")
    with pytest.raises(ConfigError, match=r"^data\.cluster_std="):
        objects("task=kmeans", "data.cluster_std=-1")
    with pytest.raises(ConfigCompositionException):  # kmeans's data keys are its own
        objects("task=fizzbuzz", "data.kind=blobs")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(dlrun) -> None:
    args = ("task=kmeans", "data.kind=blobs", "data.n=20000", "data.d=8", "task.k=8")
    cpu = dlrun(*args, "device=cpu", "trainer.plots=false")
    gpu = dlrun(*args, "device=cuda", "trainer.plots=false")
    assert cpu.code == 0 and gpu.code == 0, cpu.err + gpu.err
    assert gpu.summary()["device"] != cpu.summary()["device"]
    assert math.isclose(gpu.summary()["objective"], cpu.summary()["objective"], rel_tol=1e-4)


def test_row_min_is_torch_min() -> None:
    """The CPU's NumPy argmin against torch.min(1): the same values, and a column holding the
    minimum (the first one where several tie)."""
    from dlrun.tasks.kmeans.task import row_min

    torch.manual_seed(0)
    for scores in (torch.randn(500, 37), torch.randint(0, 4, (300, 9)).float()):
        best, nearest = row_min(scores)
        want, _ = scores.min(1)
        assert torch.equal(best, want) and nearest.dtype == torch.int64
        assert torch.equal(scores.gather(1, nearest[:, None])[:, 0], want)
        first = (scores == want[:, None]).int().argmax(1)
        assert torch.equal(nearest, first)
