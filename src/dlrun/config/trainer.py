"""The training recipe's typed settings: the trainer, early stopping, gradient clipping and the
learning-rate schedules (the ``scheduler`` group).

Torch-free, as dlrun.config.schema: config errors are answered in well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from dlrun.errors import ConfigError
from dlrun.errors import check as _check

# --------------------------------------------------------------------------- training recipe

MONITORS = ("objective", "loss")


@dataclass
class EarlyStoppingConfig:
    """Stop after ``patience`` validations without an improvement larger than ``min_delta``."""

    patience: int = 0  # 0: off
    min_delta: float = 0.0
    # objective: the task's objective in its own direction; loss: the validation loss, lower
    monitor: str = "objective"

    def __post_init__(self) -> None:
        key = "trainer.early_stopping"
        _check(self.patience >= 0, f"{key}.patience", "an integer >= 0 (0: off)", self.patience)
        _check(self.min_delta >= 0, f"{key}.min_delta", "a number >= 0", self.min_delta)
        monitors = ", ".join(MONITORS)
        _check(self.monitor in MONITORS, f"{key}.monitor", f"one of {monitors}", self.monitor)


@dataclass
class GradClipConfig:
    """Gradient clipping before each update: the total norm (as ``clip_grad_norm_``) and/or
    each element (as ``clip_grad_value_``); null: off."""

    max_norm: float | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        for key in ("max_norm", "value"):
            v = getattr(self, key)
            _check(v is None or 0 < v < math.inf, f"trainer.grad_clip.{key}", "a number > 0", v)

    @property
    def on(self) -> bool:
        return self.max_norm is not None or self.value is not None


@dataclass
class SchedulerConfig:
    """Base of the ``scheduler`` group (conf/scheduler/): the learning rate over the run.

    ``kind`` names the option; the schedules are built on torch.optim.lr_scheduler
    (src/dlrun/engine/schedules.py)."""

    kind: ClassVar[str] = "none"

    def check(self, trainer: TrainerConfig) -> None:
        """Settings that only make sense against the trainer's (e.g. the run's length)."""


@dataclass
class StepSchedulerConfig(SchedulerConfig):
    kind: ClassVar[str] = "step"
    step_size: int = 30  # epochs between two multiplications by gamma
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _check(self.step_size >= 1, "scheduler.step_size", "an integer >= 1", self.step_size)
        _check_gamma(self.gamma)


@dataclass
class MultiStepSchedulerConfig(SchedulerConfig):
    kind: ClassVar[str] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [50, 75])  # epochs
    gamma: float = 0.1

    def __post_init__(self) -> None:
        m = list(self.milestones)
        _check(
            bool(m) and m[0] >= 1 and all(a < b for a, b in zip(m, m[1:], strict=False)),
            "scheduler.milestones",
            "increasing epochs >= 1, e.g. [50,75]",
            m,
        )
        _check_gamma(self.gamma)


@dataclass
class ExponentialSchedulerConfig(SchedulerConfig):
    kind: ClassVar[str] = "exponential"
    gamma: float = 0.99  # per epoch

    def __post_init__(self) -> None:
        _check_gamma(self.gamma)


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    """Cosine from optimizer.lr down to min_lr at trainer.epochs, after an optional linear
    warm-up from warmup_start_factor * optimizer.lr."""

    kind: ClassVar[str] = "cosine"
    min_lr: float = 0.0
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.1

    def __post_init__(self) -> None:
        _check(self.min_lr >= 0, "scheduler.min_lr", "a number >= 0", self.min_lr)
        warmup = self.warmup_epochs
        _check(warmup >= 0, "scheduler.warmup_epochs", "an integer >= 0", warmup)
        _check(
            0 < self.warmup_start_factor <= 1,
            "scheduler.warmup_start_factor",
            "a number in (0, 1]",
            self.warmup_start_factor,
        )

    def check(self, trainer: TrainerConfig) -> None:
        _check(
            self.warmup_epochs == 0 or self.warmup_epochs < trainer.epochs,
            "scheduler.warmup_epochs",
            f"fewer than trainer.epochs={trainer.epochs}",
            self.warmup_epochs,
        )


@dataclass
class OneCycleSchedulerConfig(SchedulerConfig):
    """torch's one-cycle policy, stepped after every update (per batch)."""

    kind: ClassVar[str] = "onecycle"
    max_lr: float | None = None  # required: the peak learning rate
    pct_start: float = 0.3  # the share of the updates spent rising to max_lr
    # cycle momentum (SGD's momentum, Adam's beta1) inversely to the rate, as torch can
    cycle_momentum: bool = False

    def __post_init__(self) -> None:
        if self.max_lr is None:
            raise ConfigError(
                "scheduler=onecycle needs scheduler.max_lr, its peak learning rate "
                "(e.g. scheduler.max_lr=0.1)"
            )
        _check(0 < self.max_lr < math.inf, "scheduler.max_lr", "a number > 0", self.max_lr)
        _check(0 < self.pct_start < 1, "scheduler.pct_start", "a number in (0, 1)", self.pct_start)


@dataclass
class PlateauSchedulerConfig(SchedulerConfig):
    """Multiply the rate by factor after patience validations without the task's objective
    improving (in the task's direction) by more than threshold (relative)."""

    kind: ClassVar[str] = "plateau"
    factor: float = 0.1
    patience: int = 10  # validations
    threshold: float = 1e-4
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _check(0 < self.factor < 1, "scheduler.factor", "a number in (0, 1)", self.factor)
        _check(self.patience >= 0, "scheduler.patience", "an integer >= 0", self.patience)
        _check(self.threshold >= 0, "scheduler.threshold", "a number >= 0", self.threshold)
        _check(self.min_lr >= 0, "scheduler.min_lr", "a number >= 0", self.min_lr)

    def check(self, trainer: TrainerConfig) -> None:
        if trainer.every("validate_every") >= trainer.epochs:
            raise ConfigError(
                f"scheduler=plateau reduces the rate on the validation objective, but this run "
                f"validates only at its end (trainer.validate_every={trainer.validate_every}, "
                f"trainer.epochs={trainer.epochs}); expected trainer.validate_every < "
                "trainer.epochs"
            )


def _check_gamma(gamma: float) -> None:
    _check(0 < gamma < math.inf, "scheduler.gamma", "a number > 0", gamma)


SCHEDULER_SCHEMAS: tuple[type[SchedulerConfig], ...] = (
    SchedulerConfig,
    StepSchedulerConfig,
    MultiStepSchedulerConfig,
    ExponentialSchedulerConfig,
    CosineSchedulerConfig,
    OneCycleSchedulerConfig,
    PlateauSchedulerConfig,
)


# --------------------------------------------------------------------------- trainer


PRECISIONS = ("fp32", "bf16")


CURVE_POINTS = 100  # validations and logged epochs a run, at the least, when set to null


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 64
    shuffle: bool = True
    # validate / log the training loss every N epochs (and after the last); null: about
    # CURVE_POINTS times a run, whatever its length (trainer.epochs // CURVE_POINTS)
    validate_every: int | None = 1
    checkpoint_every: int = 1  # 0: only at the end
    log_every: int | None = 1
    progress: bool = True
    plots: bool = True
    detect_anomaly: bool = False  # torch's autograd anomaly mode: slow, names the NaN's origin
    # the fast path (src/dlrun/engine/steps/fused.py): fused/foreach optimizer kernels called
    # directly, one gather per epoch, no per-step Python bookkeeping; false: the textbook step
    fast: bool = True
    # with fast: a small MLP (Linear layers and activations) with a shared loss on the CPU takes
    # its forward and backward passes in NumPy (src/dlrun/engine/steps/mlp_kernel.py); false:
    # autograd
    mlp_kernel: bool = True
    compile: bool = False  # torch.compile the task's loss (the model's forward inside it)
    # CUDA: the whole train step replayed from one graph. null (auto): wherever the step allows
    # it (src/dlrun/engine/steps/cuda_graph.py, choose()); true: asked for, a line in the log
    # where it cannot be; false: never
    cuda_graph: bool | None = None
    precision: str = "fp32"  # fp32 | bf16 (bf16 autocast, CUDA only)
    # CPU threads for torch's ops; 0: one thread for a model under a million parameters (its
    # ops are too small to share out; threads only add waiting), torch's default otherwise
    threads: int = 0
    # the training recipe (docs/training.md); all off by default: the tutorials' own loop
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: GradClipConfig = field(default_factory=GradClipConfig)
    accumulate: int = 1  # batches whose gradients are summed (as one mean) before one update
    # debugging (conf/debug/): an epoch of only the first N batches (null: all of them) ...
    limit_batches: int | None = None
    # ... or of the same first N batches every epoch, unshuffled (0: off): can the model learn?
    overfit_batches: int = 0
    # torch.profiler over this many train steps after two of warm-up (0: off)
    profile_steps: int = 0

    def every(self, key: str) -> int:
        """``validate_every`` or ``log_every`` as the loop uses it: null gives a run of any
        length about CURVE_POINTS points a curve (each epoch a loss costs no extra sync)."""
        value = getattr(self, key)
        return value if value is not None else max(1, self.epochs // CURVE_POINTS)

    def __post_init__(self) -> None:
        _check(
            self.precision in PRECISIONS,
            "trainer.precision",
            f"one of {', '.join(PRECISIONS)}",
            self.precision,
        )
        _check(
            self.cuda_graph in (None, True, False),
            "trainer.cuda_graph",
            "true, false or null (auto: on CUDA wherever the step allows it)",
            self.cuda_graph,
        )
        _check(self.epochs >= 0, "trainer.epochs", "an integer >= 0", self.epochs)
        _check(self.threads >= 0, "trainer.threads", "an integer >= 0 (0: auto)", self.threads)
        _check(self.batch_size >= 1, "trainer.batch_size", "an integer >= 1", self.batch_size)
        for key in ("validate_every", "log_every"):
            value = getattr(self, key)
            _check(
                value is None or value >= 1,
                f"trainer.{key}",
                f"an integer >= 1, or null: about {CURVE_POINTS} a run",
                value,
            )
        _check(
            self.checkpoint_every >= 0,
            "trainer.checkpoint_every",
            "an integer >= 0 (0: only at the end)",
            self.checkpoint_every,
        )
        _check(self.accumulate >= 1, "trainer.accumulate", "an integer >= 1", self.accumulate)
        _check(
            self.limit_batches is None or self.limit_batches >= 1,
            "trainer.limit_batches",
            "an integer >= 1, or null for every batch",
            self.limit_batches,
        )
        for key in ("overfit_batches", "profile_steps"):
            value = getattr(self, key)
            _check(value >= 0, f"trainer.{key}", "an integer >= 0 (0: off)", value)
