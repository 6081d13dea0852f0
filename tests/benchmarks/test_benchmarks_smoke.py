"""Each benchmark runs end to end at --tiny size and writes its ratio fields (no timing checks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_benchmarks_is_this_repos_package() -> None:
    # opacus 1.6 also installs a top-level package named `benchmarks` (its own layer
    # benchmarks) into site-packages; ours must win, i.e. the repo root comes first on
    # sys.path (pytest's rootdir insertion, or running `python -m benchmarks.X` from it).
    import benchmarks

    assert Path(benchmarks.__file__).resolve().parent == REPO / "benchmarks", (
        f"`benchmarks` resolves to {benchmarks.__file__}, not this repository's; "
        "run from the repository root"
    )


def _load(path: Path) -> dict:
    assert path.is_file(), f"{path} not written"
    data = json.loads(path.read_text())
    assert data["tiny"] is True
    for key in ("cores_available", "platform", "torch_threads"):
        assert key in data["machine"], key
    return data


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_rounds_tiny(tmp_path: Path) -> None:
    from benchmarks import rounds

    out = tmp_path / "rounds.json"
    rounds.main(["--tiny", "--out", str(out)])
    data = _load(out)
    ratios = data["ratios"]
    assert _is_number(ratios["fedsim_k1_over_fedsim_auto"])
    assert _is_number(ratios["fedsim_auto_over_floor"])
    assert set(data["targets"]) == set(ratios)
    for run in ("fedsim_auto", "fedsim_k1"):
        assert _is_number(data[run]["median_round_seconds"])
        assert data[run]["clients_failed"] == [0] * data["setup"]["rounds"]
    assert _is_number(data["floor"]["median_round_seconds"])
    # Same clients and seeds: K does not change the result.
    assert data["checks"]["max_abs_diff_auto_vs_k1"] == 0.0
    # The vectorised engine ran, beside the sequential one, to float rounding of it.
    assert data["engine_summary"]["engine"] == "vectorised"
    for name in (
        "fedsim_auto_over_fedsim_vec",
        "fedsim_vec_over_floor",
        "fedsim_vec_dp_over_nodp",
        "plain_flower_over_fedsim_vec",
    ):
        assert _is_number(ratios[name])
    # The plain Flower baseline trained every client of every round.
    assert len(data["plain_flower"]["round_seconds"]) == data["setup"]["rounds"]
    assert data["checks"]["max_abs_diff_auto_vs_vec"] < 1e-4


def test_dp_tiny(tmp_path: Path) -> None:
    from benchmarks import dp

    out = tmp_path / "dp.json"
    dp.main(["--tiny", "--out", str(out)])
    data = _load(out)
    assert set(data["ratios"]) == {"femnist_cnn", "cnn"}
    for model, ratios in data["ratios"].items():
        for key in (
            "fedsim_sample_over_non_dp",
            "opacus_hooks_over_non_dp",
            "opacus_ghost_over_non_dp",
            "fedsim_sample_over_opacus_ghost",
        ):
            assert _is_number(ratios[key]), (model, key)
        variants = data["models"][model]["variants"]
        for v in ("non_dp", "opacus_hooks", "opacus_ghost", "fedsim_sample", "fedsim_nondp"):
            assert _is_number(variants[v]["samples_per_second"]), (model, v)
    noise = data["models"]["femnist_cnn"]["noise"]
    assert noise["params"] == 6_603_710
    assert _is_number(noise["one_tensor_seconds"])


def test_scale_tiny(tmp_path: Path) -> None:
    from benchmarks import scale

    out = tmp_path / "scale.json"
    scale.main(["--tiny", "--out", str(out)])
    data = _load(out)
    ratios = data["ratios"]
    assert _is_number(ratios["largest_round_over_reference_round"])
    assert _is_number(ratios["largest_peak_rss_gib"])
    assert ratios["clients_per_round_ratio"] == 10
    assert [r["population"] for r in data["runs"]] == [20, 200]
    for r in data["runs"]:
        assert r["ran"] is True
        assert _is_number(r["median_round_seconds"])
        assert _is_number(r["memory"]["peak_rss_bytes"])
        assert r["startup_seconds"] is not None
    assert set(data["met"]) == {
        "largest_runs",
        "largest_peak_rss_under_target",
        "largest_round_over_reference",
    }
