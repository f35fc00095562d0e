"""dlrun-report on real sweeps: grouping by seed, direction-aware order, partial sweeps."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dlrun.cli import main as cli
from dlrun.rundir import lock as dirlock
from dlrun.sweeps import manifest as dlrun_sweep
from dlrun.sweeps import report, report_rows
from tests.conftest import call_main

SINE = (
    "task=sine-bp",
    "trainer.epochs=20",
    "trainer.validate_every=5",
    "trainer.log_every=100",  # training rows at the end only: the rows checked below
    "trainer.plots=false",
    "trainer.progress=false",
)


def _sweep(directory: Path, *args: str) -> int:
    try:
        cli.main(["-m", *args, f"hydra.sweep.dir={directory}"])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sweep: 2 learning rates x 3 seeds of a 20-epoch sine-bp run."""
    directory = tmp_path_factory.mktemp("sweep") / "sw"
    # on the CPU: the order of the two learning rates checked below is the CPU's result
    assert _sweep(directory, *SINE, "optimizer.lr=0.1,0.3", "seed=0,1,2", "device=cpu") == 0
    return directory


def _report(capsys, *args: object) -> tuple[int, str, str]:
    return call_main(report.main, capsys, *args)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _summaries(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*/summary.json"))]


def test_seeds_grouped_with_mean_and_std(sweep: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _report(capsys, sweep, "--csv", tmp_path / "r.csv")
    assert code == 0, err
    rows = _csv(tmp_path / "r.csv")
    assert len(rows) == 2  # one row per learning rate, the three seeds together
    by_lr: dict[str, list[float]] = {}
    for job in sweep.glob("*/"):
        lr = str(OmegaConf.load(job / ".hydra" / "config.yaml").optimizer.lr)
        by_lr.setdefault(lr, []).append(json.loads((job / "summary.json").read_text())["objective"])
    assert sorted(len(v) for v in by_lr.values()) == [3, 3]
    for row in rows:
        values = by_lr[row["optimizer.lr"]]
        assert sorted(row["seeds"].split()) == ["0", "1", "2"]
        assert float(row["final"]) == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert float(row["final_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12)
        assert row["status"] == "completed" and row["epochs"] == "20/20"
        assert row["objective"] == "mse" and row["maximize"] == "False"
    # mse is minimised: the lower mean comes first and is the one marked best
    assert float(rows[0]["final"]) < float(rows[1]["final"])
    assert [r["best_row"] for r in rows] == ["True", "False"]
    assert "seed" not in rows[0]  # the seed is what the row groups over
    assert "lower is better" in out
    table = [[c.strip() for c in ln.split("│")[1:-1]] for ln in out.splitlines() if "│" in ln]
    assert [(c[0], c[1], c[2]) for c in table] == [
        ("*", rows[0]["optimizer.lr"], "3"),
        ("", rows[1]["optimizer.lr"], "3"),
    ]
    assert all("±" in c[5] for c in table)


def test_no_group_lists_every_run_sorted(sweep: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _report(capsys, sweep, "--no-group", "--csv", tmp_path / "r.csv")
    assert code == 0, err
    rows = _csv(tmp_path / "r.csv")
    assert len(rows) == 6
    finals = [float(r["final"]) for r in rows]
    assert finals == sorted(finals)
    assert finals == sorted(s["objective"] for s in _summaries(sweep))
    assert {(r["seed"], r["optimizer.lr"]) for r in rows} == {
        (s, lr) for s in "012" for lr in ("0.1", "0.3")
    }
    assert all(r["final_std"] == "" for r in rows)
    assert [r["best_row"] for r in rows].count("True") == 1 and rows[0]["best_row"] == "True"


def test_plot_has_a_curve_per_run(sweep: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _report(capsys, sweep, "--plot", tmp_path / "curves.png")
    assert code == 0, err
    assert "(6 curves)" in out
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_partial_sweep(sweep: Path, tmp_path: Path, capsys) -> None:
    """A job that has not written its summary yet, one still running, one failed."""
    part = tmp_path / "sw"
    shutil.copytree(sweep, part)
    (part / "5" / "summary.json").unlink()
    running = json.loads((part / "4" / "summary.json").read_text())
    running.update(status="running", epochs_completed=0, final={}, best={}, objective=None)
    running.update(objective_name=None, maximize=None)  # as a run writes it when it starts
    (part / "4" / "summary.json").write_text(json.dumps(running))
    val_rows = (part / "4" / "metrics.jsonl").read_text().splitlines()[:2]
    (part / "4" / "metrics.jsonl").write_text("\n".join(val_rows) + "\n")
    failed = json.loads((part / "3" / "summary.json").read_text())
    failed.update(status="failed", error="RuntimeError: boom")
    (part / "3" / "summary.json").write_text(json.dumps(failed))

    live = dirlock.acquire(part / "4")  # job 4's writer is alive: it holds its directory's lock
    code, out, err = _report(capsys, part, "--no-group", "--csv", tmp_path / "r.csv")
    assert code == 0, err
    rows = {r["jobs"]: r for r in _csv(tmp_path / "r.csv")}
    assert rows["5"]["status"] == "unknown" and rows["5"]["epochs"] == "20/20"
    assert rows["4"]["status"] == "running" and rows["4"]["wall_s"] == ""
    assert rows["4"]["epochs"] == "10/20"
    assert float(rows["4"]["final"]) == json.loads(val_rows[1])["mse"]
    assert rows["3"]["status"] == "failed"
    assert all(r["best_row"] == "False" for k, r in rows.items() if k in "345")
    assert "running" in out and "failed" in out and "unknown" in out

    code, out, err = _report(capsys, part, "--csv", tmp_path / "g.csv")
    statuses = sorted(r["status"] for r in _csv(tmp_path / "g.csv"))
    assert statuses == ["1 failed, 1 running, 1 unknown", "completed"]  # lr 0.3 (jobs 3-5), 0.1

    live.release()  # its process is gone: the same record is a stale run now
    code, out, err = _report(capsys, part, "--no-group", "--csv", tmp_path / "r.csv")
    rows = {r["jobs"]: r for r in _csv(tmp_path / "r.csv")}
    assert rows["4"]["status"] == "stale" and rows["4"]["epochs"] == "10/20"
    assert "4: stale (its process is gone" in out


def test_jobs_not_started_show_as_pending(sweep: Path, tmp_path: Path, capsys) -> None:
    """A sweep's manifest lists its planned jobs: one without a directory yet is pending."""
    part = tmp_path / "sw"
    shutil.copytree(sweep, part)
    shutil.rmtree(part / "5")
    dlrun_sweep.update_manifest(part)  # as the sweep keeps it while it goes
    code, out, err = _report(capsys, part, "--no-group", "--csv", tmp_path / "r.csv")
    assert code == 0, err
    rows = {r["jobs"]: r for r in _csv(tmp_path / "r.csv")}
    assert sorted(rows) == ["0", "1", "2", "3", "4", "5"]
    assert rows["5"]["status"] == "pending" and rows["5"]["final"] == ""
    assert (rows["5"]["seed"], rows["5"]["optimizer.lr"], rows["5"]["objective"]) == (
        "2",
        "0.3",
        "mse",
    )
    assert list(rows).index("5") == 5  # no objective yet: last


def test_a_failed_job_of_a_real_sweep(tmp_path: Path, capsys) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("".join(f"{i % 7},{i % 5}\n" for i in range(40)))
    bad.write_text("1,2\n3,oops\n")
    code = _sweep(
        tmp_path / "km",
        "task=kmeans",
        f"data.path={good},{bad}",
        "trainer.plots=false",
        "trainer.progress=false",
    )
    assert code != 0  # the sweep says that a job failed
    capsys.readouterr()
    code, out, err = _report(capsys, tmp_path / "km", "--csv", tmp_path / "r.csv")
    assert code == 0, err
    rows = _csv(tmp_path / "r.csv")
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert rows[0]["best_row"] == "True" and rows[0]["objective"] == "inertia"
    assert rows[1]["final"] == "" and "bad.csv" in rows[1]["data.path"]


def test_maximised_objective_sorts_highest_first(tmp_path: Path, capsys) -> None:
    args = ("task=fizzbuzz", "trainer.epochs=40", "trainer.batch_size=923")  # all 923 numbers
    args += ("trainer.validate_every=20", "trainer.plots=false", "trainer.progress=false")
    assert _sweep(tmp_path / "fz", *args, "optimizer=adam", "optimizer.lr=0.0001,0.03") == 0
    capsys.readouterr()
    code, out, err = _report(capsys, tmp_path / "fz", "--csv", tmp_path / "r.csv")
    assert code == 0, err
    rows = _csv(tmp_path / "r.csv")
    accuracies = [s["objective"] for s in _summaries(tmp_path / "fz")]
    assert [float(r["final"]) for r in rows] == sorted(accuracies, reverse=True)
    assert accuracies[0] != accuracies[1]  # the two learning rates really differ
    assert rows[0]["best_row"] == "True" and "higher is better" in out


def test_separate_run_dirs_compare_their_settings(dlrun, tmp_path: Path, capsys) -> None:
    """Runs from different commands: a setting one run left at its default is read from its
    composed config, so the column shows the value it ran with."""
    a = dlrun(*SINE, "trainer.epochs=5")
    b = dlrun(*SINE, "trainer.epochs=5", "optimizer.lr=0.05")
    assert a.code == 0 and b.code == 0
    code, out, err = _report(capsys, a.run_dir, b.run_dir, "--csv", tmp_path / "r.csv")
    assert code == 0, err
    rows = _csv(tmp_path / "r.csv")
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.05", "0.3"]  # 0.3: sine-bp's default
    assert "trainer.epochs" not in rows[0]  # the same in both


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such directory"),
        (lambda p: p, "no runs found"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, capsys, make, message) -> None:
    code, out, err = _report(capsys, make(tmp_path))
    assert code == 2
    assert err.startswith("dlrun-report: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_jobs_of_two_sweeps_are_named_by_their_paths(sweep: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "other"
    shutil.copytree(sweep, copy)
    code, _, err = _report(capsys, sweep, copy, "--no-group", "--csv", tmp_path / "r.csv")
    assert code == 0, err
    names = [r["jobs"] for r in _csv(tmp_path / "r.csv")]
    assert len(names) == 12 and len(set(names)) == 12  # job "0" of each sweep told apart
    assert all(Path(n).name.isdigit() and Path(n).parent.name in ("sw", "other") for n in names)


def test_sampled_floats_are_short_in_the_table_and_whole_in_the_csv(tmp_path: Path, capsys) -> None:
    lrs = ("0.021880611398582378", "0.1034567890123")  # as an Optuna sampler writes them
    directory = tmp_path / "sw"
    assert _sweep(directory, *SINE, "trainer.epochs=2", f"optimizer.lr={','.join(lrs)}") == 0
    capsys.readouterr()
    code, out, err = _report(capsys, directory, "--csv", tmp_path / "r.csv")
    assert code == 0, err
    assert "0.0219" in out and "0.103" in out
    assert "0.021880" not in out  # the run's name says 0.02188, the settings column 0.0219
    kept = sorted(float(r["optimizer.lr"]) for r in _csv(tmp_path / "r.csv"))
    assert kept == sorted(map(float, lrs))  # every digit


def test_a_column_keeps_the_digits_that_tell_its_values_apart() -> None:
    cells = ["0.021880611398582378", "0.02189000001", "adam", "3", "1e-3"]
    assert report_rows.readable_column(cells) == ["0.02188", "0.02189", "adam", "3", "1e-3"]
    assert report_rows.readable_column(["0.5", "0.25"]) == ["0.5", "0.25"]  # short: as typed
