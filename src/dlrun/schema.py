"""The typed config schema.

YAML in conf/ is composed on top of these dataclasses (registered in Hydra's ConfigStore), so a
misspelled key or a wrong type fails at compose time with Hydra's own message. Values that compose
but make no sense (a negative learning rate, an unknown device) are refused by ``to_objects``,
which turns the composed config into these plain dataclasses before any work starts.

This module must not import torch: config errors are answered in well under a second.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dlrun.errors import ConfigError

if TYPE_CHECKING:
    from dlrun.tasks import Found


def _check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is not allowed: expected {expected}")


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
    (src/dlrun/schedule.py)."""

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
        if trainer.validate_every >= trainer.epochs:
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
check = _check  # public: a task's config validates its fields with it, in the same words


# --------------------------------------------------------------------------- trainer


PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 64
    shuffle: bool = True
    validate_every: int = 1
    checkpoint_every: int = 1  # 0: only at the end
    log_every: int = 1
    progress: bool = True
    plots: bool = True
    detect_anomaly: bool = False  # torch's autograd anomaly mode: slow, names the NaN's origin
    # the fast path (src/dlrun/fastpath.py): fused/foreach optimizer kernels called directly,
    # one gather per epoch, no per-step Python bookkeeping; false: the textbook eager step
    fast: bool = True
    # with fast: a small MLP (Linear layers and activations) with a shared loss on the CPU takes
    # its forward and backward passes in NumPy (src/dlrun/mlp_kernel.py); false: autograd
    mlp_kernel: bool = True
    compile: bool = False  # torch.compile the model's forward/backward
    cuda_graph: bool = False  # CUDA: capture the whole train step in one graph (else eager)
    precision: str = "fp32"  # fp32 | bf16 (bf16 autocast, CUDA only)
    # CPU threads for torch's ops; 0: one thread for a model under a million parameters (its
    # ops are too small to share out; threads only add waiting), torch's default otherwise
    threads: int = 0
    # the training recipe (docs/training.md); all off by default: the tutorials' own loop
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: GradClipConfig = field(default_factory=GradClipConfig)
    accumulate: int = 1  # batches whose gradients are summed (as one mean) before one update

    def __post_init__(self) -> None:
        _check(
            self.precision in PRECISIONS,
            "trainer.precision",
            f"one of {', '.join(PRECISIONS)}",
            self.precision,
        )
        _check(self.epochs >= 0, "trainer.epochs", "an integer >= 0", self.epochs)
        _check(self.threads >= 0, "trainer.threads", "an integer >= 0 (0: auto)", self.threads)
        _check(self.batch_size >= 1, "trainer.batch_size", "an integer >= 1", self.batch_size)
        for key in ("validate_every", "log_every"):
            value = getattr(self, key)
            _check(value >= 1, f"trainer.{key}", "an integer >= 1", value)
        _check(
            self.checkpoint_every >= 0,
            "trainer.checkpoint_every",
            "an integer >= 0 (0: only at the end)",
            self.checkpoint_every,
        )
        _check(self.accumulate >= 1, "trainer.accumulate", "an integer >= 1", self.accumulate)


# --------------------------------------------------------------------------- optimizers


@dataclass
class OptimizerConfig:
    lr: float = 0.01
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check(0 < self.lr < math.inf, "optimizer.lr", "a finite number > 0", self.lr)
        _check(self.weight_decay >= 0, "optimizer.weight_decay", "a number >= 0", self.weight_decay)


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.momentum < 1, "optimizer.momentum", "a number in [0, 1)", self.momentum)
        _check(
            not self.nesterov or (self.momentum > 0 and self.dampening == 0),
            "optimizer.nesterov",
            "false unless optimizer.momentum > 0 and optimizer.dampening = 0",
            self.nesterov,
        )


def _check_adam(betas: list[float], eps: float) -> None:
    _check(
        len(betas) == 2 and all(0 <= b < 1 for b in betas),
        "optimizer.betas",
        "two numbers in [0, 1), e.g. [0.9,0.999]",
        list(betas),  # not ListConfig's repr
    )
    _check(eps > 0, "optimizer.eps", "a number > 0", eps)


@dataclass
class AdamConfig(OptimizerConfig):
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_adam(self.betas, self.eps)


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = 0.01


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.alpha < 1, "optimizer.alpha", "a number in [0, 1)", self.alpha)
        _check(0 <= self.momentum < 1, "optimizer.momentum", "a number in [0, 1)", self.momentum)
        _check(self.eps > 0, "optimizer.eps", "a number > 0", self.eps)


@dataclass
class ScratchSGDConfig(OptimizerConfig):
    """Hand-written SGD (dlrun.scratch.optim)."""


@dataclass
class ScratchMomentumConfig(OptimizerConfig):
    """Hand-written SGD with momentum (dlrun.scratch.optim)."""

    momentum: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.momentum < 1, "optimizer.momentum", "a number in [0, 1)", self.momentum)


@dataclass
class ScratchAdamConfig(OptimizerConfig):
    """Hand-written Adam (dlrun.scratch.optim)."""

    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_adam(self.betas, self.eps)


OPTIMIZER_SCHEMAS: dict[str, type[OptimizerConfig]] = {
    "sgd": SGDConfig,
    "adam": AdamConfig,
    "adamw": AdamWConfig,
    "rmsprop": RMSpropConfig,
    "scratch_sgd": ScratchSGDConfig,
    "scratch_momentum": ScratchMomentumConfig,
    "scratch_adam": ScratchAdamConfig,
}


# --------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """Where a task finds data it does not generate itself.

    A task that reads data subclasses this (e.g. with the data set's name) and names it ``DATA``
    beside its config; it is stored under ``schema/data/<task>`` and selected in the task's YAML
    with ``- /schema/data@data: <task>``, so its keys are typed and other tasks refuse them.
    """

    root: str = "${oc.env:DLRUN_DATA,data}"


# --------------------------------------------------------------------------- tasks


@dataclass
class TaskConfig:
    """Base of every task's settings; ``name`` is the task's key in the registry."""

    name: ClassVar[str]


IMPLS = ("torch", "scratch")


@dataclass
class ImplTaskConfig(TaskConfig):
    """A task that also runs hand-written: impl=scratch trains it with explicit forward and
    backward passes (dlrun.scratch) through the same loop, instead of torch's autograd."""

    impl: str = "torch"

    def __post_init__(self) -> None:
        _check(self.impl in IMPLS, "task.impl", f"one of {', '.join(IMPLS)}", self.impl)


# --------------------------------------------------------------------------- loggers

# logger -> the module it needs (and the extra that installs it)
LOGGER_EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
# what MLflow accepts as a tracking URI: a database, a server, or a directory (file: or a path)
_TRACKING_URI = re.compile(
    r"(sqlite|postgresql|mysql|mssql|https?|file|databricks)(\+\w+)?:.*|[^:]+"
)


@dataclass
class MLflowConfig:
    """``logger=mlflow`` (conf/logger/mlflow.yaml): runs in an MLflow tracking store."""

    enabled: bool = False
    # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory (artifacts
    # beside it in mlruns/); or a tracking server, http://127.0.0.1:5000
    tracking_uri: str | None = None
    experiment: str | None = None  # None: the task's name
    log_checkpoints: bool = False  # checkpoints/ as artifacts too (they can be large)

    def __post_init__(self) -> None:
        uri = self.tracking_uri
        _check(
            uri is None or bool(_TRACKING_URI.fullmatch(uri)),
            "logger.mlflow.tracking_uri",
            "sqlite:///<file>, http(s)://<host>:<port>, a database URL or a directory",
            uri,
        )
        _check(
            self.experiment is None or bool(self.experiment.strip()),
            "logger.mlflow.experiment",
            "a non-empty name (or null: the task's name)",
            self.experiment,
        )


@dataclass
class LoggerConfig:
    """Where the metrics rows go, chosen with ``logger=[jsonl,tensorboard,csv,mlflow]``.

    metrics.jsonl is always written: the summary, resume and plots read it.
    """

    jsonl: bool = True
    tensorboard: bool = False  # event files in <run dir>/tensorboard/
    csv: bool = False  # metrics.csv
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)

    def __post_init__(self) -> None:
        from importlib.util import find_spec

        for name, module in LOGGER_EXTRAS.items():
            chosen = getattr(self, name)
            if isinstance(chosen, MLflowConfig):  # a logger with settings: on when enabled
                chosen = chosen.enabled
            if chosen and find_spec(module) is None:
                raise ConfigError(
                    f"logger={name} needs the {module} package, which is not installed: "
                    f"pip install 'dlrun[{name}]'"
                )


# --------------------------------------------------------------------------- the whole run

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class Config:
    task: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    scheduler: Any = field(default_factory=SchedulerConfig)  # a SchedulerConfig subclass
    data: Any = field(default_factory=DataConfig)  # a task's DataConfig subclass
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    device: str = "auto"
    seed: int = 0
    resume: str | None = None
    # a loose task file, set by `task=./my_task.py` (dlrun.tasks.from_argv): recorded with the
    # run's overrides, so that resume and rerun load the file again
    task_file: str | None = None

    def __post_init__(self) -> None:
        _check(
            bool(_DEVICE.fullmatch(self.device)),
            "device",
            "one of auto, cpu, cuda, cuda:N, mps",
            self.device,
        )
        _check(0 <= self.seed < 2**63, "seed", "an integer >= 0", self.seed)
        if isinstance(self.scheduler, SchedulerConfig):  # a test may build a Config without one
            self.scheduler.check(self.trainer)
            if self.scheduler.kind != "none" and not getattr(self.task, "uses_optimizer", True):
                raise ConfigError(
                    f"scheduler={self.scheduler.kind}: task {self.task.name} trains without an "
                    "optimizer (it stops by its own rule); use scheduler=none"
                )


def register() -> None:
    """Put the schemas where the YAML in conf/ finds them (idempotent): the shared ones here, and
    each task's, derived from the tasks found (dlrun.tasks)."""
    from dlrun import tasks  # the tasks' configs build on this module's bases

    cs = ConfigStore.instance()
    cs.store(name="dlrun_schema", node=Config)
    for name, schema in OPTIMIZER_SCHEMAS.items():
        cs.store(group="schema/optimizer", name=name, node=schema)
    for task in tasks.found().values():
        store_task(task)
    for scheduler in SCHEDULER_SCHEMAS:
        cs.store(group="schema/scheduler", name=scheduler.kind, node=scheduler)


def store_task(task: Found, with_yaml: bool = True) -> None:
    """A task's typed schemas (schema/task/<name>, schema/data/<name>) and, for a task whose YAML
    sits beside its module (or that has none), its `task=<name>` config with those schemas
    (``with_yaml=False``: a config dir's task/<name>.yaml that Hydra reads itself)."""
    cs = ConfigStore.instance()
    cs.store(group="schema/task", name=task.name, node=task.config)
    schemas = [{"/schema/task@task": task.name}]
    if task.data is not None:
        cs.store(group="schema/data", name=task.name, node=task.data)
        schemas.append({"/schema/data@data": task.name})
    if task.tutorial or not with_yaml:
        return  # a tutorial: its YAML is conf/task/<name>.yaml
    node = OmegaConf.to_container(OmegaConf.load(task.yaml)) if task.yaml else {}
    if not isinstance(node, dict):
        raise ConfigError(f"{task.yaml}: expected a mapping of settings (task:, trainer:, ...)")
    defaults = list(node.pop("defaults", None) or [])
    defaults = [d for d in schemas if d not in defaults] + defaults
    if "_self_" not in defaults:
        defaults.append("_self_")
    cs.store(group="task", name=task.name, node={"defaults": defaults, **node}, package="_global_")


def __getattr__(attr: str) -> Any:
    """The task configs' old home: `dlrun.schema.FizzBuzzConfig` still names the class, and
    TASK_SCHEMAS / DATA_SCHEMAS are derived from the tasks found."""
    if attr.startswith("__"):
        raise AttributeError(attr)
    from dlrun import tasks

    found = tasks.found().values()
    if attr == "TASK_SCHEMAS":
        return tuple(t.config for t in found)
    if attr == "DATA_SCHEMAS":
        return {t.name: t.data for t in found if t.data is not None}
    for t in found:
        for cls in (t.config, t.data):
            if cls is not None and cls.__name__ == attr:
                return cls
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _refuse_unknown_keys(node: Any, prefix: str = "") -> None:
    """`+key=value` slips past Hydra's struct check; a typed config still has no such key."""
    if not isinstance(node, DictConfig):
        return
    kind = OmegaConf.get_type(node)
    known = {f.name for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else None
    for key in node.keys():
        if known is not None and key not in known:
            raise ConfigError(
                f"{prefix}{key}: no such key (known: {', '.join(sorted(known))}); "
                "see `dlrun --cfg job`"
            )
        _refuse_unknown_keys(node._get_node(key), f"{prefix}{key}.")


def to_objects(cfg: DictConfig) -> Config:
    """Composed config -> validated plain dataclasses (raises ConfigError naming the key)."""
    _refuse_unknown_keys(cfg)
    try:
        config = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # omegaconf wraps errors raised in __post_init__
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(str(exc).splitlines()[0]) from exc
    assert isinstance(config, Config)
    return config


def plain(cfg: DictConfig) -> dict[str, Any]:
    """A resolved, plain-dict copy of the composed config (for checkpoints and logs)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container
