"""One Lloyd pass on the CPU in a single sweep over the data, on every core
(``lloyd_sums``); on a GPU, in large chunks with no host sync (``lloyd_device``).

A Lloyd iteration is one big matrix product (each point against each centre) followed by cheap
work per point: the nearest centre and that cluster's running sums. Done as separate whole-array
passes (the product, then the argmin, then the sums) the data and the (points, centres) scores
travel through memory several times, and the cheap passes run on one core. Here the points are
split into one contiguous part per thread; each thread walks its part in cache-sized chunks,
doing the chunk's product (single-threaded BLAS), its argmin and then its part's cluster sums,
all in NumPy/SciPy calls that release the GIL, so the threads run side by side. The per-thread
partial sums are added at the end, as scikit-learn's lloyd does with its OpenMP threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse
import torch
from threadpoolctl import ThreadpoolController

CHUNK = 2**18  # (point, centre) scores per chunk: 1 MB of float32, inside a core's L2 cache
_blas = ThreadpoolController()  # found once: looking up the loaded BLAS libraries costs ms
_pools: dict[int, ThreadPoolExecutor] = {}


def lloyd_sums(
    x: np.ndarray, centers: np.ndarray, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's nearest centre (the first on ties), each cluster's size and coordinate sums.

    The nearest centre minimises ||c||^2 - 2 x.c (||x||^2 does not change the argmin), the
    expansion scikit-learn uses; x and centers are C-contiguous float32 or float64 arrays.
    """
    n, k = len(x), len(centers)
    labels = np.empty(n, dtype=np.int64)
    neg2c = np.ascontiguousarray(-2 * centers.T)  # (d, k): the product lands as (rows, k)
    c_sq = (centers * centers).sum(1)
    rows = max(1, CHUNK // k)
    threads = max(1, min(threads, -(-n // rows)))  # no thread without a chunk
    step = -(-n // threads)
    bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]

    def part(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.empty((rows, k), dtype=x.dtype)
        for s in range(lo, hi, rows):
            e = min(s + rows, hi)
            out = scores[: e - s]
            np.matmul(x[s:e], neg2c, out=out)
            out += c_sq
            out.argmin(1, out=labels[s:e])
        mine = labels[lo:hi]
        # the one-hot (k, points) matrix as CSC, one entry per column: its product with the
        # part's points is the clusters' sums, one multiply-add per coordinate
        onehot = scipy.sparse.csc_matrix(
            (np.ones(hi - lo, dtype=x.dtype), mine, np.arange(hi - lo + 1)), shape=(k, hi - lo)
        )
        return np.bincount(mine, minlength=k), onehot @ x[lo:hi]

    with _blas.limit(limits=1, user_api="blas"):  # the threads are the parallelism
        if len(bounds) == 1:
            results = [part(*bounds[0])]
        else:
            pool = _pools.get(threads) or _pools.setdefault(threads, ThreadPoolExecutor(threads))
            results = list(pool.map(lambda b: part(*b), bounds))
    counts = sum(r[0] for r in results)
    sums = sum(r[1] for r in results)
    return labels, np.asarray(counts), np.asarray(sums, dtype=x.dtype)


def lloyd_device(
    x: torch.Tensor, centers: torch.Tensor, d2: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Lloyd pass in torch ops of fixed shapes, so nothing waits on the device: the mean
    squared distance under ``centers``, each cluster's coordinate sums and size, and which
    clusters were empty (each re-seeded from a far point, as scikit-learn does).

    ``d2`` and ``labels``: each point's squared distance to its nearest centre and that
    centre's index (task.py's ``assign``, in chunks of ``DEVICE_CHUNK_BYTES``); an empty
    cluster takes a far point by index arithmetic, not by a branch on the host.
    """
    n, k = x.shape[0], centers.shape[0]
    ones = torch.ones(n, dtype=x.dtype, device=x.device)
    counts = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, labels, ones)
    empty = counts == 0
    # the r-th empty cluster takes the r-th farthest point
    farthest = torch.topk(d2, k).indices
    rank = (torch.cumsum(empty, 0) - 1).clamp_min(0)
    slot = torch.where(empty, farthest[rank], n)  # n: a scratch slot for the others
    moved = torch.cat([labels, labels.new_zeros(1)])
    moved[slot] = torch.where(empty, torch.arange(k, device=x.device), 0)
    labels = moved[:n]
    counts = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, labels, ones)
    sums = torch.zeros_like(centers).index_add_(0, labels, x)
    return d2.mean(), sums, counts, empty
