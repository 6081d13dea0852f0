"""The root of fedsim's exceptions, and the errors shared by more than one package.

Every exception fedsim raises on purpose is a :class:`FedsimError`, so a caller can
catch all of them at once. Each concrete class also keeps the builtin base it always
had (``ValueError`` for bad input, ``RuntimeError`` for a run that could not go on), so
existing ``except ValueError`` / ``except RuntimeError`` clauses still catch them.

The classes stay next to the code that raises them (``ScenarioError`` in
``fedsim.config``, ``RunDirError`` in ``fedsim.rundir``, ...); this module is a leaf that
imports nothing, so every module, light or heavy, can subclass it.

Which errors mean "bad input, nothing started" (``fedsim`` exits 2) is a property of
the class, :attr:`FedsimError.bad_input`, not of its message: the CLI asks the class.
"""

from __future__ import annotations

__all__ = ["AuditInputError", "FedsimError", "is_bad_input"]


class FedsimError(Exception):
    """Base class of every error fedsim raises on purpose.

    Attributes:
        bad_input: True for errors that mean the user's input (scenario, run directory,
            data, model, cluster address) cannot be used and nothing was started; the
            CLI exits 2 for them and 1 for the others.
    """

    bad_input: bool = False


class AuditInputError(FedsimError, ValueError):
    """Input an audit cannot use: a run directory it cannot read (missing files, a
    corrupt ledger line, a bad scenario), an unknown or uninstalled accountant, or an
    argument of the empirical audit's statistics out of range.

    ``fedsim audit`` turns it into exit code 2. The message names the problem (and the
    file and line where there is one).

    Attributes:
        line_no: 1-based number of the bad ledger line, or None when no line is at fault.
    """

    # Not `bad_input`: `fedsim audit` sets its own exit code for it, and one raised by
    # the empirical audit during a run is a failed run (exit 1), as before.

    def __init__(self, message: str, *, line_no: int | None = None) -> None:
        self.line_no = line_no
        super().__init__(message)


def is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` means "bad input, nothing started" (see :attr:`FedsimError.bad_input`)."""
    return isinstance(exc, FedsimError) and exc.bad_input
