"""TensorBoard as its users read it: a run folder named after the run, and the HPARAMS tab with
the run's settings and its last metrics, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import metadata, plugin_data_pb2  # noqa: E402


def _hparams(folder) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in acc.PluginTagToContent(metadata.PLUGIN_NAME).items()
    }


def test_the_run_folder_and_the_hparams_tab(dlrun) -> None:
    r = dlrun(
        "task=sine-bp",
        "optimizer.lr=0.1",
        "trainer.epochs=20",
        "trainer.validate_every=5",
        "trainer.plots=false",
        "device=cpu",
        "logger=[jsonl,tensorboard]",
    )
    assert r.code == 0, r.err
    name = r.summary()["name"]
    assert name == "sine-bp lr=0.1 epochs=20 validate_every=5"
    folder = r.run_dir / "tensorboard" / name  # TensorBoard's runs list shows the name
    found = _hparams(folder)
    experiment = found[metadata.EXPERIMENT_TAG].experiment
    session = found[metadata.SESSION_START_INFO_TAG].session_start_info
    settings = {
        k: v.number_value or v.string_value or v.bool_value for k, v in session.hparams.items()
    }
    assert settings["optimizer.lr"] == pytest.approx(0.1) and settings["trainer.epochs"] == 20
    assert settings["task.init"] == "uniform"
    assert not any(k.startswith("logger.") for k in settings)  # where records go is no setting
    assert "resume" not in settings and "task_file" not in settings  # unset: left out
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"val/loss", "val/mse", "train/loss"} <= metrics
    # the HPARAMS tab reads each metric's last scalar: the summary's final values
    acc = EventAccumulator(str(folder))
    acc.Reload()
    final = r.summary()["final"]
    assert acc.Scalars("val/mse")[-1].value == pytest.approx(final["mse"], rel=1e-6)
    assert acc.Scalars("val/mse")[-1].step == 20
