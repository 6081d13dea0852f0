"""fedsim: federated learning with differential privacy on Flower + Ray.

The heavy parts (Flower, Ray, torch) are imported lazily so that `fedsim --help`
and config validation start fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Scenario",
    "ScenarioError",
    "RunResult",
    "run",
    "register_dataset",
    "register_model",
    "register_objective",
    "register_strategy",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in ("Scenario", "ScenarioError"):
        from fedsim import config

        return getattr(config, name)
    if name in (
        "register_model",
        "register_dataset",
        "register_strategy",
        "register_objective",
    ):
        from fedsim import registry

        return getattr(registry, name)
    if name == "run":
        return _run_outside_imports()
    if name == "RunResult":
        from fedsim.engine import simulation

        return simulation.RunResult
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")


def _run_outside_imports() -> Any:
    """`fedsim.run`, or, while fedsim imports a user's module for its components (a Ray
    worker rebuilding them), a `run` that refuses: starting a run there would start a
    simulation inside every worker."""
    from fedsim import registry

    module = registry.importing_user_module()
    if module is None:
        from fedsim import launch

        return launch.run

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"module {module!r} starts a run when it is imported; fedsim imports it (in "
            "every Ray worker) for the components it registers: put the run under "
            "`if __name__ == '__main__':`"
        )

    return refuse
