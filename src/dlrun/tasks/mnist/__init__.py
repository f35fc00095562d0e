"""MNIST MLP (tutorial 000's main.py), the task `mnist-mlp` (`task=mnist` is another name for it):
a 784-128-10 ReLU MLP classifies torchvision's MNIST or a look-alike. The model and data are in
`task.py` (torch, torchvision)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlrun.config.schema import DataConfig, ImplTaskConfig
from dlrun.errors import check

MNIST_NAMES = ("MNIST", "FashionMNIST", "KMNIST")  # torchvision classes with MNIST's format


@dataclass
class MNISTMLPConfig(ImplTaskConfig):
    name: ClassVar[str] = "mnist-mlp"
    hidden: int = 128  # 784-hidden-10 MLP with ReLU

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.hidden >= 1, "task.hidden", "an integer >= 1", self.hidden)


@dataclass
class MNISTDataConfig(DataConfig):
    """mnist-mlp: which torchvision data set, read from <root>/<name>/raw/."""

    name: str = "MNIST"
    download: bool = True  # fetch the files with torchvision when they are missing

    def __post_init__(self) -> None:
        check(self.name in MNIST_NAMES, "data.name", f"one of {', '.join(MNIST_NAMES)}", self.name)


CONFIG, DATA = MNISTMLPConfig, MNISTDataConfig
TASK = "dlrun.tasks.mnist.task:MNISTMLP"  # imported only when the task runs (torch)
