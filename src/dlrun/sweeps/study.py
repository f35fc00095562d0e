"""An Optuna search whose study lives in a database, shared by every `dlrun -m` that names it.

hydra-optuna-sweeper loads an existing study (``hydra.sweeper.storage``, ``study_name``) but
runs ``n_trials`` more trials in each process and numbers its jobs from 0 in each, so two
processes would write the same job directories. With a storage, dlrun's sweeper instead:

- treats ``n_trials`` as the study's budget: each process asks for trials until the study holds
  that many, so several processes (on one machine or as cluster jobs) share the work and a
  second run of the command only finishes what is left;
- puts trial N's job in ``<sweep dir>/N`` (Optuna numbers trials once, across processes);
- adopts a trial left ``RUNNING`` by a process that died: its job directory has no writer any
  more, so it is run again there (resuming from its last.pt, or skipped if it had completed)
  and its result is told to the study. No finished trial is lost, none is repeated.

Without a storage it is the plugin's own sweeper, unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import TrialState

from dlrun.errors import DlrunError
from dlrun.rundir import lock as dirlock
from dlrun.rundir.layout import RunDir

log = logging.getLogger("dlrun")
OVER_BUDGET = "dlrun_over_budget"  # a trial asked for as another process took the last one
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


class SharedStudy(OptunaSweeperImpl):
    """The sweep of a study in a database (see the module); set on the plugin's sweeper by
    hydra_plugins.dlrun_study when ``hydra.sweeper.storage`` is given."""

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides(
            [*self._parse_sweeper_params_config(), *arguments]
        )
        space = {**(self.search_space_distributions or {}), **space}
        for name in fixed:
            space.pop(name, None)
        directions = self._get_directions()
        if not isinstance(self.sampler, optuna.samplers.BaseSampler):
            raise DlrunError(
                "hydra.sweeper.storage: a shared study needs a sampler that proposes trials one "
                "at a time (tpe, random, cmaes), not the grid sampler: use a grid sweep instead"
            )
        if hasattr(self.sampler, "reseed_rng"):
            # a seeded sampler would propose, in every process and every run of the command,
            # the trials the first one did: each process draws its own
            self.sampler.reseed_rng()
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            directions=directions,
            load_if_exists=True,
        )
        log.info(f"Study {study.study_name} in {self.storage}: a budget of {self.n_trials} trials")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        while True:
            for number, overrides in abandoned(study, sweep_dir):
                log.info(f"trial {number}: its process is gone; running it again")
                self._run(study, [number], [overrides], directions)
            counted = [t for t in study.get_trials(deepcopy=False) if counts(t)]
            left = self.n_trials - len(counted)
            if left <= 0:
                break
            trials = [study.ask() for _ in range(min(left, self.n_jobs))]
            kept = []
            for trial in trials:
                older = sum(
                    counts(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number
                )
                if older >= self.n_trials:  # another process took the last trial meanwhile
                    trial.set_system_attr(OVER_BUDGET, True)
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    kept.append(trial)
            if not kept:
                break
            overrides = self._configure_trials(kept, space, fixed)
            self._run(study, [t.number for t in kept], overrides, directions)
        finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if finished and len(directions) == 1:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")

    def _run(
        self,
        study: optuna.Study,
        numbers: list[int],
        overrides: list[Any],
        directions: list[str],
    ) -> None:
        """Each trial's job in the directory of its number; its value told to the study."""
        contiguous = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        batches = (
            [(numbers, overrides)]
            if contiguous
            else [([n], [o]) for n, o in zip(numbers, overrides, strict=True)]
        )
        for batch_numbers, batch in batches:
            returns = self.launcher.launch(batch, initial_job_idx=batch_numbers[0])
            for number, ret in zip(batch_numbers, returns, strict=True):
                try:
                    value = ret.return_value
                    values = [float(v) for v in (value if len(directions) > 1 else [value])]
                    state = TrialState.COMPLETE
                except Exception:  # a failed job (recorded in its directory and sweep.json)
                    values, state = None, TrialState.FAIL
                try:
                    study.tell(number, values, state=state)
                except (RuntimeError, ValueError) as exc:  # told by another process already
                    log.info(f"trial {number}: {exc}")


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that spends the budget: finished, or running somewhere."""
    return trial.state in (*FINISHED, TrialState.RUNNING) and not trial.system_attrs.get(
        OVER_BUDGET
    )


def abandoned(study: optuna.Study, sweep_dir: Path) -> list[tuple[int, list[str]]]:
    """Trials recorded RUNNING whose job directory has a record but no writer (its process died):
    their numbers and the overrides their jobs ran with."""
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        job_dir = sweep_dir / str(trial.number)
        run = RunDir(job_dir)
        if not run.summary.is_file() or dirlock.holder(job_dir) is not None:
            continue  # not started yet, or running now
        overrides = run.recorded_overrides(latest=False)
        if overrides:
            found.append((trial.number, list(overrides)))
    return found
