"""housing-regression: SGD reaches the least-squares optimum; data sources and their errors.

No test downloads: scikit-learn's fetch is replaced, or told not to download.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from dlrun.config.optimizers import SGDConfig
from dlrun.errors import ConfigError, DlrunError
from dlrun.runs.setup import seed_everything
from dlrun.tasks.housing import HousingDataConfig, HousingRegressionConfig
from dlrun.tasks.housing.task import FEATURES, TARGET, HousingRegression
from tests.config.test_config import objects

CPU = torch.device("cpu")


def linear_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy linear function of 8 features with very different scales and offsets."""
    rng = np.random.default_rng(seed)
    means = np.array([4, 28, 5, 1, 1400, 3, 35, -119], dtype=float)
    scales = np.array([2, 12, 2.5, 0.5, 1100, 10, 2, 2], dtype=float)
    x = rng.normal(means, scales, (n, 8))
    w = rng.normal(0, 1, 8) / scales
    y = (x - means) @ w + 2.0 + rng.normal(0, 0.5, n)
    return x, y


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join((*FEATURES, TARGET))
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="")
    return path


def task_for(seed: int, **data: object) -> HousingRegression:
    """The task exactly as a run with this seed builds it (same split, same scaling)."""
    seed_everything(seed)
    return HousingRegression(HousingRegressionConfig(), HousingDataConfig(**data), CPU)


def test_sgd_reaches_the_least_squares_optimum(dlrun, tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    csv = write_csv(tmp_path / "linear.csv", *linear_data(3000))
    task = task_for(1, path=str(csv))
    xtr, ytr = task.x_train.double().numpy(), task.y_train.double().numpy()
    xte, yte = task.x_test.double().numpy(), task.y_test.double().numpy()
    oracle = float(np.mean((LinearRegression().fit(xtr, ytr).predict(xte) - yte) ** 2))

    # the CPU: the oracle's split and its check below are computed there
    common = (
        "task=housing-regression",
        f"data.path={csv}",
        "seed=1",
        "trainer.plots=false",
        "device=cpu",
    )
    r = dlrun(*common, "optimizer.lr=0.05", "trainer.epochs=12", "trainer.validate_every=3")
    assert r.code == 0, r.err
    final = r.summary()["final"]
    assert abs(final["mse"] - oracle) <= 0.02 * oracle, (final["mse"], oracle)
    assert math.isclose(final["loss"], final["mse"] / 2, rel_tol=1e-6)  # the loss is MSE/2
    # the reported mse is the test split's, recomputed from the saved weights
    state = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    pred = task.x_test @ state["weight"].T + state["bias"]
    assert math.isclose(float(((pred - task.y_test) ** 2).mean()), final["mse"], rel_tol=1e-5)

    # the untrained model on the same split is far off: the bound above means something
    untrained = dlrun(*common, "trainer.epochs=0")
    assert untrained.code == 0, untrained.err
    assert untrained.summary()["final"]["mse"] > 10 * oracle


def test_the_split_is_seeded_and_scaled_with_training_statistics(tmp_path: Path) -> None:
    x, y = linear_data(1000, seed=2)
    csv = write_csv(tmp_path / "d.csv", x, y)
    task = task_for(5, path=str(csv))
    assert (len(task.x_train), len(task.x_test)) == (800, 200)
    # every row lands in exactly one split
    rows = torch.cat([task.y_train, task.y_test]).squeeze(1).double().numpy()
    np.testing.assert_allclose(np.sort(rows), np.sort(y), rtol=1e-6)
    # standardized with the training split's mean and std, not the whole file's
    torch.testing.assert_close(task.x_train.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(task.x_train.std(0, unbiased=False), torch.ones(8))
    assert task.x_test.mean(0).abs().max() > 1e-3
    # the same seed gives the same split; another seed another one
    assert torch.equal(task_for(5, path=str(csv)).y_test, task.y_test)
    assert not torch.equal(task_for(6, path=str(csv)).y_test, task.y_test)
    # standardize=false: the raw features
    seed_everything(5)
    raw = HousingRegression(
        HousingRegressionConfig(standardize=False),
        HousingDataConfig(path=str(csv)),
        CPU,
    )
    assert raw.x_train[:, 4].mean() > 1000  # Population, as in the file
    assert torch.equal(raw.y_test, task.y_test)


def test_scikit_learns_copy_is_read_from_data_root(
    dlrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sklearn.datasets
    from sklearn.utils import Bunch

    calls = []
    x, y = linear_data(500)

    def fake_fetch(**kwargs):
        calls.append(kwargs)
        return Bunch(data=x, target=y, feature_names=list(FEATURES))

    monkeypatch.setattr(sklearn.datasets, "fetch_california_housing", fake_fetch)
    root = tmp_path / "cache"
    r = dlrun("task=housing-regression", f"data.root={root}", "trainer.epochs=2")
    assert r.code == 0, r.err
    assert calls == [{"data_home": str(root), "download_if_missing": True}]
    assert r.summary()["objective_name"] == "mse"
    assert (r.run_dir / "plots" / "pred_vs_true.png").stat().st_size > 10_000
    assert (r.run_dir / "plots" / "curves.png").exists()


def test_offline_without_a_copy_is_one_clear_error(
    dlrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sklearn.datasets

    def offline(data_home: str, **kwargs):
        os.makedirs(data_home, exist_ok=True)  # as scikit-learn does before downloading
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sklearn.datasets, "fetch_california_housing", offline)
    root = tmp_path / "nowhere"
    r = dlrun("task=housing-regression", f"data.root={root}")
    assert r.code == 2
    assert r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    assert r.err.startswith(f"dlrun: error: California housing: no usable copy in {root}")
    assert "URLError" in r.err and "data.path=<csv>" in r.err and "MedHouseVal" in r.err
    assert not root.exists()  # no empty cache directory left behind
    assert not r.run_dir.exists()  # refused before it started


def test_no_download_allowed_and_no_copy(dlrun, tmp_path: Path) -> None:
    """scikit-learn's real fetch, told not to download: it never touches the network."""
    r = dlrun("task=housing-regression", f"data.root={tmp_path}", "data.download=false")
    assert r.code == 2
    assert r.err.startswith(f"dlrun: error: California housing: no usable copy in {tmp_path}")
    assert "data.download=false" in r.err and "data.path=<csv>" in r.err
    assert r.err.count("\n") == 1


def test_a_corrupt_cached_copy_is_named(dlrun, tmp_path: Path) -> None:
    """scikit-learn's real fetch finds a file it cannot read: it never touches the network."""
    (tmp_path / "cal_housing_py3.pkz").write_bytes(b"not a joblib file")
    r = dlrun("task=housing-regression", f"data.root={tmp_path}")
    assert r.code == 2
    assert r.err.startswith(f"dlrun: error: California housing: {tmp_path}/cal_housing_py3.pkz")
    assert "could not be read" in r.err and r.err.count("\n") == 1, r.err


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace(",MedHouseVal", ",Price", 1), "missing column(s) MedHouseVal"),
        (lambda t: t.replace("MedInc,HouseAge", "Income,Age", 1), "missing column(s) MedInc"),
        (lambda t: _cell(t, 3, 2, "abc"), "line 3, column AveRooms: 'abc' is not a number"),
        (lambda t: _cell(t, 4, 8, "nan"), "line 4, column MedHouseVal: 'nan' (missing"),
        (lambda t: _cell(t, 2, 0, ""), "line 2, column MedInc is empty"),
        (lambda t: t.split("\n", 1)[0] + "\n", "has 0 data rows"),
    ],
)
def test_bad_csv_files_are_named(dlrun, tmp_path: Path, edit, expected: str) -> None:
    csv = write_csv(tmp_path / "h.csv", *linear_data(20))
    csv.write_text(edit(csv.read_text()))
    r = dlrun("task=housing-regression", f"data.path={csv}", "trainer.plots=false")
    assert r.code == 2
    assert r.err.startswith(f"dlrun: error: data.path={csv}: {expected}"), r.err
    assert r.err.count("\n") == 1


def _cell(text: str, line: int, column: int, value: str) -> str:
    lines = text.split("\n")
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines)


def test_a_missing_csv_is_named(tmp_path: Path) -> None:
    with pytest.raises(DlrunError, match=r"^data\.path=.*nope\.csv: no such file$"):
        task_for(0, path=str(tmp_path / "nope.csv"))


def test_config_has_the_tutorials_settings() -> None:
    cfg = objects("task=housing-regression")
    assert isinstance(cfg.task, HousingRegressionConfig) and cfg.task.standardize
    assert isinstance(cfg.data, HousingDataConfig)
    assert (cfg.data.test_fraction, cfg.data.download, cfg.data.path) == (0.2, True, None)
    assert type(cfg.optimizer) is SGDConfig and cfg.optimizer.lr == 0.001
    assert cfg.optimizer.momentum == 0
    t = cfg.trainer
    assert (t.epochs, t.batch_size, t.validate_every, t.shuffle) == (1000, 64, 4, True)
    with pytest.raises(ConfigError, match=r"^data\.test_fraction="):
        objects("task=housing-regression", "data.test_fraction=1")
