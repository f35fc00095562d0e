"""The `dlrun` command: Hydra composes the config; dlrun reports every user mistake in one line.

Only Hydra, OmegaConf and the schema are imported here: `dlrun --help`, `dlrun --cfg job` and
config errors are answered without importing torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from dlrun import compat, distributed, files, schema, sweep, tasks
from dlrun.errors import DlrunError
from dlrun.rundir import RunDir, quote

_failures: list[BaseException] = []
_STARTED = time.time() - 1.0


@hydra.main(version_base=None, config_path="pkg://dlrun.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Hydra's task function. Errors are kept, not raised, so that Hydra neither prints its own
    report nor stops a sweep at the first failed job; main() reports them afterwards."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    try:
        action = sweep.prepare_job(run_dir, overrides) if in_sweep else "run"
        if action == "skip":
            print(f"job {hydra_cfg.job.num}: completed earlier, skipped ({' '.join(overrides)})")
            return sweep.objective(run_dir)
        config = schema.to_objects(cfg)  # refuse bad values before importing torch
        files.probe(run_dir)  # an unwritable directory or a full disk fails here, not later
        if config.logger.mlflow.enabled:  # an unusable store: one line, before any work
            from dlrun import tracking

            tracking.check_store(tracking.tracking_uri(config.logger.mlflow))
        if action == "resume":
            config = dataclasses.replace(config, resume=str(run_dir))
        from dlrun.run import execute  # imports torch: only once there is work to do

        return execute(cfg, config)
    except Exception as exc:
        if isinstance(exc, DlrunError):
            _remove_if_empty(run_dir)
        if in_sweep:
            sweep.record_failure(run_dir, overrides, exc)
            print(f"job {hydra_cfg.job.num} failed: {one_line(exc)}", file=sys.stderr)
        _failures.append(exc)
        return None
    finally:
        if in_sweep:
            sweep.update_manifest(Path(hydra_cfg.sweep.dir))
        elif (run_dir.parent / sweep.MANIFEST).is_file():  # a sweep's job resumed on its own
            sweep.update_manifest(run_dir.parent)


def _remove_if_empty(run_dir: Path) -> None:
    """A single run refused before it started leaves no directory behind (sweeps keep one)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN or not run_dir.is_dir():
        return
    if RunDir(run_dir).only_refusal_records():
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in list(run_dir.parents)[:2]:  # outputs/<date>/, outputs/ if made just now
            try:
                if parent.stat().st_ctime < _STARTED:
                    break
                parent.rmdir()
            except OSError:
                break


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit 0, or 2 for a user mistake (one line on stderr)."""
    argv = sys.argv[1:] if argv is None else argv
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    saved_argv = sys.argv
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's report
    try:
        check_arguments(argv)
        # the tasks are registered here, so that a broken one is a one-line error like any other
        overrides = tasks.prepare(resume_argv(argv))
        sys.argv = [saved_argv[0], *overrides, *distributed.hydra_overrides(argv)]
        _failures.clear()
        sweep.current_dir = None
        try:
            if HELP_FLAGS & set(argv):
                with compat.one_config_repository():
                    _hydra_main()
            else:
                _hydra_main()
        except sweep.Refused as refused:
            raise refused.error from None
        except OSError as exc:  # Hydra making the run directory or writing its .hydra/ record
            if isinstance(exc, HydraException):  # a missing config is an IOError too
                raise
            raise DlrunError(
                f"cannot write the run directory: {files.describe(exc)}; choose another with "
                "hydra.run.dir=... (or hydra.sweep.dir=... with -m), or free some space"
            ) from exc
        if sweep.current_dir is not None:  # a sweep: jobs may have run in other processes
            print(sweep.finish(sweep.current_dir))  # raises when a recorded job failed
        if _failures:  # e.g. a job refused to overwrite another sweep's job directory
            raise _failures[0]
    except (DlrunError, HydraException, OmegaConfBaseException) as exc:
        if sweep.current_dir is not None and not isinstance(exc, DlrunError):
            sweep.discard_if_empty(sweep.current_dir)
        if full_error:
            raise
        print(f"dlrun: error: {sweep.missing_plugin(str(exc)) or one_line(exc)}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt as exc:
        if sweep.current_dir is not None:
            manifest = sweep.update_manifest(sweep.current_dir)
            sweep.end_tracking(sweep.current_dir, manifest, "interrupted")
            print(
                "sweep interrupted; finished jobs are kept and skipped when you continue it with: "
                + sweep.continue_command(argv, sweep.current_dir),
                file=sys.stderr,
            )
        if full_error:
            raise
        sys.exit(128 + getattr(exc, "signum", signal.SIGINT))
    except Exception as exc:
        if full_error:
            raise
        print(
            f"dlrun: internal error: {type(exc).__name__}: {one_line(exc)} "
            "(the run log has the traceback; HYDRA_FULL_ERROR=1 prints it)",
            file=sys.stderr,
        )
        sys.exit(1)
    finally:
        sys.argv = saved_argv
        if not full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        GlobalHydra.instance().clear()


def check_arguments(argv: list[str]) -> None:
    """Hydra's own options, checked first so that a mistake is one line, not argparse's usage."""
    if "--version" in argv:
        return
    parser = compat.hydra_args_parser()
    if parser is None:  # this Hydra checks its own options; a used run directory is refused still
        if not {"-m", "--multirun", "-c", "--cfg", *HELP_FLAGS} & set(argv):
            _refuse_used_run_dir([a for a in argv if not a.startswith("-")])
        return

    def error(message: str) -> NoReturn:
        raise DlrunError(f"{message}; see dlrun --help (or --hydra-help for Hydra's options)")

    parser.error = error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    if not (args.multirun or args.cfg or args.help or args.hydra_help):
        _refuse_used_run_dir(args.overrides)


def _refuse_used_run_dir(overrides: list[str]) -> None:
    """A new run never writes into another run's directory (Hydra would overwrite its .hydra/
    record and the metrics of both would mix): resume= continues a run."""
    if any(o.startswith("resume=") for o in overrides):
        return
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")]
    if not given:
        return
    run_dir = Path(given[-1].strip("'\""))
    if RunDir(run_dir).holds_run():
        raise DlrunError(
            f"hydra.run.dir={run_dir} already holds a run; continue it with resume={run_dir}, "
            "or choose a new directory"
        )


HELP_FLAGS = {"--help", "-h", "--hydra-help"}


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages, folded into one line that names the key."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if isinstance(exc, MissingConfigException) and "Available options" in text:
        head = lines[0].split("': ", 1)[-1] if lines[0].startswith("In '") else lines[0]
        listing = text.split("Available options", 1)[1].splitlines()[1:]
        options = list(itertools.takewhile(lambda ln: ln.startswith("\t"), listing))
        return f"{head} (available: {', '.join(o.strip() for o in options)})"
    unknown = re.search(r"Could not load '([\w-]+)/([^'/]+)'", lines[0])
    if isinstance(exc, MissingConfigException) and unknown:  # in a list: logger=[jsonl,x]
        options = _options(unknown.group(1))
        if options:
            return f"{unknown.group(0)} (available: {', '.join(options)})"
    message = lines[0].rstrip(".")
    group = re.match(r"Could not override '([\w/-]+)'\. No match in the defaults list", text)
    if group:  # a config group with no default (experiment) is added, not overridden
        name = group.group(1)
        return f"{message}: {name} is not chosen by default; add it with +{name}=..."
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        message += ": " + str(cause).strip().splitlines()[0]
    key = re.search(r"full_key: (\S+)", text + "\n" + str(cause or ""))
    if key and key.group(1) not in message:
        message += f" (key: {key.group(1)})"
    return message


def _options(group: str) -> list[str]:
    """The configs dlrun ships in a group (conf/<group>/*.yaml)."""
    from importlib.resources import files

    try:
        names = [p.name for p in files("dlrun.conf").joinpath(group).iterdir()]
    except OSError:  # a group of the user's own --config-dir
        return []
    return sorted(name[:-5] for name in names if name.endswith(".yaml"))


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=RUN_DIR`: recompose the run's own overrides (then the new ones) into RUN_DIR.

    `dlrun resume=outputs/...` alone continues the run exactly as it was configured, and
    `dlrun resume=outputs/... trainer.epochs=20000` extends it. The original .hydra/ record is
    kept; this invocation's config goes to .hydra/resume-<time>/.
    """
    if "-m" in argv or "--multirun" in argv:
        return argv
    at = next((i for i, a in enumerate(argv) if a.startswith("resume=")), None)
    if at is None:
        return argv
    from dlrun.checkpoint import locate

    _, run_dir = locate(argv[at].split("=", 1)[1])
    if run_dir is None:
        return argv  # a bare .pt file: this invocation's config, a new run directory
    run = RunDir(run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return [
        *argv[:at],
        *run.kept_overrides(argv),
        *argv[at:],
        f"hydra.run.dir={quote(str(run_dir))}",
        f"hydra.output_subdir={run.resume_subdir(f'{stamp}-{os.getpid()}')}",
    ]


if __name__ == "__main__":
    main()
