"""The one exception type raised by `fedsim.data` for bad arguments or impossible requests."""

from __future__ import annotations

from fedsim.errors import FedsimError


class DataError(FedsimError, ValueError):
    """A dataset or partition request that cannot be served.

    Subclasses `ValueError` so callers that validate configs generically can catch it, while
    callers that care can catch exactly this. Messages name the bad value and what is allowed.
    """

    bad_input = True
