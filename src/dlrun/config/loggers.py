"""Where the metrics rows go: the loggers' typed settings (the ``logger`` group).

Torch-free, as dlrun.config.schema: config errors are answered in well under a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dlrun.errors import ConfigError
from dlrun.errors import check as _check

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
