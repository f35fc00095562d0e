"""What a run shows and draws: its header, its closing table and its plots.

Kept out of the run's stages so that they read as what happens, not how it is shown.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlrun import plots as figures
from dlrun.engine import device as devices
from dlrun.engine.profiling import WAIT, WARMUP, Profiler
from dlrun.rundir.summary import Summary
from dlrun.runs import stop_reasons as failures
from dlrun.runs.console import Console, metrics_text
from dlrun.tasks.base import Task

if TYPE_CHECKING:
    from dlrun.engine.training import Training
    from dlrun.runs.info import RunInfo

log = logging.getLogger("dlrun")


def header(
    console: Console,
    info: RunInfo,
    plain: dict[str, Any],
    training: Training,
    name: str | None = None,
) -> None:
    """The run's name, the command as composed, the model, each config group's values, and
    where it writes (``plain``: the resolved config as plain data)."""
    choices, seed, run_dir = info.choices, plain.get("seed"), info.run_dir
    device, model = training.device, training.model
    if name:
        console.print(f"run: {name}", style="bold")
    console.print(
        f"dlrun task={choices.get('task')} optimizer={choices.get('optimizer')} "
        f"device={devices.describe(device)} seed={seed}"
    )
    total, trainable, layers = model_summary(model)
    frozen = f", {total - trainable:,} frozen" if trainable < total else ""
    console.table(
        f"model: {type(model).__name__}, {total:,} parameters{frozen}",
        layers,
        ("layer", "type", "out", "params"),
        shown=SHOWN_LAYERS,
    )
    rows = [(key, settings_text(plain[key])) for key in ("task", "optimizer", "trainer", "data")]
    console.table("settings", rows, ("group", "values"))
    console.print(f"  run dir   {run_dir}", style="dim")


SHOWN_LAYERS = 12  # on screen; dlrun.log has every layer


def model_summary(model: torch.nn.Module) -> tuple[int, int, list[tuple[str, ...]]]:
    """Parameter count, trainable count, and one row per layer that holds parameters or has no
    sub-layers: name, type, output features (where the layer declares them), its parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = []
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if not own and (next(module.children(), None) is not None or module is model):
            continue
        out = next(
            (getattr(module, a) for a in OUT_ATTRS if isinstance(getattr(module, a, None), int)),
            None,
        )
        rows.append((name or "(model)", type(module).__name__, _count(out), f"{own:,}"))
    return total, trainable, rows


# what torch's layers call their output size (Linear, Conv*, embeddings, norms, RNNs)
OUT_ATTRS = ("out_features", "out_channels", "embedding_dim", "num_features", "hidden_size")


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def settings_text(values: Any, prefix: str = "") -> str:
    """A config group's values as `key=value` pairs, nested keys dotted (`betas=[0.9, 0.999]`)."""
    if not isinstance(values, dict):
        return f"{prefix.rstrip('.')}={_value(values)}" if prefix else _value(values)
    if not values:
        return "-" if not prefix else f"{prefix.rstrip('.')}={{}}"
    return " ".join(
        settings_text(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}={_value(v)}"
        for k, v in values.items()
    )


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def profile(console: Console, profiler: Profiler, trace: Path) -> None:
    """The profiled steps' costliest ops, and where their trace is."""
    table = profiler.finish(trace)
    if not table:
        console.print(
            f"profile: nothing recorded; the run took {profiler.seen} train steps, and the "
            f"profiler records after {WAIT + WARMUP} (more trainer.epochs)",
            style="yellow",
        )
        return
    console.print(f"profile: {profiler.recorded()} train steps, the costliest ops first")
    console.print(table.rstrip())
    console.print(f"profile trace: {trace} (open it in Perfetto or TensorBoard's profiler)")


def closing(
    console: Console, task: Task, model: torch.nn.Module, summary: Summary, best: dict[str, Any]
) -> None:
    """The task's own report, then the final and best value of every metric."""
    model.eval()
    with torch.no_grad():
        text = task.report(model)
    if text:
        console.print(text)
    rows = [
        (k, metrics_text({"": v}).strip(), metrics_text({"": best.get(k, "")}).strip())
        for k, v in summary.final.items()
        if k != "epoch"
    ]
    done = summary.epochs_completed
    console.table(
        f"{task.name}: {done} epoch{'' if done == 1 else 's'} in {summary.wall_s:.1f}s "
        f"(best at epoch {best.get('epoch', '-')})",
        rows,
        ("metric", "final", "best"),
    )


def job_line(
    console: Console, num: int | None, summary: Summary, best: dict[str, Any], where: Path
) -> None:
    """A sweep's job in one line: its name, epochs, time, objective (final and best), where."""
    objective = summary.objective_name
    final = summary.final.get(objective) if objective else None
    scored = ""
    if final is not None:
        scored = f", {objective} {metrics_text({'': final}).strip()}"
        if best.get(objective) is not None:
            best_text = metrics_text({"": best[objective]}).strip()
            scored += f" (best {best_text} at epoch {best.get('epoch')})"
    console.print(
        f"job {'-' if num is None else num}: {summary.name}: {summary.status}, "
        f"{summary.epochs_completed} epochs in {summary.wall_s:.1f}s{scored}  {where}"
    )


def plots(
    console: Console,
    task: Task,
    model: torch.nn.Module,
    rows: list[dict[str, Any]],
    where: Path,
    title: str | None = None,
) -> None:
    """The learning curves and the task's figures; a plot that cannot be drawn never costs the
    run its result (a warning), a disk that cannot hold it does (resume= then finishes it)."""
    try:
        drawn = {"curves": figures.curves(rows, task.objective, title, task.loss_sums)}
        with torch.no_grad():
            drawn.update(task.figures(model, rows))
        figures.save(drawn, where)
    except OSError:  # a full or read-only disk is the run's failure, with what to do
        raise
    except Exception as exc:
        log.exception("plotting failed")
        mine = failures.user_code(exc)  # the task's own figures(): its file and line
        said = f"{mine}: {failures.said(exc)}; the traceback is in the run log" if mine else exc
        console.print(f"warning: plots not written ({said})", style="yellow")
