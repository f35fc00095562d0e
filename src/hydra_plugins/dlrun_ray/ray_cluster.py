"""hydra/launcher=ray: hydra-ray-launcher's local launcher, which sends each job of a sweep to a
running Ray cluster as a task, with what a dlrun sweep needs of it.

The plugin's own launcher collects its jobs' results in order and raises at the first job whose
worker or node died; the sweep then ends, and with its driver gone Ray ends the jobs still
running. This one waits for every job: a lost job is recorded failed in its summary.json (its
run died without saying so), the others finish, and the same command runs it again (from its
last.pt). Each job also runs in the sweep command's working directory (a relative sweep
directory or data path means the same on every node, given a shared file system) and notes the
Ray node it ran on in its .hydra/ray.json.

Hydra imports this module at every start: it imports only the plugin's light launcher module.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
except ImportError:  # no dlrun[ray]: a sweep with this launcher is refused (dlrun.multirun)
    RayLauncher = None

NODE_RECORD = "ray.json"  # in a job's .hydra/: the Ray node of its latest attempt
MISSING = (
    "hydra/launcher=ray needs the hydra-ray-launcher plugin, which is not installed: "
    "pip install 'dlrun[ray]'"
)


def _job_dir(sweep_config: Any) -> Path:
    return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)


def run_on_node(
    hydra_context: Any, sweep_config: Any, task_function: Any, singleton_state: Any
) -> Any:
    """The Ray task: one job, in the sweep command's directory, its node noted first (a job
    killed with its node still says where it ran)."""
    import ray
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    cwd = str(sweep_config.hydra.runtime.cwd)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    records = _job_dir(sweep_config) / ".hydra"
    records.mkdir(parents=True, exist_ok=True)
    node = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
    }
    (records / NODE_RECORD).write_text(json.dumps(node) + "\n")
    return _run_job(hydra_context, sweep_config, task_function, singleton_state)


def unreachable(address: object) -> None:
    """ConnectionError when nothing answers at a <host>:<port> address: Ray itself would try
    to reach it for minutes before it says so."""
    if not isinstance(address, str) or "://" in address or ":" not in address:
        return  # auto, local, ray://: Ray's own checks are quick
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        said = getattr(exc, "strerror", None) or str(exc)
        raise ConnectionError(f"nothing answers at {address}: {said}") from None


def record_lost(job_dir: Path, overrides: list[str], exc: BaseException) -> str | None:
    """A job whose worker or node died: its summary (left `running`, or never written: the task
    never started) says failed, and the manifest follows. Returns the error recorded; None when
    the run had recorded its own end."""
    from dlrun.rundir.layout import RunDir
    from dlrun.rundir.records import write_json
    from dlrun.rundir.summary import Summary
    from dlrun.sweeps import manifest as multirun

    said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = said.split(". ")[0].rstrip(".")[:160]  # Ray's first sentence
    error = f"{type(exc).__name__}: its Ray worker or node died ({reason})"
    lost = RuntimeError(error)
    run = RunDir(job_dir)
    summary = run.read_summary() if run.summary.is_file() else None
    if summary is None:
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)  # the manifest lists it
        write_json(run.summary, {**Summary.refused(overrides, lost), "error": error})
    elif summary.status in (None, "running"):
        summary.status, summary.error, summary.exit_code = "failed", error, 1
        run.write_summary(summary)
    else:
        return None
    multirun.update_manifest(job_dir.parent)
    return error


if RayLauncher is not None:

    class SweepRayLauncher(RayLauncher):
        """RayLauncher, waiting for every job and recording the lost ones (see the module)."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
            import ray
            from hydra.core.singleton import Singleton
            from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
            from omegaconf import OmegaConf, open_dict

            from dlrun.errors import DlrunError

            assert self.config is not None and self.hydra_context is not None
            setup_globals()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            init = OmegaConf.create(OmegaConf.to_container(self.ray_cfg.init, resolve=True))
            address = init.get("address")
            try:
                unreachable(address)
                if not ray.is_initialized():
                    ray.init(**init)
            except ConnectionError as exc:  # no cluster at that address
                raise DlrunError(
                    f"hydra.launcher.ray.init.address={address}: no Ray cluster there "
                    f"({str(exc).splitlines()[0]}); start one with `ray start --head`, or give "
                    "its head's <host>:<port>"
                ) from None
            options = OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}
            task = ray.remote(**options)(run_on_node) if options else ray.remote(run_on_node)
            jobs = []
            for num, overrides in enumerate(job_overrides, initial_job_idx):
                config = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides)
                )
                with open_dict(config):
                    config.hydra.job.id = f"ray_{num}"
                    config.hydra.job.num = num
                state = Singleton.get_state()
                ref = task.remote(self.hydra_context, config, self.task_function, state)
                jobs.append((num, list(overrides), config, ref))
            results = []
            for num, overrides, config, ref in jobs:
                try:
                    results.append(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    error = record_lost(_job_dir(config), overrides, exc)
                    if error:
                        print(f"job {num} failed: {error}", file=sys.stderr, flush=True)
                    # a result, as dlrun's jobs give for a failure: the sweep's end reports it
                    results.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED))
            return results


def register() -> str | None:
    """Make the launcher known to Hydra, which finds plugins by listing the hydra_plugins
    package's folders (an editable install hides them); the refusal when the plugin is
    missing."""
    if RayLauncher is None:
        return MISSING
    from hydra.core.plugins import Plugins

    name = f"{SweepRayLauncher.__module__}.{SweepRayLauncher.__name__}"
    Plugins.instance().class_name_to_class.setdefault(name, SweepRayLauncher)
    return None
