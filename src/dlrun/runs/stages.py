"""One run, start to finish, in named stages: setup, resume, fit, finish.

The Hydra task function (:mod:`dlrun.cli.main`) hands the checked config to :func:`execute`
with Hydra's runtime settings read once, as plain values (:class:`~dlrun.runs.info.RunInfo`), so
a test can build and run one without a Hydra app. The run directory's files are
:mod:`dlrun.rundir.layout`'s, the loop's hooks :mod:`dlrun.runs.recorder`'s, data parallelism the
:class:`~dlrun.engine.distributed.Strategy`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import shutil
import signal
import time
from typing import Any

import torch

from dlrun.config import schema
from dlrun.engine import checkpoint, distributed, loop, steps
from dlrun.engine import device as devices
from dlrun.engine.distributed import Strategy
from dlrun.engine.profiling import Profiler
from dlrun.engine.training import Training
from dlrun.errors import Diverged, DlrunError
from dlrun.rundir import layout as rundir
from dlrun.rundir import lock as dirlock
from dlrun.rundir import metrics_log as metrics
from dlrun.rundir.environment import environment
from dlrun.rundir.layout import RunDir
from dlrun.rundir.summary import Summary, run_name
from dlrun.runs import display as run_output
from dlrun.runs import setup as run_setup
from dlrun.runs import stop_reasons as failures
from dlrun.runs.console import Console
from dlrun.runs.info import RunInfo
from dlrun.runs.interrupt import StopRequest
from dlrun.runs.recorder import Outputs, Recorder
from dlrun.tracking import registry as loggers
from dlrun.tracking.loggers import Logger

log = logging.getLogger("dlrun")


def execute(config: schema.Config, plain: dict[str, Any], info: RunInfo) -> float | None:
    """A job's run, as the command hands it over: returns the objective (what sweepers
    optimise). ``plain``: the resolved config as plain data."""
    # dlrun.log is best effort: on a full disk each line it cannot write would print a traceback
    logging.raiseExceptions = False
    strategy = distributed.strategy()
    try:
        objective = Run(config, plain, info, strategy).main()
    except BaseException:
        strategy.teardown()
        raise
    strategy.teardown(together=True)
    return objective


class Run:
    def __init__(
        self,
        config: schema.Config,
        plain: dict[str, Any],
        info: RunInfo,
        strategy: Strategy | None = None,
    ) -> None:
        """``plain``: the resolved config as plain data (the header and checkpoints record it)."""
        self.config, self.plain, self.info = config, plain, info
        self.strategy = strategy or Strategy()
        self.dir = RunDir(info.run_dir)
        self.writes = self.strategy.is_main  # only one process writes the run directory
        self.console = Console(
            config.trainer.progress,
            config.trainer.epochs,
            quiet=not self.writes,
            sweep_job=info.in_sweep,
        )
        self.started = time.time()
        previous = self.dir.read_summary() if config.resume else None
        self.summary = Summary(
            task=config.task.name,
            status="running",
            epochs_completed=0,
            epochs=config.trainer.epochs,
            seed=config.seed,
            optimizer=info.choices.get("optimizer"),
            wall_s=0.0,
            resumes=previous.resumes if previous else [],
            overrides=list(info.overrides),
        )
        # a resumed run keeps its name: one run directory, one name (MLflow's, TensorBoard's)
        self.summary.name = (previous.name if previous else None) or run_name(
            config.task.name, info.overrides, info.sweep_overrides if info.in_sweep else None
        )
        self._wall_before = float((previous.wall_s if previous else None) or 0.0)
        self.stop = StopRequest(info.stop_file)
        self.console.on_closed = lambda: self.stop.request(signal.SIGPIPE)
        self.resumed: checkpoint.Restored | None = None
        self.recorder: Recorder | None = None
        self.loggers: list[Logger] = []  # the chosen loggers, from the loop's start
        # a resume touches the run's records only once its checkpoint has been accepted
        self.recording = not config.resume

    @property
    def epoch(self) -> int:
        """The last epoch completed."""
        if self.recorder is not None:
            return self.recorder.epoch
        return self.resumed.epoch if self.resumed else 0

    @property
    def saved_epoch(self) -> int | None:
        """The epoch this run directory's last.pt holds, as far as this run knows."""
        if self.recorder is not None:
            return self.recorder.saved_epoch
        resumed = self.resumed
        return resumed.epoch if resumed is not None and resumed.continues(self.dir) else None

    # ------------------------------------------------------------------ the stages

    def main(self) -> float | None:
        """setup, resume (with ``resume=``), fit, finish; every way out leaves summary.json."""
        if self.writes:  # the CLI's Hydra made it; a Run built in Python may name a new one
            if dirlock.held(self.dir.path) is None:
                self.dir.path.mkdir(parents=True, exist_ok=True)
            else:  # removed during start-up: made again it would say `running` for ever
                self.dir.check_present()
        self._write_summary()
        try:
            try:
                training = self.setup()
                kept = self.resume(training) if self.config.resume else None
                history = self.fit(training, kept)
                return self.finish(training, history)
            except Exception as exc:
                explained = self._explain(exc)
                if explained is None:
                    raise
                raise explained from None
        except KeyboardInterrupt:
            self.console.stop()
            with contextlib.suppress(rundir.RunDirGone):  # nothing there is this run's now
                self._write_summary("interrupted")
            self._end_tracking("interrupted")
            self.console.print(self._interrupted(), style="yellow")
            raise
        except BaseException as exc:
            self.console.stop()
            if not self.recording and RunDir.is_resume_subdir(self.info.record_subdir):
                # a refused resume leaves no trace but the log
                shutil.rmtree(self.dir.path / str(self.info.record_subdir), ignore_errors=True)
            self.summary.fail(exc)
            try:
                if not isinstance(exc, rundir.RunDirGone):  # writing would remake the directory
                    self._write_summary("failed")
            except rundir.RunDirGone:
                pass
            except OSError as write_error:  # e.g. a read-only disk: the error itself matters more
                log.error("%s not written: %s", rundir.SUMMARY, write_error)
            self._end_tracking("diverged" if isinstance(exc, Diverged) else "failed")
            if isinstance(exc, DlrunError):
                log.error("stopped: %s", exc, exc_info=isinstance(exc.__cause__, OSError))
            else:
                failures.log_traceback(exc)
            raise

    def setup(self) -> Training:
        """Device, task, model, optimizer and the loop's generator, seeded; bad sizes refused."""
        return run_setup.build(self.config, self.strategy, self.summary)

    def resume(self, training: Training) -> list[dict[str, Any]]:
        """Load the checkpoint and the metrics rows up to its epoch; only then is the run's record
        changed (a refused resume adds one line to the run's log and nothing else)."""
        path, resumed_dir = checkpoint.locate(str(self.config.resume))
        self.resumed = checkpoint.restore(path, training)
        for note in self.resumed.notes:
            self.console.print(note)
        # rank 0 keeps its own file; the other ranks read the resumed run's (the same one)
        source = self.dir if self.writes else (RunDir(resumed_dir) if resumed_dir else None)
        rows = source.read_metrics() if source is not None else []
        kept = [r for r in rows if r["epoch"] <= self.resumed.epoch]
        if len(kept) < len(rows):
            log.info(
                "dropped %d metric rows after epoch %d: trained again",
                len(rows) - len(kept),
                self.resumed.epoch,
            )
        self.summary.add_resume(path, self.resumed.epoch, time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.console.print(f"resumed from {path} at epoch {self.resumed.epoch}")
        self.recording = True
        self._write_summary()
        return kept

    def fit(self, training: Training, kept: list[dict[str, Any]] | None) -> metrics.MetricsLog:
        """The header and env.json, then the loop until trainer.epochs (or a stop)."""
        # a sweep shows its header once, with its first job; each job then says one line
        if not self.info.in_sweep or not self.info.job_num:
            run_output.header(self.console, self.info, self.plain, training, self.summary.name)
        if self.writes:
            self.dir.write_env(environment(devices.describe(training.device)), kept is not None)
        resume_epoch = self.epoch if kept is not None else None
        history = metrics.MetricsLog(self.dir.metrics if self.writes else None, kept)
        run = dataclasses.replace(
            run_setup.logger_context(self.info, self.plain, training),
            rows=history.rows,
            resume_epoch=resume_epoch,
            name=self.summary.name,
            writes=self.writes,
            say=None if self.info.in_sweep else self.console.print,  # a sweep: a line per job
        )
        self.loggers = loggers.open_all(self.config.logger, run, self.info.early)
        history.loggers = list(self.loggers)
        outputs = Outputs(self.dir, history, self.console)
        self.recorder = Recorder(
            outputs, training, self.strategy, self.stop, self.plain, self.resumed
        )
        last_val = history.last("val")
        trainer = training.trainer
        profiler = None
        if trainer.profile_steps and self.writes:
            profiler = Profiler(trainer.profile_steps, training.device)
        wrapped = self.strategy.wrap(training.model, training.device)  # the model the loop trains
        self.console.start(self.epoch)
        try:
            anomaly = torch.autograd.set_detect_anomaly(trainer.detect_anomaly)
            with self.stop, anomaly, steps.cpu_threads(trainer, training.model, training.device):
                loop.fit(
                    dataclasses.replace(training, model=wrapped),
                    self.recorder,
                    start_epoch=self.epoch,
                    validated_epoch=last_val["epoch"] if last_val else None,
                    strategy=self.strategy,
                    profiler=profiler,
                )
        finally:
            self.console.stop()
            history.close()
        if profiler is not None:
            run_output.profile(self.console, profiler, self.dir.profile_trace)
        self.summary.record_ranks(self.strategy.describe(training.model))
        if training.stopper is not None:
            self.summary.record_stop(training.stopper.record())
        return history

    def finish(self, training: Training, history: metrics.MetricsLog) -> float | None:
        """summary.json completed, the task's report, the final table and the plots."""
        if self.writes:
            self.dir.check_present()
        self._write_summary("completed")
        best = (self.recorder.best if self.recorder else None) or {}
        if self.info.in_sweep:
            run_output.job_line(self.console, self.info.job_num, self.summary, best, self.dir.path)
        else:
            run_output.closing(self.console, training.task, training.model, self.summary, best)
        try:
            if self.config.trainer.plots and self.writes:
                run_output.plots(
                    self.console,
                    training.task,
                    training.model,
                    history.rows,
                    self.dir.plots,
                    self.summary.name,
                )
        except BaseException:
            self._end_tracking("failed")
            raise
        self._end_tracking("completed")  # after summary.json and plots/: they are uploaded
        if not self.info.in_sweep:
            self.console.print(f"run directory: {self.dir.path}")
        return self.summary.objective

    # ------------------------------------------------------------------ the record

    def _write_summary(self, status: str = "running") -> None:
        if not self.recording or not self.writes:
            return
        if self.recorder is not None:  # the metrics so far, whatever the status
            last_val = self.recorder.history.last("val") or {}
            final = {k: v for k, v in last_val.items() if k not in ("split", "time_s")}
            self.summary.record_metrics(final, self.recorder.best or {})
        wall = round(self._wall_before + time.time() - self.started, 3)
        self.summary.progress(status, self.epoch, wall)
        self.dir.check_present()  # never into a directory removed, or made again, meanwhile
        self.dir.write_summary(self.summary)

    def _end_tracking(self, status: str) -> None:
        """End the loggers (once); their wait is not in wall_s, the first failure is noted in
        summary.json."""
        ending, self.loggers = self.loggers, []
        for logger in ending:
            logger.finish(status)
            where = logger.where()
            if where is not None and not self.info.in_sweep:  # a sweep's end says it once
                self.console.print(where)
            if logger.error is not None and self.writes and self.summary.tracking_error is None:
                self.summary.tracking_error = logger.error
                self.dir.write_summary(self.summary)

    def _explain(self, exc: Exception) -> DlrunError | None:
        def last_finite() -> int | None:  # last.pt gets the last finite epoch
            return self.recorder.save_last_good() if self.recorder else self.saved_epoch

        if isinstance(exc, OSError):  # a full disk, a read-only file system, a permission
            command = self.strategy.command()
            what = f"stopped at epoch {self.epoch}"
            return failures.write_failed(exc, what, self.saved_epoch, self.dir.path, command)
        trainer, lr = self.config.trainer, self.config.optimizer.lr
        return failures.explain(exc, self.epoch, trainer, lr, last_finite)

    def _interrupted(self) -> str:
        return failures.interrupted(
            self.epoch,
            self.saved_epoch,
            None
            if self.info.in_sweep
            else f"{self.strategy.command()} {shlex.quote(f'resume={self.dir.path}')}",
        )
