"""mnist-mlp: tiny MNIST-format files read through torchvision, one-line errors for missing or
damaged files, the look-alike data sets, and the `task=mnist` alias. Nothing is downloaded."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrun.tasks.mnist.task import FILES, confusion

ALL_FILES = FILES["train"] + FILES["test"]


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as torchvision reads it: big-endian magic (2051 images, 2049 labels), sizes,
    then the uint8 values."""
    magic = {3: 2051, 1: 2049}[array.ndim]
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def patterns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Classes 0, 1, 2: a horizontal bar, a vertical bar, a diagonal band, each shifted by up to
    4 pixels, on noise. Easy to tell apart, impossible without looking at the pixels."""
    labels = rng.permutation(np.arange(n) % 3)
    images = rng.integers(0, 90, (n, 28, 28))
    rows, cols = np.mgrid[0:28, 0:28]
    for image, label, shift in zip(images, labels, rng.integers(-4, 5, n), strict=True):
        mark = [
            abs(rows - 13 - shift) <= 1,
            abs(cols - 13 - shift) <= 1,
            abs(rows - cols - shift) <= 1,
        ][label]
        image[mark] = rng.integers(170, 256, mark.sum())
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_data_set(root: Path, name: str = "MNIST", n_train: int = 300, n_test: int = 90) -> Path:
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = patterns(n, rng)
        write_idx(raw / FILES[split][0], images)
        write_idx(raw / FILES[split][1], labels)
    return raw


def one_error_line(r) -> str:
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("dlrun: error: ")
    assert "Traceback" not in r.out + r.err
    assert not r.run_dir.exists()  # refused before training: no run directory left behind
    return lines[0]


def test_the_mlp_learns_the_patterns_from_idx_files(dlrun, tmp_path: Path) -> None:
    write_data_set(tmp_path / "data")
    r = dlrun(
        "task=mnist-mlp",
        f"data.root={tmp_path / 'data'}",
        "data.download=false",
        "trainer.epochs=4",
        "trainer.plots=false",
    )
    assert r.code == 0, r.err
    summary = r.summary()
    assert summary["task"] == "mnist-mlp"
    # chance is 1/3 on the 90 test images: only a model that learned the patterns gets >= 0.9
    assert summary["objective"] == summary["final"]["accuracy"] >= 0.9
    assert summary["final"]["correct"] == round(90 * summary["final"]["accuracy"])
    rows = r.metrics()
    train = [m["loss"] for m in rows if m["split"] == "train"]
    val = [m for m in rows if m["split"] == "val"]
    assert len(train) == len(val) == 4  # validated every epoch, on the test split
    assert train[-1] < 0.5 * train[0]


def test_images_are_read_by_torchvision_and_normalised_once(tmp_path: Path) -> None:
    from torchvision.datasets import MNIST

    from dlrun.tasks.mnist import MNISTDataConfig, MNISTMLPConfig
    from dlrun.tasks.mnist.task import MNISTMLP

    write_data_set(tmp_path, n_train=30, n_test=12)
    data = MNISTDataConfig(root=str(tmp_path), download=False)
    task = MNISTMLP(MNISTMLPConfig(), data, torch.device("cpu"))
    reference = MNIST(str(tmp_path), train=True, download=False)
    x, y = task.train_data
    assert x.shape == (30, 28, 28) and x.dtype == torch.float32
    # ToTensor (/255) then Normalize((0.5,), (0.5,)), as the seed's transform
    assert torch.equal(x, (reference.data.float() / 255 - 0.5) / 0.5)
    assert torch.equal(y, reference.targets)
    assert x.min() >= -1 and x.max() <= 1
    assert task.test_x.shape == (12, 28, 28) and len(task.test_y) == 12
    assert task.build_model()(x).shape == (30, 10)  # 784-128-10 on the flattened image


@pytest.mark.parametrize("download", [False, True])
def test_missing_files_are_one_line_naming_the_directory_and_files(
    dlrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, download: bool
) -> None:
    from torchvision import datasets

    def no_network(self) -> None:  # what torchvision raises on this machine (no internet)
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://ossci-datasets.s3."
            "amazonaws.com/mnist/, got:\n<urlopen error [Errno -2] Name or service not known>\n"
        )

    monkeypatch.setattr(datasets.MNIST, "download", no_network)  # never download in a test
    root = tmp_path / "nowhere"
    r = dlrun(
        "task=mnist-mlp",
        f"data.root={root}",
        f"data.download={str(download).lower()}",
        "trainer.plots=false",
    )
    line = one_error_line(r)
    assert str(root / "MNIST" / "raw") in line
    assert all(name in line for name in ALL_FILES)
    assert "data.download=true" in line  # how to get them
    if download:
        assert "downloading them failed" in line and "Name or service not known" in line
    else:
        assert "data.download=false" in line


@pytest.mark.parametrize(
    ("damage", "file", "says"),
    [
        ("truncate", "train-images-idx3-ubyte", "truncated"),
        ("magic", "t10k-labels-idx1-ubyte", "magic number 2051, expected 2049"),
        ("count", "t10k-labels-idx1-ubyte", "5 labels for 90 images"),
    ],
)
def test_damaged_files_are_one_line_naming_the_file(
    dlrun, tmp_path: Path, damage: str, file: str, says: str
) -> None:
    raw = write_data_set(tmp_path / "data")
    path = raw / file
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "magic":  # an images file where the labels belong
        write_idx(path, np.zeros((90, 28, 28), np.uint8))
    else:
        write_idx(path, np.zeros(5, np.uint8))
    r = dlrun("task=mnist-mlp", f"data.root={tmp_path / 'data'}", "trainer.plots=false")
    line = one_error_line(r)  # data.download is true: present files are never downloaded again
    assert str(path) in line and says in line


def test_fashion_mnist_through_data_name_with_the_confusion_plot(dlrun, tmp_path: Path) -> None:
    write_data_set(tmp_path / "data", name="FashionMNIST")
    r = dlrun(
        "task=mnist-mlp",
        "data.name=FashionMNIST",
        f"data.root={tmp_path / 'data'}",
        "data.download=false",
        "trainer.epochs=4",
    )
    assert r.code == 0, r.err
    assert r.summary()["final"]["accuracy"] >= 0.9
    assert (r.run_dir / "plots" / "confusion.png").stat().st_size > 0
    assert (r.run_dir / "plots" / "curves.png").stat().st_size > 0
    # the same root holds no MNIST/: data.name really picks the directory
    r = dlrun("task=mnist-mlp", f"data.root={tmp_path / 'data'}", "data.download=false")
    assert str(tmp_path / "data" / "MNIST" / "raw") in one_error_line(r)


def test_confusion_counts() -> None:
    truth = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    counts = confusion(predicted, truth, classes=3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_mnist_is_an_alias_of_mnist_mlp(dlrun, tmp_path: Path) -> None:
    alias, task = dlrun("--cfg", "job", "task=mnist"), dlrun("--cfg", "job", "task=mnist-mlp")
    assert alias.code == task.code == 0
    assert alias.out == task.out
    assert "hidden: 128" in alias.out and "name: MNIST" in alias.out and "lr: 0.001" in alias.out
    write_data_set(tmp_path / "data", n_train=30, n_test=9)
    r = dlrun(
        "task=mnist",
        f"data.root={tmp_path / 'data'}",
        "data.download=false",
        "trainer.epochs=1",
        "trainer.batch_size=10",  # not more than the 30 images
        "trainer.plots=false",
    )
    assert r.code == 0, r.err
    assert r.summary()["task"] == "mnist-mlp"


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (("task=mnist-mlp", "data.name=CIFAR10"), "data.name"),
        (("task=mnist-mlp", "task.hidden=0"), "task.hidden"),
        (("task=fizzbuzz", "data.name=MNIST"), "data.name"),  # other tasks have no such key
    ],
)
def test_impossible_values_are_refused(dlrun, args: tuple[str, ...], key: str) -> None:
    assert key in one_error_line(dlrun(*args))
