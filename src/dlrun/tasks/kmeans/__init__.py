"""k-means (a numpy tutorial): Lloyd's algorithm, one iteration per epoch. The model and data are
in `task.py` (torch)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from dlrun.config.schema import DataConfig, ImplTaskConfig
from dlrun.errors import check

KMEANS_INITS = ("k-means++", "random")
KMEANS_DATA_KINDS = ("uniform", "blobs")


@dataclass
class KMeansConfig(ImplTaskConfig):
    name: ClassVar[str] = "kmeans"
    uses_optimizer: ClassVar[bool] = False  # Lloyd iterations: no learning rate to schedule
    k: int = 3  # clusters
    init: str = "k-means++"  # k-means++ or random: k distinct data points (the tutorial)
    # converged when the summed squared centre shift of an iteration is <= tol * the mean
    # variance of the features (scikit-learn's rule); 0: only when the centres stop moving
    tol: float = 1e-4
    max_iter: int = 100  # Lloyd iterations at most (one per epoch)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 1, "task.k", "an integer >= 1", self.k)
        check(
            self.init in KMEANS_INITS, "task.init", f"one of {', '.join(KMEANS_INITS)}", self.init
        )
        check(self.tol >= 0, "task.tol", "a number >= 0", self.tol)
        check(self.max_iter >= 1, "task.max_iter", "an integer >= 1", self.max_iter)


@dataclass
class KMeansDataConfig(DataConfig):
    """kmeans: generated points (``kind``, seeded by `seed`), or ``path``: a .csv or .npy file
    with one point per row (then kind, n, d, centers and cluster_std are not used)."""

    path: str | None = None  # a file of your own instead of the data set
    kind: str = "uniform"  # uniform: n x d on [0, 1) (the tutorial); blobs: sklearn's make_blobs
    n: int = 100  # points
    d: int = 2  # dimensions
    centers: int = 3  # blobs: how many blobs
    cluster_std: float = 1.0  # blobs: standard deviation of each blob

    def __post_init__(self) -> None:
        check(
            self.kind in KMEANS_DATA_KINDS,
            "data.kind",
            f"one of {', '.join(KMEANS_DATA_KINDS)}",
            self.kind,
        )
        check(self.n >= 1, "data.n", "an integer >= 1", self.n)
        check(self.d >= 1, "data.d", "an integer >= 1", self.d)
        check(self.centers >= 1, "data.centers", "an integer >= 1", self.centers)
        check(self.cluster_std >= 0, "data.cluster_std", "a number >= 0", self.cluster_std)
        if self.path:  # the points come from the file: a generator setting would be ignored
            for f in dataclasses.fields(KMeansDataConfig):
                if f.name in ("kind", "n", "d", "centers", "cluster_std"):
                    value = getattr(self, f.name)
                    check(
                        value == f.default,
                        f"data.{f.name}",
                        f"no data.{f.name} with data.path (the points come from the file)",
                        value,
                    )


CONFIG, DATA = KMeansConfig, KMeansDataConfig
TASK = "dlrun.tasks.kmeans.task:KMeans"  # imported only when the task runs (torch)
