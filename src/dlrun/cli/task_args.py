"""Task files on the command line, rewritten before Hydra composes: ``task=./my_task.py``
becomes ``task=NAME task_file=/abs/my_task.py`` (so that the recorded overrides that resume and
rerun replay load the file again), and a ``--config-dir DIR``'s ``task/NAME.py`` is loaded beside
its YAML. Every task found is stored in Hydra's ConfigStore first. Torch-free."""

from __future__ import annotations

from pathlib import Path

from dlrun import compat, tasks
from dlrun.config import store
from dlrun.errors import ConfigError
from dlrun.rundir.records import quote
from dlrun.tracking import registry


def load(path: str | Path, beside_configs: bool = False) -> tasks.Found:
    """A task file's task, imported once per file, its schemas and YAML stored for Hydra."""
    path = Path(path).expanduser().resolve()
    one = tasks.loaded(path)
    if one is None:
        one = tasks.load_file(path, beside_configs)
        if one.dist is None:  # not a file whose task an installed package has
            # with a config dir, Hydra finds DIR/task/NAME.yaml itself
            store.store_task(one, with_yaml=not beside_configs)
    return one


def _value(override: str) -> str:
    value = override.split("=", 1)[1].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].replace("\\'", "'").replace("\\\\", "\\")
    return value


def prepare(argv: list[str]) -> list[str]:
    """Before Hydra composes: register every task found and load the task files `argv` names.
    `task=PATH.py` becomes `task=NAME task_file=PATH` (an absolute path, so that resume and rerun,
    which replay the recorded overrides, load the file again from any directory)."""
    _forget_task_files()  # before register(), which stores every task found
    store.register(tasks.found().values(), registry.found().values(), registry.config_schema())

    beside = [load(f, beside_configs=True) for d in _config_dirs(argv) for f in _task_files(d)]
    out, files = [], []
    for arg in argv:
        key = arg.split("=", 1)[0] if "=" in arg and not arg.startswith("-") else None
        if key == "task" and _value(arg).endswith(".py"):
            one = load(_value(arg))
            out.append(f"task={one.name}")
            if one.dist is None:  # not a file whose task an installed package has
                files.append(one)
                out.append(f"task_file={quote(str(one.module.__file__))}")
        elif key == "task" and (one := next((f for f in beside if f.name == _value(arg)), None)):
            files.append(one)  # DIR/task/NAME.py beside DIR/task/NAME.yaml (--config-dir DIR)
            out += [arg, f"task_file={quote(str(one.module.__file__))}"]
        elif key in ("task_file", "+task_file") and _value(arg) not in ("", "null"):
            one = _recorded_file(_value(arg), argv)
            if one is not None and one.dist is None:
                files.append(one)
                out.append(f"task_file={quote(str(one.module.__file__))}")
        else:
            out.append(arg)
    launcher = [_value(a) for a in argv if a.startswith("hydra/launcher=")]
    if files and launcher and launcher[-1] != "basic":
        # a launcher's worker processes import the config's classes by module name, and a task
        # file's module exists only in the process that loaded it
        raise ConfigError(
            f"hydra/launcher={launcher[-1]}: a task file ({files[0].module.__file__}) "
            "runs in dlrun's own process only; install it as a package with a dlrun.tasks "
            "entry point for other launchers (docs/extending.md)"
        )
    return out


def _recorded_file(path: str, argv: list[str]) -> tasks.Found | None:
    """``task_file=PATH`` (as a run records it): the file's task, or, when the file is gone
    and an installed package has the run's ``task=NAME``, that package's (the task moved)."""
    named = [_value(a) for a in argv if a.split("=", 1)[0] == "task"]
    installed = tasks.found().get(named[-1]) if named else None
    moved = installed is not None and installed.dist not in (None, tasks.OWN)
    if not Path(path).expanduser().is_file() and moved:
        return installed
    return load(path)


def _config_dirs(argv: list[str]) -> list[Path]:
    """The directories of the user's own configs (Hydra's ``--config-dir DIR``, ``-cd DIR``)."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(argv[i + 1])
        elif arg.startswith("--config-dir="):
            dirs.append(arg.split("=", 1)[1])
    return [Path(d).expanduser() for d in dirs]


def _task_files(config_dir: Path) -> list[Path]:
    return sorted((config_dir / "task").glob("*.py")) if (config_dir / "task").is_dir() else []


def _forget_task_files() -> None:
    """Task files are loaded per command: in one process (a notebook, the tests) each command
    loads the files it names afresh, so an edited file, or another file of the same name, is the
    one that runs."""
    for name in tasks.forget_files():
        for group in ("task", "schema/task", "schema/data"):
            compat.unstore(group, name)
