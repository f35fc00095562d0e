"""One run, start to finish: config -> device, task, model, optimizer -> the loop -> the record.

The Hydra task function (cli.py) hands the composed config here. This is the only place that ties
the task, the loop, checkpoints, metrics files, plots and the console together.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dlrun import (
    checkpoint,
    compat,
    distributed,
    files,
    loggers,
    loop,
    metrics,
    optim,
    plots,
    schema,
    steps,
    tasks,
)
from dlrun import device as devices
from dlrun.console import Console, metrics_text
from dlrun.errors import ConfigError, Diverged, DlrunError, NonFiniteLoss
from dlrun.interrupt import StopRequest
from dlrun.snapshot import LastGood
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


def execute(cfg: DictConfig, config: schema.Config) -> float | None:
    """The Hydra task function's body: returns the objective (what sweepers optimise)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    run = Run(config, schema.plain(cfg), run_dir, dict(hydra_cfg.runtime.choices))
    run.summary["overrides"] = [str(o) for o in hydra_cfg.overrides.task]
    try:
        objective = run.main()
    except BaseException:
        distributed.teardown()
        raise
    distributed.teardown(together=True)
    return objective


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Run:
    def __init__(
        self, config: schema.Config, plain: dict[str, Any], run_dir: Path, choices: dict[str, Any]
    ) -> None:
        self.config = config
        self.plain = plain
        self.run_dir = run_dir
        self.choices = choices
        # under torchrun only rank 0 shows progress and writes the run directory
        self.writes = distributed.is_main()
        self.console = Console(
            config.trainer.progress, config.trainer.epochs, quiet=not self.writes
        )
        self.started = time.time()
        previous = metrics.read_json(run_dir / "summary.json") if config.resume else None
        self.summary: dict[str, Any] = {
            "task": config.task.name,
            "status": "running",
            "epochs_completed": 0,
            "epochs": config.trainer.epochs,
            "final": {},
            "best": {},
            "objective": None,
            "objective_name": None,
            "maximize": None,
            "seed": config.seed,
            "device": None,
            "optimizer": choices.get("optimizer"),
            "wall_s": 0.0,
            "error": None,
            "resumes": (previous or {}).get("resumes", []),
        }
        self._wall_before = float((previous or {}).get("wall_s") or 0.0)
        self.epoch = 0
        self.saved_epoch: int | None = None  # the epoch in checkpoints/last.pt
        self.stop = StopRequest()
        self.recorder: Recorder | None = None
        # a resume touches the run's records only once its checkpoint has been accepted
        self.recording = not config.resume

    # ------------------------------------------------------------------ lifecycle

    def main(self) -> float | None:
        self._write_summary()
        try:
            try:
                objective = self._train()
            except NonFiniteLoss as exc:
                raise self._diverged(str(exc)) from None
            except RuntimeError as exc:
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    raise self._out_of_memory(exc) from None
                if self.config.trainer.detect_anomaly and "nan" in str(exc).lower():
                    raise self._diverged(
                        f"autograd's anomaly mode stopped epoch {self.epoch + 1}: "
                        + str(exc).strip().splitlines()[0].rstrip(".")
                    ) from None
                raise
        except KeyboardInterrupt:
            self.console.stop()
            self._write_summary("interrupted")
            if self.saved_epoch is None:
                self.console.print(
                    f"interrupted at epoch {self.epoch}, before any checkpoint", style="yellow"
                )
            elif HydraConfig.get().mode == RunMode.MULTIRUN:  # the sweep says how to go on
                self.console.print(
                    f"interrupted: checkpoint of epoch {self.saved_epoch} written", style="yellow"
                )
            else:
                self.console.print(
                    f"interrupted: checkpoint of epoch {self.saved_epoch} written; continue with: "
                    f"{distributed.command()} resume={self.run_dir}",
                    style="yellow",
                )
            raise
        except BaseException as exc:
            self.console.stop()
            if not self.recording:  # a refused resume leaves no trace but the log
                self._discard_resume_record()
            self.summary["exit_code"] = getattr(exc, "exit_code", 1)
            try:
                self._write_summary("failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            except OSError:  # e.g. the disk is full: the error itself matters more
                log.exception("summary.json not written")
            if isinstance(exc, DlrunError):
                log.error("stopped: %s", exc)
            else:
                log.exception("run failed")
            raise
        return objective

    def _diverged(self, what: str) -> Diverged:
        """A NaN/inf stop: last.pt gets the last finite epoch, and the message says what to do."""
        if self.recorder is not None:
            self.recorder.save_last_good()
        held = (
            f"checkpoints/last.pt holds epoch {self.saved_epoch}, the last finite state"
            if self.saved_epoch is not None
            else "no checkpoint was written"
        )
        lr = self.config.optimizer.lr
        return Diverged(
            f"{what}; {held}; lower the learning rate: optimizer.lr={lr:g} now, try "
            f"optimizer.lr={lr / 10:g}"
        )

    def _out_of_memory(self, exc: BaseException) -> DlrunError:
        bs = self.config.trainer.batch_size
        return DlrunError(
            f"out of GPU memory at epoch {self.epoch + 1} with trainer.batch_size={bs} "
            f"({str(exc).strip().splitlines()[0][:120]}); try trainer.batch_size={max(1, bs // 2)}"
            ", a smaller model, or device=cpu"
        )

    def _discard_resume_record(self) -> None:
        subdir = HydraConfig.get().output_subdir or ""
        if subdir.startswith(".hydra/resume-"):
            shutil.rmtree(self.run_dir / subdir, ignore_errors=True)

    def _write_summary(self, status: str = "running", error: str | None = None) -> None:
        if not self.recording or not self.writes:
            return
        if self.recorder is not None:  # the metrics so far, whatever the status
            last_val = self.recorder.history.last("val") or {}
            final = {k: v for k, v in last_val.items() if k not in ("split", "time_s")}
            self.summary.update(
                final=final,
                best=self.recorder.best or {},
                objective=final.get(self.recorder.task.objective),
            )
        self.summary.update(
            status=status,
            error=error,
            epochs_completed=self.epoch,
            wall_s=round(self._wall_before + time.time() - self.started, 3),
        )
        metrics.write_json(self.run_dir / "summary.json", self.summary)

    # ------------------------------------------------------------------ the run

    def _train(self) -> float | None:
        config = self.config
        config = dataclasses.replace(config, trainer=distributed.trainer_settings(config.trainer))
        device = distributed.setup(devices.resolve(config.device))
        steps.check(config.trainer, device)
        seed_everything(config.seed)
        with distributed.main_first():  # a data set is fetched once
            task = tasks.create(config.task, config.data, device)
        n = len(task.train_data[0]) if task.train_data else 0
        if task.batched and config.trainer.batch_size > n > 0:
            raise ConfigError(
                f"trainer.batch_size={config.trainer.batch_size} is larger than the {n} training "
                f"examples of task {task.name}; expected trainer.batch_size <= {n}"
            )
        model = task.build_model().to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        distributed.check_task(task.name, task.uses_optimizer and bool(params), task.hand_gradients)
        if not config.trainer.compile:
            compat.skip_compiler_import()
        optimizer = (
            optim.build(config.optimizer, params, fused=config.trainer.fast)
            if task.uses_optimizer and params
            else None
        )
        generator = torch.Generator(device=device)
        generator.manual_seed(config.seed)

        self.summary.update(
            device=devices.describe(device), objective_name=task.objective, maximize=task.maximize
        )
        best = None
        if config.resume:  # checked first: a refused resume adds one line to the run's log
            self.epoch, best = self._resume(task, model, optimizer, generator)
            self.recording = True
            self._write_summary()
        self._header(device)
        self._write_env(device)
        resume_epoch = self.epoch if config.resume else None
        if self.writes:
            history = metrics.MetricsLog(self.run_dir / "metrics.jsonl", resume_epoch)
            history.loggers = loggers.open_loggers(
                config.logger, self.run_dir, history.rows, resume_epoch
            )
        else:  # ranks > 0 read rank 0's log (the same validated epochs) and write nothing
            history = metrics.MetricsLog(None, resume_epoch, source=self._resumed_metrics())
        if history.dropped:
            log.info(
                "dropped %d metric rows after epoch %d: trained again", history.dropped, self.epoch
            )
        recorder = Recorder(self, task, model, optimizer, generator, history, best)
        if self.saved_epoch is None:
            recorder.last_good.keep(self.epoch)
        self.recorder = recorder
        last_val = history.last("val")
        self.console.start(self.epoch)
        try:
            anomaly = torch.autograd.set_detect_anomaly(config.trainer.detect_anomaly)
            with self.stop, anomaly, steps.cpu_threads(config.trainer, model, device):
                loop.fit(
                    task,
                    distributed.wrap(model, device),
                    optimizer,
                    config.trainer,
                    generator,
                    recorder,
                    start_epoch=self.epoch,
                    validated_epoch=last_val["epoch"] if last_val else None,
                )
        finally:
            self.console.stop()
            history.close()
        ranks = distributed.describe(model)  # every rank's weights digest, gathered
        if ranks is not None:
            self.summary["distributed"] = ranks
        return self._finish(task, model, history, recorder.best)

    def _resumed_metrics(self) -> Path | None:
        """The metrics.jsonl of the run directory being resumed, if any (ranks > 0 read it)."""
        if not self.config.resume:
            return None
        _, resumed_dir = checkpoint.locate(self.config.resume)
        return None if resumed_dir is None else resumed_dir / "metrics.jsonl"

    def _resume(
        self,
        task: Task,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
    ) -> tuple[int, dict[str, Any] | None]:
        path, _ = checkpoint.locate(self.config.resume)
        state = checkpoint.load(path)
        if state["task"] != task.name:
            raise DlrunError(
                f"checkpoint {path}: is from task {state['task']}, this run is task {task.name} "
                f"(add task={state['task']})"
            )
        checkpoint.load_model(path, state, model)
        if int(state["epoch"]) > self.config.trainer.epochs:
            raise DlrunError(
                f"trainer.epochs={self.config.trainer.epochs} is below the checkpoint's epoch "
                f"{state['epoch']} ({path}); expected trainer.epochs >= {state['epoch']}"
            )
        if optimizer is not None:
            if state.get("optimizer") and state.get("optimizer_type") == type(optimizer).__name__:
                chosen = [
                    {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
                ]
                optimizer.load_state_dict(state["optimizer"])
                for group, settings in zip(optimizer.param_groups, chosen, strict=True):
                    group.update(settings)  # this run's optimizer.* settings win
            else:
                self.console.print(
                    f"optimizer changed ({state.get('optimizer_type')} -> "
                    f"{type(optimizer).__name__}): its state starts fresh"
                )
        checkpoint.set_rng_state(state["rng"], generator)
        epoch = int(state["epoch"])
        if path == self.run_dir / "checkpoints" / "last.pt":
            self.saved_epoch = epoch
        self.summary["resumes"].append(
            {"from": str(path), "epoch": epoch, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        )
        self.console.print(f"resumed from {path} at epoch {epoch}")
        return epoch, state.get("best")

    def _header(self, device: torch.device) -> None:
        c = self.choices
        self.console.print(
            f"dlrun task={c.get('task')} optimizer={c.get('optimizer')} "
            f"device={devices.describe(device)} seed={self.config.seed}"
        )
        for key in ("task", "optimizer", "trainer", "data"):
            self.console.print(
                f"  {key:<9} {json.dumps(self.plain[key], separators=(',', ':'))}", style="dim"
            )
        self.console.print(f"  run dir   {self.run_dir}", style="dim")

    def _write_env(self, device: torch.device) -> None:
        if not self.writes:
            return
        path = self.run_dir / "env.json"
        env = metrics.environment(devices.describe(device))
        first = metrics.read_json(path) if self.config.resume else None
        if first is not None:  # keep the original run's record; add this invocation's
            first.setdefault("resumes", []).append(env)
            env = first
        metrics.write_json(path, env)

    def _finish(
        self,
        task: Task,
        model: torch.nn.Module,
        history: metrics.MetricsLog,
        best: dict[str, Any] | None,
    ) -> float | None:
        self._write_summary("completed")
        final, objective = self.summary["final"], self.summary["objective"]

        model.eval()
        with torch.no_grad():
            text = task.report(model)
        if text:
            self.console.print(text)
        rows = [
            (k, metrics_text({"": v}).strip(), metrics_text({"": (best or {}).get(k, "")}).strip())
            for k, v in final.items()
            if k != "epoch"
        ]
        self.console.table(
            f"{task.name}: {self.epoch} epochs in {self.summary['wall_s']:.1f}s "
            f"(best at epoch {(best or {}).get('epoch', '-')})",
            rows,
            ("metric", "final", "best"),
        )
        if self.config.trainer.plots and self.writes:
            try:
                figures = {"curves": plots.curves(history.rows, task.objective)}
                with torch.no_grad():
                    figures.update(task.figures(model, history.rows))
                plots.save(figures, self.run_dir / "plots")
            except Exception as exc:  # a plot must never cost the run its result
                log.exception("plotting failed")
                self.console.print(f"warning: plots not written ({exc})", style="yellow")
        self.console.print(f"run directory: {self.run_dir}")
        return objective


class Recorder:
    """The loop's hooks: metrics rows, console lines, best.pt and last.pt."""

    def __init__(
        self,
        run: Run,
        task: Task,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
        history: metrics.MetricsLog,
        best: dict[str, Any] | None,
    ) -> None:
        self.run, self.task, self.model = run, task, model
        self.optimizer, self.generator, self.history = optimizer, generator, history
        self.best = best
        self.best_state: dict[str, Any] | None = None  # best.pt's content, not yet written
        self.ckpt_dir = run.run_dir / "checkpoints"
        self.last_good = LastGood(model, optimizer, generator)

    def on_train(self, epoch: int, values: dict[str, float]) -> None:
        self.history.append(epoch, "train", values)
        self.run.console.epoch(epoch, "train", values)

    def on_validate(self, epoch: int, values: dict[str, float]) -> None:
        self.history.append(epoch, "val", values)
        self.run.console.epoch(epoch, "val", values)
        value = values.get(self.task.objective)
        if value is None or math.isnan(value):
            return
        old = None if self.best is None else self.best.get(self.task.objective)
        if old is None or (value > old if self.task.maximize else value < old):
            self.best = {"epoch": epoch, **{k: v for k, v in values.items() if k != "time_s"}}
            # kept in memory and written with last.pt: one file write (and fsync) per
            # checkpoint, not one per improvement
            if self.run.writes:
                self.best_state = _copied(self.state(epoch))

    def on_epoch_end(self, epoch: int, save: bool) -> None:
        if self.run.writes and save:
            self.save_best()
            self.save("last.pt", epoch)
            self.run.saved_epoch = epoch
            self.last_good.epoch = None  # last.pt holds this epoch
        elif self.run.writes:
            self.last_good.keep(epoch)  # under torchrun rank 0 keeps every checkpoint
        self.run.epoch = epoch
        self.run.console.advance(epoch)

    def save_last_good(self) -> None:
        """After a NaN: last.pt gets the last finite epoch kept in memory, if newer, and
        best.pt the best epoch not written yet."""
        if not self.run.writes:
            return
        self.save_best()
        epoch = self.last_good.restore()
        if epoch is not None:
            self.save("last.pt", epoch)
            self.run.saved_epoch = epoch

    def save_best(self) -> None:
        if self.best_state is not None:
            self.save("best.pt", self.best_state["epoch"], self.best_state)
            self.best_state = None

    def save(self, name: str, epoch: int, state: dict[str, Any] | None = None) -> None:
        """Write a checkpoint; a full disk stops the run with the previous file unchanged."""
        path = self.ckpt_dir / name
        try:
            checkpoint.save(path, state if state is not None else self.state(epoch))
        except OSError as exc:
            held = self.run.saved_epoch
            then = (
                f"checkpoints/last.pt still holds epoch {held}; free some space and continue "
                f"with: dlrun resume={self.run.run_dir}"
                if held is not None
                else "no checkpoint was written; free some space and run again"
            )
            raise DlrunError(
                f"checkpoint of epoch {epoch} not written ({files.describe(exc)}); {then}"
            ) from exc

    def stop_requested(self) -> int | None:
        return distributed.agree(self.run.stop.signum, self.task.device)

    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": checkpoint.FORMAT,
            "version": checkpoint.VERSION,
            "task": self.task.name,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "optimizer_type": type(self.optimizer).__name__ if self.optimizer is not None else None,
            "rng": checkpoint.rng_state(self.generator),
            "best": self.best,
            "config": self.run.plain,
        }


def _copied(obj: Any) -> Any:
    """A snapshot of a checkpoint state: tensors cloned, so later training does not change it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _copied(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_copied(v) for v in obj)
    return obj
