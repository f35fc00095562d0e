"""One Lloyd iteration of k-means in plain numpy (the tutorial's loop), with the empty-cluster
fix: a cluster no point chose takes the point farthest from its centre (the r-th empty cluster
the r-th farthest point), and a cluster still empty keeps its centre instead of becoming NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LloydStep(NamedTuple):
    centers: np.ndarray  # (k, d): the new centres
    d2: np.ndarray  # (n,): each point's squared distance to its nearest old centre
    empty: int  # clusters that no point chose (re-seeded)


def lloyd_step(x: np.ndarray, centers: np.ndarray) -> LloydStep:
    """Assign every point of x (n, d) to its nearest centre, then move each centre to its mean."""
    k = centers.shape[0]
    d2_all = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)  # (n, k)
    labels = d2_all.argmin(axis=1)
    d2 = d2_all[np.arange(len(x)), labels]
    empty = [j for j in range(k) if not np.any(labels == j)]
    if empty:
        farthest = np.argsort(-d2, kind="stable")[: len(empty)]
        labels = labels.copy()
        labels[farthest] = empty
    new = centers.copy()
    for j in range(k):
        members = x[labels == j]
        if len(members):
            new[j] = members.mean(axis=0)
    return LloydStep(new, d2, len(empty))
