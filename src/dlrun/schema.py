"""Kept so that task files written against earlier docs (``from dlrun.schema import TaskConfig,
check``) still run: the schema lives in :mod:`dlrun.config.schema`, the task API in
:mod:`dlrun.tasks`. Nothing in dlrun imports this module."""

from dlrun.config.schema import *  # noqa: F403
from dlrun.config.schema import __all__  # noqa: F401
