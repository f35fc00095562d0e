"""Kept so that task files written against earlier docs (``from dlrun.schema import TaskConfig,
check``) still run; nothing in dlrun imports it. A task's names are :mod:`dlrun.tasks`'s."""

from dlrun.config.schema import DataConfig, ImplTaskConfig, TaskConfig  # noqa: F401
from dlrun.errors import check  # noqa: F401
