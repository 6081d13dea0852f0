"""The exception the audit raises for input it cannot read."""

from __future__ import annotations


class AuditInputError(ValueError):
    """A run directory the audit cannot read: missing files, a corrupt ledger line,
    a bad scenario, or an accountant that is unknown or not installed.

    ``fedsim audit`` turns it into exit code 2. The message names the problem (and
    the file and line where there is one).

    Attributes:
        line_no: 1-based number of the bad ledger line, or None when no line is at fault.
    """

    def __init__(self, message: str, *, line_no: int | None = None) -> None:
        self.line_no = line_no
        super().__init__(message)
