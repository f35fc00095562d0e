"""The task registry: the name used in `task=NAME` -> the module that implements it.

Modules are imported only when their task runs, so one task's heavy imports (torchvision,
scikit-learn) never slow down another.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from dlrun.schema import DataConfig, TaskConfig
    from dlrun.tasks.base import Task

REGISTRY: dict[str, str] = {
    "fizzbuzz": "dlrun.tasks.fizzbuzz",
    "sine-bp": "dlrun.tasks.sine_bp",
    "mnist-mlp": "dlrun.tasks.mnist",
    "nw-kernel": "dlrun.tasks.nw_kernel",
    "housing-regression": "dlrun.tasks.housing",
    "kmeans": "dlrun.tasks.kmeans",
}


def task_class(name: str) -> type[Task]:
    return importlib.import_module(REGISTRY[name]).TASK


def create(cfg: TaskConfig, data: DataConfig, device: torch.device) -> Task:
    return task_class(cfg.name)(cfg, data, device)
