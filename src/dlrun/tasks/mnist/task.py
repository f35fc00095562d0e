"""MNIST MLP (tutorial 000's main.py): a 784-128-10 ReLU MLP classifies torchvision's MNIST (or the
look-alikes FashionMNIST and KMNIST), trained with Adam on the 60k training images and validated on
the 10k test images.

The images are read once through torchvision's own data set class and normalised as the tutorial's
ToTensor + Normalize((0.5,), (0.5,)) would, but on the whole uint8 tensor at once; they then live
on the device, so batches are index slices, not a DataLoader.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlrun import plots
from dlrun.errors import DlrunError
from dlrun.rundir import atomic as files
from dlrun.tasks.base import Task, classification_metrics
from dlrun.tasks.mnist import MNISTDataConfig, MNISTMLPConfig

SIDE = 28  # images are SIDE x SIDE
CLASSES = 10
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX headers: uint8, 3 and 1 dimensions
FILES = {  # split -> (images, labels), the names torchvision expects under <root>/<name>/raw/
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def raw_dir(data: MNISTDataConfig) -> Path:
    return Path(data.root) / data.name / "raw"


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> ToTensor's [0, 1] -> Normalize((0.5,), (0.5,)): [-1, 1]."""
    return (images.float() / 255 - 0.5) / 0.5


def idx_problem(path: Path, magic: int) -> str | None:
    """What is wrong with one IDX file (None: nothing found); reads only its header."""
    if not path.is_file():
        return "is missing"
    ndim = 3 if magic == IMAGES_MAGIC else 1
    size = path.stat().st_size
    header = 4 * (1 + ndim)
    with path.open("rb") as f:
        head = f.read(header)
    if len(head) < header:
        return f"is {size} bytes, too short for an IDX header"
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        return f"has IDX magic number {found}, expected {magic}"
    dims = [int.from_bytes(head[4 * i : 4 * i + 4], "big") for i in range(1, ndim + 1)]
    if ndim == 3 and dims[1:] != [SIDE, SIDE]:
        return f"holds {dims[1]}x{dims[2]} images, expected {SIDE}x{SIDE}"
    expected = header + dims[0] * (SIDE * SIDE if ndim == 3 else 1)
    if size != expected:
        return f"is {size} bytes, its header promises {expected} (truncated or damaged)"
    return None


def load(data: MNISTDataConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's uint8 images (N, 28, 28) and int64 labels (N,), read by torchvision."""
    from torchvision import datasets

    raw = raw_dir(data)
    images_file, labels_file = FILES[split]
    dataset_class = getattr(datasets, data.name)
    made = files.missing_dirs(raw)  # what a failed download must not leave behind, empty
    try:
        # torchvision reports downloads on stdout/stderr; a task prints nothing
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            dataset = dataset_class(data.root, train=split == "train", download=data.download)
        images, labels = dataset.data, dataset.targets
    except Exception as exc:
        files.remove_empty(made)
        every = [name for names in FILES.values() for name in names]
        missing = [name for name in every if not (raw / name).is_file()]
        if missing:
            lacks = (
                f"has none of the four files torchvision's {data.name} reads: {', '.join(every)}"
                if missing == every
                else f"lacks {', '.join(missing)} (torchvision's {data.name} reads "
                f"{', '.join(every)})"
            )
            why = (
                f"downloading them failed: {' '.join(str(exc).split())}"
                if data.download
                else "data.download=false"
            )
            raise DlrunError(
                f"{data.name} not found: {raw}/ {lacks}; {why}. Get them with data.download=true "
                f"on a machine with internet access, or copy the four files (gunzipped) there, "
                f"or point data.root at the directory that holds {data.name}/raw/"
            ) from exc
        problems = [
            f"{raw / name} {problem}"
            for name, magic in ((images_file, IMAGES_MAGIC), (labels_file, LABELS_MAGIC))
            if (problem := idx_problem(raw / name, magic)) is not None
        ]
        detail = "; ".join(problems) or f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise DlrunError(
            f"{data.name} {split} split in {raw}/ is unreadable: {detail}; "
            "replace the file(s) with intact copies (or delete them and set data.download=true)"
        ) from exc
    if images.dtype != torch.uint8 or images.shape[1:] != (SIDE, SIDE):
        raise DlrunError(
            f"{raw / images_file}: holds {tuple(images.shape)} {images.dtype} images, "
            f"expected (N, {SIDE}, {SIDE}) uint8"
        )
    if labels.shape != (len(images),):
        raise DlrunError(
            f"{raw / labels_file}: holds {labels.numel()} labels for {len(images)} images in "
            f"{raw / images_file}"
        )
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < CLASSES:
        raise DlrunError(
            f"{raw / labels_file}: labels range over {int(labels.min())}..{int(labels.max())}, "
            f"expected 0..{CLASSES - 1}"
        )
    if len(images) == 0:
        raise DlrunError(f"{raw / images_file}: holds no images")
    return images, labels


def confusion(predicted: torch.Tensor, truth: torch.Tensor, classes: int = CLASSES) -> torch.Tensor:
    """counts[t, p]: how many images of true class t were predicted as class p."""
    flat = torch.bincount(truth * classes + predicted, minlength=classes * classes)
    return flat.reshape(classes, classes)


class MNISTMLP(Task):
    objective = "accuracy"
    maximize = True
    criterion = "cross_entropy"

    cfg: MNISTMLPConfig
    data: MNISTDataConfig

    def __init__(self, cfg: MNISTMLPConfig, data: MNISTDataConfig, device: torch.device) -> None:
        super().__init__(cfg, data, device)
        train_images, train_labels = load(data, "train")
        test_images, test_labels = load(data, "test")
        self.train_data = (normalise(train_images.to(device)), train_labels.to(device))
        self.test_x = normalise(test_images.to(device))
        self.test_y = test_labels.to(device)

    def build_model(self) -> nn.Module:
        model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(SIDE * SIDE, self.cfg.hidden),
            nn.ReLU(),
            nn.Linear(self.cfg.hidden, CLASSES),
        )
        return self.for_impl(model)

    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor | float]:
        return dict(classification_metrics(model(self.test_x), self.test_y))

    def figures(self, model: nn.Module, history: list[dict[str, Any]]) -> dict[str, Any]:
        counts = confusion(model(self.test_x).argmax(1), self.test_y).cpu().numpy()
        fig, ax = plots.figure(width=6.4, height=5.6)
        image = ax.imshow(counts, cmap="Blues")
        fig.colorbar(image, ax=ax, label="images")
        for t in range(CLASSES):
            for p in range(CLASSES):
                if counts[t, p]:
                    ax.text(
                        p,
                        t,
                        str(counts[t, p]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if counts[t, p] > counts.max() / 2 else "black",
                    )
        labels: list[str] = [str(c) for c in range(CLASSES)]
        if (
            self.data.name == "FashionMNIST"
        ):  # digits name MNIST's classes; KMNIST's need a CJK font
            from torchvision.datasets import FashionMNIST

            labels = list(FashionMNIST.classes)
        ax.set_xticks(range(CLASSES), labels, rotation=90 if len(labels[0]) > 1 else 0)
        ax.set_yticks(range(CLASSES), labels)
        accuracy = counts.trace() / max(counts.sum(), 1)
        ax.set(
            xlabel="predicted class",
            ylabel="true class",
            title=f"{self.data.name} test split: {counts.sum()} images, accuracy {accuracy:.4f}",
        )
        return {"confusion": fig}
