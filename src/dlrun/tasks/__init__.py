"""Finding tasks: the name used in `task=NAME` -> the module that holds it.

Every task is found the same way, dlrun's six tutorials included:

- an entry point in the group ``dlrun.tasks`` of an installed distribution (dlrun declares its
  own in its pyproject.toml), naming the task's module;
- a loose task file named on the command line, ``dlrun task=./my_task.py``, which is rewritten to
  ``task=<name> task_file=/abs/my_task.py`` so that the recorded overrides that resume and rerun
  replay load the file again.

A task module holds its config dataclass (whose ``name`` ClassVar is the task's name: the only
place it is written), optionally ``DATA`` (its DataConfig subclass), and its Task class. A module
that defines one of each needs nothing more; ``CONFIG = ...`` and ``TASK = ...`` name them
otherwise, and ``TASK`` may be the class's "module:Class" path. The built-ins are small packages
that give the path and keep their torch code in ``task.py``: `dlrun --help` and config errors
import every task's config, and a package lets that stay torch-free without moving each task's
code out of one place. A task's YAML (``<name>.yaml`` beside its module; the built-ins' stay in
conf/task/) is stored in Hydra's ConfigStore with its typed schemas, so it composes like theirs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from inspect import isabstract
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

# the task API (docs/extending.md): a task's config builds on these, and checks its values with
# check(); Task, the class a task's code subclasses, imports torch, so it is loaded on first use
from dlrun.config.schema import DataConfig, ImplTaskConfig, TaskConfig
from dlrun.errors import ConfigError, check

if TYPE_CHECKING:
    import torch

    from dlrun.tasks.base import Task  # imports torch: only for a task's code

__all__ = ["DataConfig", "ImplTaskConfig", "Task", "TaskConfig", "check"]


def __getattr__(name: str) -> object:
    if name == "Task":
        from dlrun.tasks.base import Task  # imports torch: only for a task's code

        return Task
    raise AttributeError(f"module 'dlrun.tasks' has no attribute {name!r}")


GROUP = "dlrun.tasks"  # the entry-point group
OWN = "dlrun"  # the distribution that declares the tutorials


@dataclass(frozen=True)
class Found:
    """One task as found: its name, config and data schemas, Task class (or its path), origin."""

    name: str
    config: type
    data: type | None
    task: type | str
    module: ModuleType
    origin: str  # the file or entry point, for messages
    yaml: Path | None  # <name>.yaml beside the module, when there is one
    dist: str | None  # the distribution that declares it; None: a loose task file

    @property
    def tutorial(self) -> bool:
        """One of dlrun's own tasks (their YAML is conf/task/<name>.yaml)."""
        return self.dist == OWN


_found: dict[str, Found] = {}
_scanned = False


def found() -> dict[str, Found]:
    """Every task known to this process: the installed entry points, then loaded task files."""
    global _scanned
    if not _scanned:
        _found.clear()  # a scan that failed part way starts again from nothing
        ours = False
        eps = [
            (ep.dist.name if ep.dist is not None else "?", ep) for ep in entry_points(group=GROUP)
        ]
        for dist, ep in sorted(eps, key=lambda d_ep: (d_ep[0] != OWN, d_ep[1].name)):  # ours first
            origin = f"entry point {ep.name} = {ep.value} ({dist})"
            try:
                module = ep.load()
            except Exception as exc:
                raise ConfigError(f"{origin}: cannot be imported: {_said(exc)}") from exc
            if not isinstance(module, ModuleType):
                raise ConfigError(f"{origin}: names {module!r}, expected a task's module")
            found_one = _add(module, origin, dist)
            if found_one.name != ep.name:
                del _found[found_one.name]
                raise ConfigError(
                    f"{origin}: the entry point is named {ep.name} but its task is named "
                    f"{found_one.name} (CONFIG.name): name the entry point {found_one.name}"
                )
            ours = ours or dist == OWN
        _scanned = True
        if not ours:
            raise ConfigError(
                "dlrun's own tasks are not registered (no dlrun.tasks entry points): "
                "reinstall dlrun, e.g. pip install -e ."
            )
    return _found


def is_scanned() -> bool:
    """Whether the installed tasks have been found (without finding them now)."""
    return _scanned


def _said(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _named(obj: object) -> str:
    return getattr(obj, "__qualname__", None) or repr(obj)


def _add(module: ModuleType, origin: str, dist: str | None = None) -> Found:
    """Check a task module and add it to the registry (one line naming origin when it is wrong)."""
    config = getattr(module, "CONFIG", None) or _defined(
        module, origin, _is_config, "config dataclass"
    )
    if config is None:
        raise ConfigError(
            f"{origin}: no task config: expected a dataclass with name: ClassVar[str] = '<task>' "
            "(or CONFIG = that dataclass)"
        )
    if not _is_dataclass(config):
        raise ConfigError(
            f"{origin}: CONFIG = {_named(config)} is not a dataclass (add @dataclass)"
        )
    name = getattr(config, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{origin}: {config.__name__} has no name: expected name: ClassVar[str] = '<task>'"
        )
    data = getattr(module, "DATA", None)
    if data is not None and not _is_dataclass(data):
        raise ConfigError(f"{origin}: DATA = {_named(data)} is not a dataclass (add @dataclass)")
    task = getattr(module, "TASK", None) or _defined(module, origin, _is_task, "Task subclass")
    if task is None:
        raise ConfigError(
            f"{origin}: no task class: expected a subclass of dlrun's Task "
            "(or TASK = its 'module:Class' path)"
        )
    if not isinstance(task, (type, str)):
        raise ConfigError(f"{origin}: TASK = {task!r} is not a class or a 'module:Class' path")
    if name in _found and dist is None and _found[name].dist not in (None, OWN):
        raise _Installed(name, config, data)  # a task file moved into a package (load_file)
    if name in _found:
        raise ConfigError(
            f"{origin}: task name {name} is taken by {_found[name].origin}; choose another name"
        )
    yaml = Path(module.__file__).parent / f"{name}.yaml" if module.__file__ else None
    yaml = yaml if yaml and yaml.is_file() else None
    one = Found(name, config, data, task, module, origin, yaml, dist)
    if not one.tutorial and _builtin_yaml(name):
        raise ConfigError(f"{origin}: task name {name} is taken by dlrun's conf/task/{name}.yaml")
    _found[name] = one
    return one


def _is_dataclass(obj: object) -> bool:
    """A class made a dataclass itself: a subclass of one without @dataclass would compose, but
    its own fields would be silently left out of the typed config."""
    return isinstance(obj, type) and "__dataclass_fields__" in vars(obj)


def _is_config(obj: object) -> bool:
    """A dataclass whose `name` is a ClassVar (a data config's `name` field is a setting)."""
    return (
        _is_dataclass(obj)
        and isinstance(getattr(obj, "name", None), str)
        and "name" not in {f.name for f in dataclasses.fields(obj)}
    )


def _is_task(obj: object) -> bool:
    from dlrun.tasks.base import Task  # imports torch: only for a task's code

    return isinstance(obj, type) and issubclass(obj, Task) and not isabstract(obj)


def _defined(
    module: ModuleType, origin: str, kind: Callable[[object], bool], what: str
) -> type | None:
    """The one class of a kind that a module defines itself (CONFIG, TASK when not given)."""
    mine = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and v.__module__ == module.__name__ and kind(v)
    ]
    if len(mine) > 1:
        names = ", ".join(sorted(c.__name__ for c in mine))
        raise ConfigError(
            f"{origin}: {len(mine)} {what}es ({names}): name the task's with "
            f"{'CONFIG' if kind is _is_config else 'TASK'} = ..."
        )
    return mine[0] if mine else None


def _builtin_yaml(name: str) -> bool:
    from importlib.resources import files

    return files("dlrun.conf").joinpath("task", f"{name}.yaml").is_file()


def load_file(path: str | Path, beside_configs: bool = False) -> Found:
    """Import a loose task file (once per file); its schemas and YAML are stored by
    :func:`dlrun.cli.task_args.load`.

    ``beside_configs``: the file is ``DIR/task/NAME.py`` of a ``--config-dir DIR``, where Hydra
    itself composes ``DIR/task/NAME.yaml``; that YAML must then be written as a tutorial's
    (``# @package _global_`` and ``- /schema/task@task: NAME`` in its defaults)."""
    path = Path(path).expanduser().resolve()
    one = loaded(path)
    if one is not None:
        return one
    origin = f"task file {path}"
    if not path.is_file():
        raise ConfigError(f"{origin}: no such file")
    # a stable module name, so that the config's class pickles and reads back by the same name
    module_name = f"dlrun_task_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{origin}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        one = _add(module, origin)
    except _Installed as twin:
        sys.modules.pop(module_name, None)
        return _moved(origin, path, twin)
    except ConfigError:
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        lines = [
            n for f, n in traceback.walk_tb(exc.__traceback__) if f.f_code.co_filename == str(path)
        ]
        at = f" (at {path}:{lines[-1]})" if lines else ""  # the file's own line that raised
        raise ConfigError(f"{origin}: cannot be imported: {_said(exc)}{at}") from exc
    if beside_configs and one.yaml is not None:
        _check_config_dir_yaml(one)
    return one


def loaded(path: Path) -> Found | None:
    """The task of a task file this process has loaded already."""
    for one in found().values():
        if one.module.__file__ and Path(one.module.__file__).resolve() == path:
            return one
    return None


def forget_files() -> list[str]:
    """Forget the task files loaded (their modules too): the names of their tasks."""
    names = [n for n, one in found().items() if one.dist is None]
    for name in names:
        sys.modules.pop(_found.pop(name).module.__name__, None)
    return names


class _Installed(ConfigError):
    """A task file whose name an installed package's task has (see :func:`_moved`)."""

    def __init__(self, name: str, config: type, data: type | None) -> None:
        super().__init__(name)
        self.name, self.config, self.data = name, config, data


def _moved(origin: str, path: Path, twin: _Installed) -> Found:
    """A task file and an installed package with a task of the same name: the same task moved
    into a package (the way docs/extending.md recommends) when their settings, data settings
    and YAML are the same; then the package runs it, so that runs made from the file resume,
    rerun and evaluate. Otherwise the line says how to choose."""
    installed = _found[twin.name]
    differ = [
        what
        for what, mine, theirs in (
            ("task.*", twin.config, installed.config),
            ("data.*", twin.data, installed.data),
        )
        if _fields(mine) != _fields(theirs)
    ]
    beside = path.parent / f"{twin.name}.yaml"
    yamls = [_yaml(beside if beside.is_file() else None), _yaml(installed.yaml)]
    if yamls[0] != yamls[1]:
        differ.append(f"{twin.name}.yaml")
    if not differ:
        return installed
    raise ConfigError(
        f"{origin} and {installed.origin} are two tasks named {twin.name}, and their "
        f"{', '.join(differ)} differ: to run the package, use task={twin.name} (and add "
        f"task_file=null to resume, rerun or evaluate a run made from the file); to run the "
        f"file, uninstall {installed.dist} or rename one of them"
    )


def _fields(kind: type | None) -> list[tuple[str, str, str]]:
    if kind is None:
        return []
    return [
        (f.name, str(f.type), repr(f.default) if f.default is not dataclasses.MISSING else "")
        for f in dataclasses.fields(kind)
    ]


def _yaml(path: Path | None) -> object:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) if path is not None else None
    except (OSError, yaml.YAMLError):
        return path.read_bytes() if path is not None else None


def _check_config_dir_yaml(one: Found) -> None:
    """Hydra reads a config dir's ``task/NAME.yaml`` as it is: it must say what dlrun adds to a
    YAML beside a task file elsewhere (its package and its typed schema)."""
    text = one.yaml.read_text()
    if (
        not text.lstrip().startswith("# @package _global_")
        or f"/schema/task@task: {one.name}" not in text
    ):
        raise ConfigError(
            f"{one.yaml}: a task's YAML beside your configs is written as conf/task/*.yaml are: "
            f"a first line '# @package _global_' and '- /schema/task@task: {one.name}' in its "
            "defaults (docs/extending.md)"
        )


def task_class(name: str) -> type[Task]:
    """The Task class of a task (imported now: the built-ins' import torch)."""
    from dlrun.tasks.base import Task  # imports torch: only for a task's code

    one = found().get(name)
    if one is None:
        raise ConfigError(f"task={name}: no such task here (a task file is named as task=PATH.py)")
    task = one.task
    if isinstance(task, str):
        module_name, _, attr = task.partition(":")
        try:
            task = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{one.origin}: TASK = {one.task!r}: {_said(exc)}") from exc
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise ConfigError(f"{one.origin}: TASK = {task!r} is not a subclass of dlrun's Task")
    return task


def create(cfg: TaskConfig, data: DataConfig, device: torch.device) -> Task:
    return task_class(cfg.name)(cfg, data, device)
