"""What a reader of fedsim's figures and tables sees: legends that say what differs,
integer round ticks, the budget line, figure formats, the results table's rows and
columns, Shakespeare's characters on the heat map, user strings printed as given."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fedsim.cli.commands import main, results_table
from fedsim.cli.partition_report import heatmap_figure
from fedsim.report import load_run, report_command
from fedsim.report.figures import epsilon_figure, legend_labels, plot_run
from tests.report.test_report_html import make_run_dir


def _legend_texts(fig) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def _png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


def test_legends_name_the_scenario_key_that_differs(tmp_path: Path) -> None:
    runs = [load_run(make_run_dir(tmp_path / f"r{z}", noise=z)) for z in (0.5, 2.0)]
    assert legend_labels(runs) == ["dp.noise_multiplier=0.5", "dp.noise_multiplier=2"]
    page = tmp_path / "out"
    assert report_command([str(tmp_path / "r0.5"), str(tmp_path / "r2.0")], str(page)) == 0
    # Tables still name each run by its directory.
    html = (page / "report.html").read_text(encoding="utf-8")
    assert "<th>r0.5</th>" in html and "<th>r2.0</th>" in html


def test_legends_fall_back_to_directory_names_for_repeats(tmp_path: Path) -> None:
    runs = [load_run(make_run_dir(tmp_path / name)) for name in ("a", "b")]
    assert legend_labels(runs) == ["a", "b"]


def test_per_run_plots_are_titled_with_integer_round_ticks_and_a_budget(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", rounds=4)
    data = load_run(run)
    scenario = dict(data.scenario)
    scenario["dp"] = {**scenario["dp"], "max_epsilon": 3.0}
    paths = plot_run(data.metrics, tmp_path / "plots", scenario)
    assert [p.name for p in paths] == ["accuracy.png", "epsilon.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)

    fig = epsilon_figure([replace(data, scenario=scenario)])
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 4]
    assert ticks and all(float(t).is_integer() for t in ticks)
    budget = [ln for ln in ax.get_lines() if "budget" in str(ln.get_label())]
    assert len(budget) == 1 and list(budget[0].get_ydata()) == [3.0, 3.0]


def test_plot_run_titles_name_the_scenario(tmp_path: Path) -> None:
    data = load_run(make_run_dir(tmp_path / "run", name="digits_dp"))
    from fedsim.report.figures import accuracy_figure

    fig = accuracy_figure([data], title="digits_dp: test accuracy")
    assert fig.axes[0].get_title() == "digits_dp: test accuracy"
    plot_run(data.metrics, tmp_path / "plots", data.scenario, fmt="svg")
    svg = (tmp_path / "plots" / "accuracy.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "digits_dp: test accuracy" in svg


@pytest.mark.parametrize(("fmt", "magic"), [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_report_writes_vector_figures(tmp_path: Path, fmt: str, magic: bytes) -> None:
    run = make_run_dir(tmp_path / "run")
    assert report_command([str(run)], str(tmp_path / "out"), fmt=fmt) == 0
    assert (tmp_path / "out" / f"accuracy.{fmt}").read_bytes().startswith(magic)
    assert (tmp_path / "out" / "report.html").is_file()


def test_report_dpi_sets_the_png_size(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    assert main(["report", str(run), "--out", str(tmp_path / "out"), "--dpi", "200"]) == 0
    assert _png_size((tmp_path / "out" / "accuracy.png").read_bytes()) == (1280, 720)


def test_report_refuses_a_bad_dpi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run_dir(tmp_path / "run")
    assert report_command([str(run)], str(tmp_path / "out"), dpi=0) == 2
    assert "--dpi 0: allowed an integer in 20..1200" in capsys.readouterr().err


def test_results_skips_non_runs_and_labels_rows_by_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_run_dir(Path("runs/a"), name="quickstart", noise=0.7)
    make_run_dir(Path("runs/b"), name="quickstart", noise=None)
    Path("runs/report").mkdir()
    Path("runs/report/report.html").write_text("<html></html>")
    assert main(["results", "runs/a", "runs/b", "runs/report"]) == 0
    out, err = capsys.readouterr()
    assert "skipped runs/report: not a fedsim run directory" in err
    rows = [ln for ln in out.splitlines() if "runs/" in ln]
    assert len(rows) == 2
    assert "runs/a" in rows[0] and " 0.7 " in rows[0] and "quickstart" not in rows[0]
    assert "runs/b" in rows[1]
    header = next(ln for ln in out.splitlines() if "accuracy" in ln)
    assert "noise" in header and "failed" in header


def test_results_with_no_run_at_all_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("empty").mkdir()
    assert main(["results", "empty"]) == 2
    assert "error: no finished fedsim run among empty" in capsys.readouterr().err


def test_markup_in_names_and_paths_prints_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = make_run_dir(Path("q[/]"), name="q[/]")
    assert main(["results", str(run)]) == 0
    assert "q[/]" in capsys.readouterr().out
    console = Console(width=120, record=True)
    summary = {"rounds": 1, "accuracy": 0.5, "loss": 1.0, "wall_seconds": 1.0}
    console.print(results_table([("[bold red]x[/]", summary)]))
    assert "[bold red]x[/]" in console.export_text()


def test_shakespeare_heat_map_shows_characters() -> None:
    from fedsim.data.shakespeare import VOCAB

    counts = np.ones((3, len(VOCAB)), dtype=int)
    fig = heatmap_figure(counts, class_names=list(VOCAB))
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(labels) == len(VOCAB)
    assert "a" in labels and "Z" in labels and "␣" in labels and "\\n" in labels
    assert fig.axes[0].get_xlabel() == "next character"


def test_dollar_signs_in_names_are_drawn_literally(tmp_path: Path) -> None:
    data = load_run(make_run_dir(tmp_path / "run", name="cost$x$"))
    # An unescaped "$x$" would be math text (and "$\\q$" a parse error at draw time).
    paths = plot_run(data.metrics, tmp_path / "plots", {**data.scenario, "name": "a$\\q$"})
    assert all(p.stat().st_size > 0 for p in paths)
    from fedsim.report.figures import accuracy_figure

    fig = accuracy_figure([replace(data, legend="z=$\\q$")])
    fig.canvas.draw()
    assert _legend_texts(fig) == ["z=\\$\\q\\$"]
