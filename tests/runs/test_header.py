"""What the start of a run shows: the parameter count, a compact per-layer table (whole in
dlrun.log) and the composed settings as a table instead of JSON dumps."""

from __future__ import annotations

from pathlib import Path

import torch

from dlrun.engine.training import Training
from dlrun.rundir.layout import RunDir
from dlrun.runs import display as run_output
from dlrun.runs.console import Console
from dlrun.runs.info import RunInfo

CPU = torch.device("cpu")
QUIET = ("trainer.progress=false", "device=cpu")


def test_the_header_shows_the_model_and_the_settings(dlrun) -> None:
    r = dlrun("task=fizzbuzz", "task.hidden=7", "trainer.epochs=0", *QUIET)
    assert r.code == 0, r.err
    # fizzbuzz: 10 digits -> 7 hidden -> 4 classes
    assert f"{10 * 7 + 7 + 7 * 4 + 4:,} parameters" in r.out
    lines = r.out.splitlines()
    assert any("Linear" in ln and " 7 " in ln and "77" in ln for ln in lines), r.out
    assert any("hidden=7" in ln for ln in lines)
    assert not any(ln.lstrip().startswith('task      {"') for ln in lines)  # no JSON dump
    log = RunDir(r.run_dir).log.read_text()
    assert "Linear 4 32" in log  # every layer in the log: the 7 -> 4 layer's 32 parameters


def test_a_deep_model_is_cut_short_on_screen_and_whole_in_the_log(capsys, caplog) -> None:
    model = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(20)], torch.nn.ReLU())
    model[0].weight.requires_grad_(False)
    caplog.set_level("INFO", logger="dlrun")
    plain = {"task": {"hidden": 3}, "optimizer": {"betas": [0.9, 0.99]}, "trainer": {}, "data": {}}
    info = RunInfo(Path("r"), choices={"task": "x"})
    training = Training(CPU, None, model, None, None, None)  # the header shows the model alone
    run_output.header(Console(False, 1), info, {**plain, "seed": 0}, training)
    out = capsys.readouterr().out
    assert "240 parameters, 9 frozen" in out  # 20 x (9 + 3), the first weight frozen
    assert f"... {21 - run_output.SHOWN_LAYERS + 1} more (all in dlrun.log)" in out
    assert "betas=[0.9, 0.99]" in out
    assert any(ln.startswith("│ 10 ") for ln in out.splitlines())
    assert not any(ln.startswith("│ 19 ") for ln in out.splitlines())  # cut on screen
    logged = [r.getMessage() for r in caplog.records if "parameters" in r.getMessage()]
    assert len(logged) == 21 and logged[19].endswith("19 Linear 3 12")  # every layer
