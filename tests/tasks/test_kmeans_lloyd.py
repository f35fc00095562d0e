"""The CPU Lloyd sweep (tasks/kmeans/lloyd.py) against a brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlrun.tasks.kmeans import lloyd


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
