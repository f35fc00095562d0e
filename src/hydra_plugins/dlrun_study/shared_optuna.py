"""The Optuna sweeper of dlrun's search presets: hydra-optuna-sweeper's, and with a storage one
study shared by every process that names it (dlrun.sweeps.study). Hydra imports this module at every
start: it imports nothing more than the plugin's own light module."""

from __future__ import annotations

from typing import Any

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # no dlrun[sweep]: the presets say which extra to install
    OptunaSweeper = None

if OptunaSweeper is not None:

    class SharedOptunaSweeper(OptunaSweeper):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.sweeper.storage:
                from dlrun.sweeps.study import SharedStudy

                self.sweeper.__class__ = SharedStudy


def register() -> None:
    """Hydra finds plugins by listing the hydra_plugins package's folders, which an editable
    install (an import hook, not a folder) hides: register the class as that scan would."""
    if OptunaSweeper is not None:
        from hydra.core.plugins import Plugins

        name = f"{SharedOptunaSweeper.__module__}.{SharedOptunaSweeper.__name__}"
        Plugins.instance().class_name_to_class.setdefault(name, SharedOptunaSweeper)


def storage_problem(storage: object) -> str | None:
    """Optuna 2 (which hydra-optuna-sweeper needs) cannot store a study with SQLAlchemy 2."""
    if not storage:
        return None
    import optuna
    import sqlalchemy

    if optuna.__version__.startswith("2.") and not sqlalchemy.__version__.startswith("1."):
        return (
            f"hydra.sweeper.storage={storage}: Optuna {optuna.__version__} stores a study only "
            f"with SQLAlchemy<2 (this environment has {sqlalchemy.__version__}): "
            "pip install 'sqlalchemy<2' 'alembic<1.14' (MLflow 3's server needs SQLAlchemy 2: "
            "keep it in another environment)"
        )
    return None
