"""The exceptions raised by `fedsim.privacy`: a small hierarchy of `ValueError` subclasses."""

from __future__ import annotations

from pathlib import Path

from fedsim.errors import FedsimError


class PrivacyError(FedsimError, ValueError):
    """A privacy parameter out of range, an unknown accountant, or an unsupported history.

    Subclasses `ValueError` so generic config validation catches it; messages name the
    bad value and the allowed range.
    """


class LedgerError(PrivacyError):
    """A ledger file that cannot be read or appended to.

    Attributes:
        path: The ledger file (None for an in-memory ledger).
        line_no: 1-based number of the bad line, or None when the whole file is at fault.
    """

    def __init__(
        self, message: str, *, path: Path | str | None, line_no: int | None = None
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line_no = line_no
        where = str(self.path) if self.path is not None else "<in-memory ledger>"
        if line_no is not None:
            where += f", line {line_no}"
        super().__init__(f"{where}: {message}")
