"""`fedsim report`: run directories written by hand -> report.html + PNGs, and its errors."""

from __future__ import annotations

import base64
import json
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsim.report import (
    ReportError,
    client_epsilons,
    load_run,
    participation_counts,
    report_command,
    write_report,
)
from fedsim.report.figures import FIGURES, privacy_utility_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run_dir(
    path: Path,
    *,
    name: str = "sweep",
    population: int = 12,
    rounds: int = 4,
    per_round: int = 5,
    noise: float | None = 1.0,
    seed: int = 0,
    audit: dict[str, Any] | None = None,
) -> Path:
    """Write a small run directory in the formats of DESIGN.md ("Record formats").

    `noise=None` writes a DP-off run (no ledger). Each participation spends 2/noise of
    eps, composed as a square root (a stand-in for the accountant: only the files'
    consistency matters here).
    """
    path.mkdir(parents=True)
    # A finished run: the final weights beside summary.json (written last).
    (path / "model.pt").write_bytes(b"")
    dp = noise is not None
    mode = "sample" if dp else "off"
    (path / "scenario.toml").write_text(
        f'name = "{name}"\nseed = {seed}\nrounds = {rounds}\npopulation = {population}\n\n'
        f"[sampling]\nclients_per_round = {per_round}\n\n"
        '[data]\nname = "digits"\npartition = "dirichlet"\nalpha = 0.5\n\n'
        '[model]\nname = "cnn"\n\n[strategy]\nname = "fedavg"\n\n'
        '[train]\nepochs = 1\nbatch_size = 16\nlr = 0.1\noptimizer = "sgd"\n\n'
        f'[dp]\nmode = "{mode}"\nnoise_multiplier = {noise or 0.0}\nmax_grad_norm = 1.0\n'
        'delta = 1e-05\naccountant = "rdp"\nsecure_rng = false\n',
        encoding="utf-8",
    )
    rng = np.random.default_rng(seed)
    counts = np.zeros(population, dtype=int)
    ledger, metrics = [], []
    for rnd in range(1, rounds + 1):
        for client in sorted(rng.choice(population, per_round, replace=False).tolist()):
            counts[client] += 1
            if dp:
                ledger.append(
                    {
                        "round": rnd,
                        "client": client,
                        "level": "sample",
                        "status": "trained",
                        "noise_multiplier": noise,
                        "sample_rate": 0.1,
                        "steps": 10,
                        "max_grad_norm": 1.0,
                        "delta": 1e-05,
                        "accountant": "rdp",
                        "epsilon": 2.0 / noise * float(np.sqrt(counts[client])),
                    }
                )
        eps = (2.0 / noise * np.sqrt(counts)).tolist() if dp else None
        metrics.append(
            {
                "round": rnd,
                "accuracy": None if rnd == 1 else 0.3 + 0.08 * rnd - (0.05 * noise if dp else 0),
                "loss": 2.0 / rnd,
                "train_loss": 1.9 / rnd,
                "epsilon_min": min(eps) if dp else None,
                "epsilon_median": statistics.median(eps) if dp else None,
                "epsilon_max": max(eps) if dp else None,
                "clients_trained": per_round,
                "clients_failed": 0,
                "seconds": 0.5,
            }
        )
    with open(path / "metrics.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(m) + "\n" for m in metrics)
    if dp:
        with open(path / "privacy_ledger.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in ledger)
    last = metrics[-1]
    summary = {
        "scenario": name,
        "rounds": rounds,
        "accuracy": last["accuracy"],
        "loss": last["loss"],
        "epsilon": {
            "min": last["epsilon_min"],
            "median": last["epsilon_median"],
            "max": last["epsilon_max"],
        }
        if dp
        else None,
        "delta": 1e-05 if dp else None,
        "dp_mode": mode,
        "accountant": "rdp" if dp else None,
        "noise_rng": "seeded" if dp else None,
        "clients_trained": rounds * per_round,
        "clients_failed": 0,
        "ledger_mismatches": 0,
        "population": population,
        "clients_per_round": per_round,
        "wall_seconds": 12.5,
        "versions": {"fedsim": "0.1.0", "flwr": "1.41.0"},
    }
    (path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    if audit is not None:
        (path / "empirical_audit.json").write_text(json.dumps(audit), encoding="utf-8")
    return path


def _data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_single_run_report_is_self_contained(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "runs" / "z1.0")
    page_path = write_report([run], tmp_path / "out")
    assert page_path == tmp_path / "out" / "report.html"
    page = page_path.read_text(encoding="utf-8")
    # Every figure is written as a PNG and embedded byte for byte; nothing is fetched.
    embedded = _data_uris(page)
    assert len(embedded) == len(FIGURES) == 6
    for name, data in zip(FIGURES, embedded, strict=True):
        on_disk = (tmp_path / "out" / name).read_bytes()
        assert on_disk.startswith(PNG_MAGIC)
        assert on_disk == data
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<style>" in page


def test_page_states_settings_results_and_privacy(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "z2", name="noise-2", noise=2.0)
    page = write_report([run], tmp_path / "out").read_text(encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text())
    assert "<title>fedsim report: z2</title>" in page
    assert "noise-2" in page and "dirichlet (α = 0.5)" in page
    eps_max = summary["epsilon"]["max"]
    assert f"ε = {eps_max:.3g} at δ = 1e-05" in page  # the privacy statement
    assert f">{eps_max:.4g}<" in page  # the results table
    assert "example (sample) level" in page and "rdp accountant" in page
    assert "Noise RNG: <b>seeded</b>" in page
    assert "fedsim 0.1.0, flwr 1.41.0" in page


def test_client_epsilons_and_participation_by_hand() -> None:
    line = {"level": "sample", "status": "trained"}
    ledger = [
        {**line, "round": 1, "client": 0, "epsilon": 1.0},
        {**line, "round": 1, "client": 3, "epsilon": 1.5},
        {**line, "round": 2, "client": 0, "epsilon": 1.4},
        {"level": "user", "round": 2, "clients": [1, 3], "epsilon": 0.3},
    ]
    # Final eps is the cumulative value of the client's last line; never-seen clients: 0.
    assert client_epsilons(ledger, 5).tolist() == [1.4, 0.0, 0.0, 1.5, 0.0]
    assert participation_counts(ledger, 5).tolist() == [2, 1, 0, 2, 0]
    assert participation_counts(None, 3).tolist() == [0, 0, 0]
    # A client id beyond the stated population is kept, not dropped.
    assert participation_counts([{**line, "client": 6, "epsilon": 1.0}], 3).size == 7


def test_report_counts_match_the_ledger(tmp_path: Path) -> None:
    run = load_run(make_run_dir(tmp_path / "r", population=30, rounds=6, per_round=4))
    counts = participation_counts(run.ledger, run.population)
    assert counts.size == 30 and counts.sum() == 6 * 4
    eps = client_epsilons(run.ledger, run.population)
    assert np.count_nonzero(eps) == np.count_nonzero(counts)
    assert eps.max() == pytest.approx(run.epsilon_max)


def test_audit_lower_bound_is_shown_beside_the_accountant(tmp_path: Path) -> None:
    audit = {
        "method": "one_run",
        "epsilon_lower_bound": 0.42,
        "confidence": 0.95,
        "guesses": 200,
        "correct": 130,
        "canaries": 1000,
    }
    run_dir = make_run_dir(tmp_path / "audited", audit=audit)
    page = write_report([run_dir], tmp_path / "out").read_text(encoding="utf-8")
    assert "0.42 (lower bound)" in page
    assert 'class="ok"' in page and "130 of 200 guesses right" in page
    # On the privacy-utility plot: a hollow triangle at the bound, at the run's accuracy.
    run = load_run(run_dir)
    ax = privacy_utility_figure([run]).axes[0]
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "^"]
    assert len(marks) == 1
    assert marks[0].get_xdata()[0] == 0.42
    assert marks[0].get_ydata()[0] == run.summary["accuracy"]


def test_audit_above_the_accountant_is_flagged(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "bad", audit={"method": "one_run", "epsilon_lower_bound": 50.0})
    page = write_report([run], tmp_path / "out").read_text(encoding="utf-8")
    assert 'class="alert"' in page and "<b>exceeds</b> the accountant" in page


def test_one_shot_estimate_is_called_an_estimate(tmp_path: Path) -> None:
    audit = {"method": "one_shot", "epsilon_estimate": 1.7, "delta": 1e-5}
    run = make_run_dir(tmp_path / "est", audit=audit)
    page = write_report([run], tmp_path / "out").read_text(encoding="utf-8")
    assert "1.7 (estimate)" in page and "not a bound" in page


def test_noise_sweep_overlays_runs_in_a_reports_dir_outside_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runs = [make_run_dir(tmp_path / "sweep" / f"z{z}", noise=z, seed=1) for z in (0.5, 1.0, 2.0)]
    runs.append(make_run_dir(tmp_path / "sweep" / "dp-off", noise=None))
    assert report_command([str(r) for r in runs], None) == 0
    # Not inside sweep/: `fedsim results sweep/*` must not meet a report directory.
    page_path = Path("reports") / "z0.5+z1.0+z2.0+dp-off" / "report.html"
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [
        "dp-off",
        "z0.5",
        "z1.0",
        "z2.0",
    ]
    assert f"report: {page_path}" in capsys.readouterr().out
    page = page_path.read_text(encoding="utf-8")
    for label in ("z0.5", "z1.0", "z2.0", "dp-off"):
        assert f"<th>{label}</th>" in page
    assert "Differential privacy is <b>off</b>" in page
    # One accountant point per DP run; the DP-off run is the dashed reference line.
    ax = privacy_utility_figure([load_run(r) for r in runs]).axes[0]
    points = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_marker() == "o")
    expected = sorted(
        json.loads((r / "summary.json").read_text())["epsilon"]["max"] for r in runs[:3]
    )
    assert points == pytest.approx(expected)
    assert any("(DP off)" in str(ln.get_label()) for ln in ax.get_lines())


def test_same_directory_names_get_distinct_labels(tmp_path: Path) -> None:
    a = make_run_dir(tmp_path / "a" / "run")
    b = make_run_dir(tmp_path / "b" / "run", seed=4)
    page = write_report([a, b], tmp_path / "out").read_text(encoding="utf-8")
    assert "<th>a/run</th>" in page and "<th>b/run</th>" in page


def test_large_population_and_dp_off_still_render(tmp_path: Path) -> None:
    big = make_run_dir(tmp_path / "big", population=2000, rounds=2, per_round=50)
    off = make_run_dir(tmp_path / "off", noise=None)
    page = write_report([big, off], tmp_path / "out").read_text(encoding="utf-8")
    assert len(_data_uris(page)) == 6


def test_single_run_default_output_is_the_run_dir(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "one")
    assert report_command([str(run)], None) == 0
    assert (run / "report.html").is_file() and (run / "epsilon_hist.png").is_file()


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: (d / "summary.json").unlink(), "summary.json is missing"),
        (
            lambda d: (d / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2, \n'),
            "metrics.jsonl:2",
        ),
        (lambda d: (d / "scenario.toml").write_text("rounds = = 3\n"), "scenario.toml"),
        (
            lambda d: (d / "summary.json").write_text("[1, 2]"),
            "summary.json: expected a JSON object",
        ),
        (
            lambda d: (d / "privacy_ledger.jsonl").write_text('{"level": "sample", "round": 1}\n'),
            "privacy_ledger.jsonl, line 1",
        ),
        (
            lambda d: (d / "empirical_audit.json").write_text('{"epsilon_lower_bound": -1}'),
            "empirical_audit.json",
        ),
    ],
)
def test_unreadable_files_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any, named: str
) -> None:
    run = make_run_dir(tmp_path / "r")
    damage(run)
    assert report_command([str(run)], str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err
    assert not (tmp_path / "out" / "report.html").exists()


def test_missing_directory_and_unwritable_output_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert report_command([str(missing)], None) == 2
    assert f"run directory {missing} does not exist" in capsys.readouterr().err
    run = make_run_dir(tmp_path / "r")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert report_command([str(run)], str(blocker)) == 2
    assert f"cannot write the report to {blocker}" in capsys.readouterr().err
    assert report_command([], None) == 2
    with pytest.raises(ReportError, match="no run directory"):
        write_report([], tmp_path / "out")


def test_user_level_run_counts_participation_from_client_lists(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "user", population=6)
    releases = [
        {"round": 1, "level": "user", "status": "released", "epsilon": 0.5, "clients": [0, 2]},
        {"round": 2, "level": "user", "status": "released", "epsilon": 0.7, "clients": [2, 5]},
    ]
    (run_dir / "privacy_ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in releases))
    toml = (run_dir / "scenario.toml").read_text().replace('mode = "sample"', 'mode = "user"')
    (run_dir / "scenario.toml").write_text(toml)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "dp_mode": "user"}))
    run = load_run(run_dir)
    assert participation_counts(run.ledger, run.population).tolist() == [1, 0, 2, 0, 0, 1]
    assert not client_epsilons(run.ledger, run.population).any()  # no per-client eps
    page = write_report([run_dir], tmp_path / "out").read_text(encoding="utf-8")
    assert "Level: user level." in page and "poisson client sampling" in page
