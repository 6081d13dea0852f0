"""Differential-privacy accounting for fedsim: accountants and the per-client ledger.

- :func:`epsilon`, :func:`epsilon_of_history`, :func:`noise_multiplier_for`: maths
  of the Poisson-subsampled Gaussian mechanism under the accountants named in
  :data:`ACCOUNTANTS` (Opacus RDP / PRV / GDP, dp-accounting PLD).
- :class:`PrivacyLedger`: composes each client's :class:`PrivacyEvent` s across rounds
  and appends them to ``privacy_ledger.jsonl``.
"""

from fedsim.privacy.accountants import (
    ACCOUNTANTS,
    epsilon,
    epsilon_of_history,
    noise_multiplier_for,
)
from fedsim.privacy.errors import LedgerError, PrivacyError
from fedsim.privacy.events import PrivacyEvent
from fedsim.privacy.ledger import PrivacyLedger, read_ledger

__all__ = [
    "ACCOUNTANTS",
    "LedgerError",
    "PrivacyError",
    "PrivacyEvent",
    "PrivacyLedger",
    "epsilon",
    "epsilon_of_history",
    "noise_multiplier_for",
    "read_ledger",
]
