"""`dlrun-eval`: score a checkpoint with its task's own evaluate(), without training.

The config is the run's own, recomposed from its recorded overrides (as ``resume=`` does) with
the new ones on top, so ``data.path=other.csv`` or ``data.name=FashionMNIST`` points the same
model at data of the same shape that it never saw. The run directory is only read, except for
this evaluation's record, ``eval/<time>.json``. On the run's own data the metrics equal the
run's recorded ones for that epoch: the task is built under the run's seed (a task draws its
split from the seeded RNGs) and scored by the loop's own validate(), with the run's CPU threads.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dlrun import tasks
from dlrun.cli import task_args
from dlrun.cli.args import one_line
from dlrun.config import schema
from dlrun.errors import DlrunError
from dlrun.rundir import atomic as files
from dlrun.rundir import layout as rundir
from dlrun.rundir import lock as dirlock
from dlrun.rundir.layout import RunDir
from dlrun.rundir.records import quote
from dlrun.rundir.summary import shortest
from dlrun.runs.console import Console, metrics_text
from dlrun.terminal import ends_quietly_on_closed_pipe

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dlrun.config.schema import Config
    from dlrun.tasks.base import Task

PROG = "dlrun-eval"
WHICH = ("best", "last")


def target(spec: str, which: str = "best") -> tuple[Path, RunDir | None]:
    """``RUN_DIR|CHECKPOINT|latest`` -> (the checkpoint file, the run directory it belongs to:
    None for a .pt file outside any run)."""
    path = Path(spec).expanduser()
    if spec == rundir.LATEST and not path.exists():
        path = rundir.latest(f"{PROG} latest").path
        print(f"{PROG} latest: {path} (the newest run under {rundir.OUTPUTS}/)", flush=True)
    if path.is_dir():
        run = RunDir(path)
        file = run.best if which == "best" else run.last
        if not file.is_file():
            hint = (
                " (best.pt is written once a validated epoch improves; try --checkpoint last)"
                if which == "best" and run.last.is_file()
                else ""
            )
            raise DlrunError(f"{path}: no {file.relative_to(path)} in that directory{hint}")
        return file, run if run.config.is_file() else None
    if not path.is_file():
        raise DlrunError(f"{spec}: no such checkpoint file or run directory")
    owner = RunDir(path.parent.parent)  # <run>/checkpoints/<name>.pt
    inside = path.parent.name == rundir.CHECKPOINTS and owner.config.is_file()
    return path, owner if inside else None


def compose(
    run: RunDir | None,
    task: str,
    overrides: list[str],
    config_dir: str | None = None,
    trust: list[str] | None = None,
) -> Config:
    """The run's recorded overrides (all but resume=: evaluating never resumes), then the new
    ones; a checkpoint outside any run gets its own task and the new overrides. ``config_dir``:
    the user's own configs, as `dlrun --config-dir` searched them for the run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    if run is not None:
        base = [o for o in run.kept_overrides([*overrides, *(trust or [])]) if key(o) != "resume"]
    else:
        base = [] if any(key(o) == "task" for o in overrides) else [f"task={task}"]
    overrides = [o for o in overrides if o != rundir.TRUST_TASK_FILE]  # the Python API's way
    flags = ["--config-dir", config_dir] if config_dir else []
    # the tasks found, a run's task file, and those beside the user's configs
    prepared = task_args.prepare([*flags, *base, *overrides])[len(flags) :]
    if config_dir:
        prepared.append(f"hydra.searchpath=[{quote('file://' + str(Path(config_dir).absolute()))}]")
    try:
        with initialize_config_module(config_module="dlrun.conf", version_base=None):
            cfg = hydra_compose("config", overrides=prepared)
        return schema.to_objects(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        hint = ""
        if isinstance(exc, MissingConfigException) and not config_dir:
            hint = "; a run made with --config-dir DIR needs --config-dir DIR here too"
        raise DlrunError(one_line(exc) + hint) from exc


@dataclass
class Loaded:
    """A checkpoint's model, in eval mode, with the task and config it was built from."""

    path: Path
    state: dict[str, Any]  # the checkpoint as read
    config: Config
    task: Task
    model: nn.Module
    device: torch.device


def load(
    path: Path,
    run: RunDir | None,
    overrides: list[str],
    config_dir: str | None = None,
    trust: list[str] | None = None,
) -> Loaded:
    """Build the task and model under the (recomposed) config and load the checkpoint's
    weights; another task's checkpoint or another model shape is one line."""
    # these import torch: only once there is work
    from dlrun.engine import checkpoint
    from dlrun.engine import device as devices
    from dlrun.runs.setup import seed_everything

    try:
        state = checkpoint.load(path)
    except checkpoint.Damaged as exc:
        if path.parent.name != rundir.CHECKPOINTS:
            raise
        command = f"{PROG} {shlex.quote(str(path.parent.parent))} --checkpoint {{}}"
        raise checkpoint.offering_other(path, exc, command) from None
    config = compose(run, str(state["task"]), overrides, config_dir, trust)
    if config.task.name != state["task"]:
        raise DlrunError(
            f"checkpoint {path}: is from task {state['task']}, this evaluation is task "
            f"{config.task.name} (drop the task= override, or give task={state['task']})"
        )
    device = devices.resolve(config.device)
    seed_everything(config.seed)
    task = tasks.create(config.task, config.data, device)
    model = task.build_model().to(device)
    checkpoint.load_model(path, state, model)
    model.eval()
    return Loaded(path, state, config, task, model, device)


def score(loaded: Loaded) -> dict[str, float]:
    """The task's evaluate() through the loop's validate(), as the run scored its epochs."""
    from dlrun.engine import loop, steps  # imports torch: once there is work

    with steps.cpu_threads(loaded.config.trainer, loaded.model, loaded.device):
        metrics = loop.validate(loaded.task, loaded.model)
    metrics.pop("time_s", None)
    return metrics


def evaluate(
    spec: str,
    which: str,
    overrides: list[str],
    config_dir: str | None = None,
    trust: list[str] | None = None,
) -> tuple[dict[str, float], Path | None]:
    """Score, print the table, write the record: (the metrics, the record's path or None).
    ``trust``: ``[--trust-task-file]`` to import the task file the run's records name."""
    path, run = target(spec, which)
    # a writer of its run directory (its eval/ record): one at a time, refused before any work
    try:
        lock = dirlock.acquire(run.path) if run is not None and not dirlock.held(run.path) else None
    except OSError as exc:
        raise DlrunError(
            f"cannot write the run directory {run.path} ({files.describe(exc)}), where "
            f"{PROG} records its evaluation; {files.remedy(exc, run.path)}, or evaluate a copy "
            "of the run directory"
        ) from None
    try:
        return _evaluate(path, run, overrides, config_dir, trust or [])
    finally:
        if lock is not None:
            lock.release()


def _evaluate(
    path: Path, run: RunDir | None, overrides: list[str], config_dir: str | None, trust: list[str]
) -> tuple[dict[str, float], Path | None]:
    loaded = load(path, run, overrides, config_dir, trust)
    metrics = score(loaded)
    epoch = loaded.state.get("epoch")
    console = Console(progress=False, total_epochs=0)
    rows = [(k, metrics_text({"": v}).strip()) for k, v in metrics.items()]
    data = f" with {' '.join(overrides)}" if overrides else ""
    console.table(f"{loaded.task.name}: {path} (epoch {epoch}){data}", rows, ("metric", "value"))
    if run is None:
        console.print(f"{path} is not in a run directory: no record written")
        return metrics, None
    record = {
        "checkpoint": str(path),
        "task": loaded.task.name,
        "epoch": epoch,
        "overrides": list(overrides),
        "metrics": {k: shortest(v) for k, v in metrics.items()},  # as summary.json has them
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        written = run.write_eval(record)
    except OSError as exc:
        raise DlrunError(
            f"the metrics above were not recorded: {files.describe(exc)}; "
            f"{files.remedy(exc, run.path)}, then evaluate again"
        ) from None
    console.print(f"record: {written}")
    return metrics, written


@ends_quietly_on_closed_pipe
def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit 0, or 2 for bad input (one line on stderr)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} RUN_DIR|CHECKPOINT|latest [--checkpoint best|last] [--config-dir DIR] "
        "[key=value ...]",
        description="Score a checkpoint with its task's own evaluation, without training. A run "
        "directory means its checkpoints/best.pt; key=value overrides recompose the run's "
        "recorded config (e.g. data.path=other.csv to score the model on other data). Prints "
        "the metrics and writes eval/<time>.json in the run directory.",
    )
    parser.add_argument("target", help="a run directory, a .pt file, or latest")
    parser.add_argument("--checkpoint", choices=WHICH, default="best", help="of a run directory")
    parser.add_argument("--config-dir", "-cd", help="your own configs, as the run had them")
    parser.add_argument(
        rundir.TRUST_TASK_FILE,
        action="store_true",
        help="import the task file the run's records name (else name it: task_file=PATH)",
    )
    parser.add_argument("overrides", nargs="*", help="key=value, as for dlrun")

    def error(message: str) -> NoReturn:
        raise DlrunError(f"{message}; see {PROG} --help")

    parser.error = error  # type: ignore[method-assign]
    try:
        args = parser.parse_intermixed_args(argv)  # overrides before or after --checkpoint
        trust = [rundir.TRUST_TASK_FILE] if args.trust_task_file else []
        evaluate(args.target, args.checkpoint, list(args.overrides), args.config_dir, trust)
    except DlrunError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a run directory or record this user may not read
        print(f"{PROG}: error: cannot read {files.describe(exc)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
