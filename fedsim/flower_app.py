"""fedsim as a Flower App: `flwr run .` runs a scenario on Flower's simulation runtime.

`pyproject.toml` names `server_app` and `client_app` below as the app's components.
Flower's runtime starts Ray and the supernodes (how many: the federation's
`num-supernodes`); the ServerApp reads the run config, builds the Scenario and runs
fedsim's own server loop over Flower's grid (`fedsim.engine.simulation.run_on_grid`), so the
run directory is the one `fedsim run` writes. The ClientApp is fedsim's cohort
ClientApp: each real supernode trains cohorts of virtual clients.

Run config keys (`[tool.flwr.app.config]`, overridden with `--run-config`):
    scenario: scenario file; a relative path is taken from the app's directory.
    rounds: rounds to run; 0 keeps the scenario's own.
    out: run directory; "" is runs/<scenario name> in the runtime's working directory.
    overwrite: replace an existing fedsim run directory.
    set: more overrides as for `fedsim run --set`, separated by ";"
        (e.g. "dp.mode=off; sampling.clients_per_round=4").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.clients.app import app as client_app
from fedsim.errors import FedsimError

server_app = ServerApp()

#: The run config keys the server app understands, with their defaults.
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "scenario": "scenarios/quickstart.toml",
    "rounds": 0,
    "out": "",
    "overwrite": False,
    "set": "",
}


class FlowerAppError(FedsimError, ValueError):
    """The run config or the federation cannot run the scenario."""

    bad_input = True


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Build the scenario from the run config and run it over Flower's grid."""
    from fedsim.launch import run_on_grid

    config = dict(context.run_config)
    scenario = scenario_from_run_config(config, app_dir=_app_dir(grid))
    check_supernodes(scenario, len(list(grid.get_node_ids())))
    out = str(config.get("out") or "")
    result = run_on_grid(
        grid,
        scenario,
        out or None,
        overwrite=bool(config.get("overwrite", False)),
        progress=False,
    )
    print(f"fedsim: run directory {result.run_dir.resolve()}", flush=True)


def scenario_from_run_config(config: dict[str, Any], app_dir: Path | None = None) -> Any:
    """The validated Scenario a run config describes (scenario file + overrides).

    Raises:
        FlowerAppError: an unknown run config key or a `rounds` that is not an integer.
        ScenarioError: the scenario file or an override is invalid.
    """
    from fedsim.config import Scenario

    unknown = sorted(set(config) - set(RUN_CONFIG_DEFAULTS))
    if unknown:
        raise FlowerAppError(
            f"unknown run config key(s) {', '.join(unknown)}; fedsim's Flower App "
            f"reads {', '.join(RUN_CONFIG_DEFAULTS)}"
        )
    path = Path(str(config.get("scenario") or RUN_CONFIG_DEFAULTS["scenario"])).expanduser()
    if not path.is_absolute() and app_dir is not None and (app_dir / path).is_file():
        path = app_dir / path
    overrides = [o.strip() for o in str(config.get("set") or "").split(";") if o.strip()]
    rounds = config.get("rounds", 0)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise FlowerAppError(
            f"run config rounds = {rounds!r}: give a whole number of rounds "
            "(0 keeps the scenario's own)"
        )
    if rounds:
        overrides.append(f"rounds={rounds}")
    return Scenario.from_toml(path, overrides=overrides, before_run=True)


def check_supernodes(scenario: Any, available: int) -> None:
    """Refuse, before anything is written, a federation too small for the cohorts.

    Every cohort of a round needs its own supernode (`num_supernodes`); under
    `flwr run` their number is the federation's, not fedsim's.
    """
    from fedsim.engine.ray_backend import num_supernodes

    needed = num_supernodes(scenario)
    if available < needed:
        raise FlowerAppError(
            f"the federation has {available} supernode(s); scenario {scenario.name!r} sends "
            f"{needed} cohorts per round (backend.workers = {scenario.backend.workers}), one "
            f"per supernode: run with --federation-config 'num-supernodes={needed}' or "
            f"lower backend.workers"
        )


def _app_dir(grid: Grid) -> Path | None:
    """The installed app (FAB) directory of this run, or None outside a FAB run."""
    run = grid.run
    if not getattr(run, "fab_id", "") or not getattr(run, "fab_hash", ""):
        return None
    from flwr.common.config import get_project_dir

    try:
        return Path(get_project_dir(run.fab_id, run.fab_version, run.fab_hash))
    except (ValueError, OSError):
        return None


__all__ = ["FlowerAppError", "client_app", "scenario_from_run_config", "server_app"]
