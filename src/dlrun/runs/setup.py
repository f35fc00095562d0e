"""What a run builds before its loop (:meth:`dlrun.runs.stages.Run.setup`): the device, task, model,
optimizer and recipe, seeded (a :class:`~dlrun.engine.training.Training`), and what its
loggers are opened with. Kept beside stages.py so that the stages read in one sitting.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dlrun import compat, tasks
from dlrun.config import schema
from dlrun.engine import device as devices
from dlrun.engine import early_stopping as stopping
from dlrun.engine import optimizers as optim
from dlrun.engine import schedules as schedule
from dlrun.engine import steps
from dlrun.engine.distributed import Strategy
from dlrun.engine.training import Training
from dlrun.errors import ConfigError, defined_at
from dlrun.rundir.layout import RunDir
from dlrun.rundir.summary import Summary, run_name
from dlrun.tasks.base import CONTRACTS, Task
from dlrun.tracking.loggers import RunContext

if TYPE_CHECKING:
    from dlrun.runs.info import RunInfo


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(config: schema.Config, strategy: Strategy, summary: Summary) -> Training:
    """The parts one run trains (:meth:`dlrun.runs.stages.Run.setup`); its device and objective go
    into ``summary``."""
    trainer = strategy.trainer_settings(config.trainer)
    device = strategy.setup(devices.resolve(config.device))
    steps.check(trainer, device)
    seed_everything(config.seed)
    with strategy.main_first():  # a data set is fetched once
        task = tasks.create(config.task, config.data, device)
    n = len(task.train_data[0]) if task.train_data else 0
    if task.batched and trainer.batch_size > n > 0:
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} is larger than the {n} training "
            f"examples of task {task.name}; expected trainer.batch_size <= {n}"
        )
    model = task.build_model().to(device)
    check_first_batch(task, model, trainer.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    strategy.check_task(task.name, task.uses_optimizer and bool(params), task.hand_gradients)
    if not trainer.compile:
        compat.skip_compiler_import()
    optimizer = (
        optim.build(config.optimizer, params, fused=trainer.fast)
        if task.uses_optimizer and params
        else None
    )
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    summary.describe_task(devices.describe(device), task.objective, task.maximize)
    per_epoch = -(-strategy.shard_size(n) // trainer.batch_size) if task.batched else 1
    updates = -(-per_epoch // trainer.accumulate)
    schedule_ = schedule.build(
        config.scheduler, optimizer, trainer.epochs, updates, task.maximize, task.objective
    )
    stopper = stopping.build(trainer.early_stopping, task.objective, task.maximize)
    return Training(device, task, model, optimizer, generator, trainer, schedule_, stopper)


def check_first_batch(task: Task, model: torch.nn.Module, batch_size: int) -> None:
    """The model's output on the first batch against what the task's loss expects (its
    ``contract``, else its ``criterion``), before any training: a shape that broadcasts, an
    (N,) output for (N, 1) targets, would otherwise train without a word and never learn."""
    name = task.contract or task.criterion
    data = task.train_data
    if name is None or len(data) < 2 or not len(data[0]):
        return
    batch = tuple(t[:batch_size] for t in data) if task.batched else data
    was = model.training
    model.eval()  # no dropout's random draws, no batch norm's running statistics changed
    try:
        with torch.no_grad():
            output = model(batch[0])
    finally:
        model.train(was)
    if not isinstance(output, torch.Tensor):
        problem = f"{name} expects a tensor, the model returns {type(output).__name__}"
        shape = type(output).__name__
    else:
        problem = CONTRACTS[name](output, batch)
        shape = str(tuple(output.shape))
    if problem:
        where = defined_at(type(task).build_model)
        raise ConfigError(
            f"task {task.name}: the model (build_model() at {where}) gives an output of "
            f"shape {shape} for targets of shape {tuple(batch[1].shape)} on the first batch; "
            f"{problem}"
        )


def logger_context(info: RunInfo, plain: dict[str, Any], training: Training) -> RunContext:
    """What the run's loggers are opened with, as far as the run's settings say it (the run
    adds its rows, name and console); a sweep's parent is named by what the sweep varies
    (``sine-bp sweep lr=0.1,0.3``)."""
    varied = [o for o in info.sweep_overrides if o not in info.overrides]
    parent_name = run_name(f"{training.task.name} sweep", varied) if info.sweep_dir else None
    tags = {
        "task": training.task.name,
        "optimizer": info.choices.get("optimizer"),
        "device": devices.describe(training.device),  # the real one, not device=auto
        "seed": plain.get("seed"),
    }
    return RunContext(
        RunDir(info.run_dir),
        plain=plain,
        task=training.task.name,
        tags=tags,
        sweep_dir=info.sweep_dir,
        sweep_overrides=info.sweep_overrides,
        parent_name=parent_name,
        reproduces=info.reproduces,
    )
