"""The composition root: the one module that joins fedsim's server side with its client side.

The server side (`fedsim.engine.simulation`, the round loop, the grid, the strategies) and the
client side (`fedsim.clients`: the cohort ClientApp, the trainers, the engine probe)
never import each other (tests/test_architecture.py). What the server needs of the
clients (the ClientApp to hand to Flower, the engine probe for the chunk size) is a
`ClientSide` built here and passed in. `fedsim.run`, the CLI and the Flower App start
runs through these functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine imports Flower and torch; only a run needs them
    from flwr.serverapp import Grid

    from fedsim.config import Scenario
    from fedsim.engine.simulation import ClientSide, RunResult


def client_side() -> ClientSide:
    """The client side every fedsim run uses: the cohort ClientApp and its engine probe."""
    from fedsim.clients.app import app
    from fedsim.clients.engine import choose_engine
    from fedsim.engine.simulation import ClientSide

    return ClientSide(app=app, choose_engine=choose_engine)


def run(scenario: Scenario, out: str | Path | None = None, **options: Any) -> RunResult:
    """Run a scenario end to end (`fedsim.engine.simulation.run`'s arguments, client side set)."""
    from fedsim.engine import simulation

    return simulation.run(scenario, out, clients=client_side(), **options)


def resume(run_dir: str | Path, **options: Any) -> RunResult:
    """Continue a killed or interrupted run (`fedsim.engine.simulation.resume`'s arguments)."""
    from fedsim.engine import simulation

    return simulation.resume(run_dir, clients=client_side(), **options)


def run_on_grid(
    grid: Grid, scenario: Scenario, out: str | Path | None = None, **options: Any
) -> RunResult:
    """A scenario's server loop over Flower's own Grid (`fedsim.engine.simulation.run_on_grid`)."""
    from fedsim.engine import simulation

    return simulation.run_on_grid(grid, scenario, out, clients=client_side(), **options)
