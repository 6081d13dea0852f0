"""partition_summary, the heat map, the rich table and `partition_command` on digits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fedsim.cli.partition_report import (
    partition_command,
    partition_summary,
    render_summary,
    save_heatmap,
)
from fedsim.config import Scenario, ScenarioError
from fedsim.data import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_summary_numbers() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    parts = [np.array([0, 1]), np.array([2, 4]), np.array([3, 5, 6, 7]), np.array([], np.int64)]
    s = partition_summary(parts, labels, 3)
    assert s["clients"] == 4 and s["samples"] == 8 and s["unassigned"] == 0
    assert s["empty_clients"] == 1 and s["overlapping"] == 0
    assert s["label_counts"].tolist() == [[2, 0, 0], [0, 1, 1], [1, 2, 1], [0, 0, 0]]
    assert s["sizes"] == {"min": 0.0, "median": 2.0, "max": 4.0, "mean": 2.0}
    assert s["per_client"]["classes"].tolist() == [1, 2, 3, 0]
    # Entropies (bits): 0, 1, 1.5 (p = 1/4, 1/2, 1/4); the empty client is left out (NaN).
    np.testing.assert_allclose(s["per_client"]["entropy_bits"][:3], [0.0, 1.0, 1.5])
    assert np.isnan(s["per_client"]["entropy_bits"][3])
    assert s["mean_entropy_bits"] == pytest.approx(2.5 / 3)
    assert s["max_entropy_bits"] == pytest.approx(np.log2(3))


def test_summary_counts_gaps_and_overlaps() -> None:
    labels = np.zeros(5, np.int64)
    s = partition_summary([np.array([0, 1]), np.array([1, 2])], labels, 2)
    assert s["unassigned"] == 2 and s["overlapping"] == 1


def test_summary_rejects_bad_input() -> None:
    with pytest.raises(DataError, match=r"labels must lie in 0..1"):
        partition_summary([np.array([0])], np.array([0, 2]), 2)
    with pytest.raises(DataError, match=r"parts\[1\] has index 9 outside 0..2"):
        partition_summary([np.array([0]), np.array([9])], np.array([0, 1, 1]), 2)
    with pytest.raises(DataError, match="parts is empty"):
        partition_summary([], np.array([0]), 1)
    with pytest.raises(DataError, match="num_classes must be"):
        partition_summary([np.array([0])], np.array([0]), 0)


def test_heatmap_small_and_subsampled(tmp_path: Path) -> None:
    small = save_heatmap(np.arange(12).reshape(4, 3), tmp_path / "a" / "small.png")
    assert small.read_bytes()[:8] == PNG_MAGIC
    counts = np.random.default_rng(0).integers(0, 50, (1000, 62))
    big = save_heatmap(counts, tmp_path / "big.png", title="t")
    assert big.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(DataError, match="must be 2-D"):
        save_heatmap(np.arange(3), tmp_path / "bad.png")


def test_heatmap_title_says_it_subsamples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    titles: list[str] = []
    original = Axes.set_title

    def spy(self: Axes, label: str, *args: object, **kwargs: object) -> object:
        titles.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_title", spy)
    save_heatmap(np.ones((250, 10)), tmp_path / "h.png")
    save_heatmap(np.ones((20, 10)), tmp_path / "s.png")
    assert "showing 100 of 250 clients (evenly spaced)" in titles[0]
    assert "showing" not in titles[1]


def test_render_summary_table() -> None:
    s = partition_summary([np.array([0, 1]), np.array([2])], np.array([0, 1, 1]), 2)
    out = io.StringIO()
    render_summary(s, Console(file=out, width=100), title="demo")
    text = out.getvalue()
    assert "demo" in text and "client size min / median / max" in text and "1 / 1.5 / 2" in text
    assert "mean label entropy (bits)" in text


def _scenario_file(tmp_path: Path) -> Path:
    scenario = Scenario.from_dict(
        {
            "name": "digits_dirichlet",
            "seed": 1,
            "population": 12,
            "sampling": {"clients_per_round": 4},
            "data": {"name": "digits", "partition": "dirichlet", "alpha": 0.3},
            "model": {"name": "cnn", "channels": [4, 8], "hidden": 16},
        }
    )
    path = tmp_path / "scenario.toml"
    path.write_text(scenario.to_toml())
    return path


def test_partition_command_on_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _scenario_file(tmp_path)
    out = io.StringIO()
    png = tmp_path / "heat.png"
    code = partition_command(
        str(path), ["data.alpha=0.2"], str(png), console=Console(file=out, width=120)
    )
    assert code == 0 and png.read_bytes()[:8] == PNG_MAGIC
    text = out.getvalue()
    assert "digits, dirichlet alpha=0.2, 12 clients" in text
    assert "samples assigned" in text and f"heat map: {png}" in text
    # Default output name: partition_<scenario name>.png in the working directory.
    monkeypatch.chdir(tmp_path)
    assert partition_command(str(path), [], None, console=Console(file=io.StringIO())) == 0
    assert (tmp_path / "partition_digits_dirichlet.png").is_file()


def test_partition_command_scenario_errors_propagate(tmp_path: Path) -> None:
    path = _scenario_file(tmp_path)
    with pytest.raises(ScenarioError, match="data.partition"):
        partition_command(str(path), ["data.partition=bogus"], None)
    with pytest.raises(ScenarioError):
        partition_command(str(tmp_path / "missing.toml"), [], None)
