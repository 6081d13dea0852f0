"""fedsim: federated learning with differential privacy on Flower + Ray.

The heavy parts (Flower, Ray, torch) are imported lazily so that `fedsim --help`
and config validation start fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Scenario", "ScenarioError", "RunResult", "run", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Scenario", "ScenarioError"):
        from fedsim import config

        return getattr(config, name)
    if name in ("run", "RunResult"):
        from fedsim import simulation

        return getattr(simulation, name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
