"""The exception the audit raises for input it cannot read (defined in `fedsim.errors`).

One class for the ledger audit and the empirical audit's statistics: both mean "the
audit cannot use this input", and `fedsim audit` exits 2 for it.
"""

from __future__ import annotations

from fedsim.errors import AuditInputError

__all__ = ["AuditInputError"]
