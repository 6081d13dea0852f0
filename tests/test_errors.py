"""One error hierarchy: every exception class fedsim defines is a FedsimError, and the
CLI's exit code (2 = bad input, nothing started) follows the class, not the message."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import fedsim
import fedsim.clients as fedsim_clients
import fedsim.strategies as fedsim_strategies
from fedsim.errors import AuditInputError, FedsimError, is_bad_input


def _defined_exceptions() -> list[type[BaseException]]:
    """Every exception class defined (not imported) in a module of the fedsim package."""
    found: dict[str, type[BaseException]] = {}
    # clients/ and strategies/ are installed as fedsim.clients and fedsim.strategies.
    modules = [
        info.name
        for package in (fedsim, fedsim_clients, fedsim_strategies)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
        if not info.name.endswith("__main__")
    ]
    for name in ["fedsim", *modules]:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


EXCEPTIONS = _defined_exceptions()


def test_the_walk_finds_the_known_error_classes() -> None:
    names = {cls.__name__ for cls in EXCEPTIONS}
    # One per package at least, so an empty walk cannot pass the test below.
    assert {
        "ScenarioError",
        "RunDirError",
        "CheckpointError",
        "DataError",
        "ModelError",
        "PrivacyError",
        "LedgerError",
        "SimulationError",
        "ClusterUnreachableError",
        "RunInterrupted",
        "RunStopped",
        "ClientFailure",
        "ReportError",
        "AuditInputError",
    } <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_class_is_a_fedsim_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, FedsimError)


def test_errors_keep_their_builtin_base() -> None:
    # Existing `except ValueError` / `except RuntimeError` clauses still catch them.
    from fedsim.clients.trainer import ClientFailure
    from fedsim.config import ScenarioError
    from fedsim.engine.simulation import ClusterUnreachableError, RunInterrupted, SimulationError
    from fedsim.privacy import LedgerError

    assert issubclass(ScenarioError, ValueError)
    assert issubclass(LedgerError, ValueError)
    assert issubclass(AuditInputError, ValueError)
    assert issubclass(SimulationError, RuntimeError)
    assert issubclass(ClusterUnreachableError, SimulationError)
    assert issubclass(RunInterrupted, RuntimeError)
    assert issubclass(ClientFailure, RuntimeError)


def test_the_two_audit_input_errors_are_one_class() -> None:
    from fedsim.audit import AuditInputError as ledger_audit
    from fedsim.empirical import AuditInputError as empirical_audit

    assert ledger_audit is empirical_audit is AuditInputError


def test_bad_input_is_decided_by_the_class() -> None:
    from fedsim.config import ScenarioError
    from fedsim.engine.checkpoint import CheckpointError
    from fedsim.engine.simulation import ClusterUnreachableError, SimulationError
    from fedsim.privacy import PrivacyError
    from fedsim.rundir import StorageError

    assert is_bad_input(ScenarioError(["x"]))
    assert is_bad_input(CheckpointError("x"))
    assert is_bad_input(StorageError("x"))
    # The same words in a message do not make a failed run bad input.
    assert is_bad_input(ClusterUnreachableError("cluster down"))
    assert not is_bad_input(SimulationError("cannot reach the Ray cluster"))
    assert not is_bad_input(PrivacyError("x"))
    assert not is_bad_input(ValueError("x"))
