"""Experiment tracking: TensorBoard event files and an MLflow file-store run, read back."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from fedsim.config import ScenarioError
from fedsim.engine.tracking import flat_params, open_tracker, round_scalars
from tests.conftest import small_scenario

needs_tb = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed"
)
needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="mlflow not installed"
)


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "round": r,
            "accuracy": 0.5 + 0.1 * r,
            "loss": 2.0 / r,
            "epsilon_max": 0.7 * r,
            "clients_trained": 4,
            "clients_failed": 0,
            "ray_nodes": ["abc"],
            "fed_accuracy": None,
        }
        for r in range(1, n + 1)
    ]


def _summary() -> dict[str, Any]:
    return {"accuracy": 0.8, "epsilon": {"max": 2.1, "median": 1.9, "min": 1.0}}


def _events(log_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_round_scalars_keep_finite_numbers_only() -> None:
    row = {"round": 3, "accuracy": 0.5, "loss": float("nan"), "ray_nodes": ["x"], "ok": True}
    assert round_scalars(row) == {"accuracy": 0.5}


@needs_tb
def test_tensorboard_events_carry_metrics_epsilon_and_scenario(tmp_path: Path) -> None:
    sc = small_scenario(tracking__tensorboard=True, dp__noise_multiplier=1.3)
    tracker = open_tracker(sc, tmp_path)
    for row in _rows(3):
        tracker.on_round(row)
    tracker.on_end(_summary())
    acc = _events(tmp_path / "tensorboard")
    eps = acc.Scalars("epsilon_max")
    assert [e.step for e in eps] == [1, 2, 3]
    assert [e.value for e in eps] == pytest.approx([0.7, 1.4, 2.1])
    assert [e.value for e in acc.Scalars("accuracy")] == pytest.approx([0.6, 0.7, 0.8])
    assert acc.Scalars("final_epsilon_max")[0].value == pytest.approx(2.1)
    assert "fed_accuracy" not in acc.Tags()["scalars"]  # None: not evaluated that round
    # The resolved scenario: as text, and as hyper-parameters in the hparams plugin data.
    assert "scenario/text_summary" in acc.Tags()["tensors"]
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["dp.noise_multiplier"].number_value == pytest.approx(1.3)
    assert info.hparams["name"].string_value == sc.name


@needs_tb
def test_tensorboard_steps_continue_after_a_resume(tmp_path: Path) -> None:
    sc = small_scenario(tracking__tensorboard=True)
    first = open_tracker(sc, tmp_path)
    for row in _rows(2):
        first.on_round(row)
    first.close()  # the run stopped after round 2
    second = open_tracker(sc, tmp_path)
    second.on_round(_rows(3)[2])
    second.on_end(_summary())
    steps = [e.step for e in _events(tmp_path / "tensorboard").Scalars("loss")]
    assert sorted(steps) == [1, 2, 3]


@needs_mlflow
def test_mlflow_run_in_a_local_store(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    sc = small_scenario(tracking__mlflow=True, dp__noise_multiplier=0.9)
    tracker = open_tracker(sc, tmp_path)
    for row in _rows(2):
        tracker.on_round(row)
    tracker.close()  # stopped: resumable, the same MLflow run goes on
    tracker = open_tracker(sc, tmp_path)
    tracker.on_round(_rows(3)[2])
    tracker.on_end(_summary())
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(sc.name).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "epsilon_max")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.7), (2, 1.4), (3, 2.1)]
    assert run.data.params["dp.noise_multiplier"] == "0.9"
    assert run.data.metrics["final_accuracy"] == pytest.approx(0.8)


def test_flat_params_are_the_resolved_scenario() -> None:
    sc = small_scenario()
    params = flat_params(sc)
    assert params["rounds"] == sc.rounds and params["dp.mode"] == sc.dp.mode
    assert all(isinstance(v, str | int | float | bool) for v in params.values())


def test_missing_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedsim.cli.commands import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    sc = small_scenario(tracking__mlflow=True)  # the schema accepts it: runs stay readable
    with pytest.raises(ScenarioError, match=r"pip install 'fedsim\[tracking\]'"):
        open_tracker(sc, tmp_path)
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "s.toml"
    path.write_text(sc.to_toml(), encoding="utf-8")
    for command in ("check", "run"):
        assert main([command, str(path), "--set", f"name=t{command}"]) == 2
        err = capsys.readouterr().err
        assert "tracking.mlflow = true needs the mlflow package" in err
        assert "fedsim[tracking]" in err
    assert not (tmp_path / "runs").exists() and not Path("runs/trun").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "postgresql://u@db/x", "databricks://x"])
def test_tracking_uri_must_be_a_local_store(uri: str) -> None:
    with pytest.raises(ScenarioError, match="only a local store"):
        small_scenario(tracking__mlflow=True, tracking__tracking_uri=uri)


def test_no_tracking_section_writes_nothing(tmp_path: Path) -> None:
    tracker = open_tracker(small_scenario(), tmp_path)
    tracker.on_round(_rows(1)[0])
    tracker.on_end(_summary())
    assert list(tmp_path.iterdir()) == []


@needs_tb
def test_the_server_loop_logs_every_metrics_line(tmp_path: Path, flower_run_context: Any) -> None:
    from tests.test_server_loop import serve

    state = serve(tmp_path, rounds=2, tracking__tensorboard=True, model__hidden=0)
    acc = _events(state.rundir.path / "tensorboard")
    logged = [(e.step, e.value) for e in acc.Scalars("epsilon_max")]
    assert logged == [(m["round"], pytest.approx(m["epsilon_max"])) for m in state.metrics]
    assert len(logged) == 2
