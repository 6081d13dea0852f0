"""Per-client privacy ledger: composes each client's DP-SGD participations, on disk as JSONL.

Sample-level DP: clients' data are disjoint, so a client's epsilon composes only
the rounds it took part in, and the population's example-level guarantee is the
maximum over clients. The ledger, not the client's privacy engine (which is new
every round), owns that composition.

File format (``privacy_ledger.jsonl``, one line per participation, see DESIGN.md)::

    {"round": 3, "client": 17, "level": "sample", "status": "trained",
     "noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 20,
     "max_grad_norm": 1.0, "delta": 1e-05, "accountant": "rdp", "epsilon": 2.31}

``epsilon`` is the client's cumulative epsilon after that line (at the ledger's
delta, with the ledger's accountant); an infinite epsilon is written as
``Infinity``, which Python's ``json`` reads back. Lines with ``"level": "user"``
(user-level releases written by the server, without ``client``) are kept, not
composed per client, in :attr:`PrivacyLedger.user_events`.
"""

from __future__ import annotations

import math
import os
import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np

from fedsim.privacy import records
from fedsim.privacy._checks import check_delta, check_int, is_integral
from fedsim.privacy.accountants import (
    ACCOUNTANTS,
    RDP_ORDERS,
    HistoryEntry,
    check_accountant,
    epsilon_from_rdp,
    epsilon_of_history,
    rdp_vector,
)
from fedsim.privacy.errors import LedgerError, PrivacyError
from fedsim.privacy.events import PrivacyEvent
from fedsim.privacy.records import (
    DISCARDED,
    LINE_KEYS,
    SAMPLE_LEVEL,
    STATUSES,
    USER_LEVEL,
    USER_SAMPLINGS,
)

__all__ = [
    "DISCARDED",
    "LINE_KEYS",
    "STATUSES",
    "LedgerError",
    "PrivacyLedger",
    "parse_ledger_line",
    "read_ledger",
]

#: The subject a user-level line with Poisson client sampling charges: every client.
POPULATION = -1


# --------------------------------------------------------------------------- composition


class _Composition(ABC):
    """One client's composed privacy loss under one accountant."""

    @abstractmethod
    def projected(self, entry: HistoryEntry, delta: float) -> float:
        """Epsilon if ``entry`` were composed in (no change)."""

    @abstractmethod
    def add(self, entry: HistoryEntry, *, epsilon: float | None = None) -> None:
        """Compose ``entry`` in; ``epsilon`` is its known result, if computed already."""

    @abstractmethod
    def epsilon(self, delta: float) -> float:
        """Epsilon of everything composed so far."""


class _RdpComposition(_Composition):
    # Fast path: the state is one RDP vector; a record is a cached lookup, a vector add
    # and one conversion (~30 us), so 1,000 records per round cost a few tens of ms.

    def __init__(self) -> None:
        self._rdp = np.zeros(len(RDP_ORDERS))
        self._epsilon: float | None = 0.0

    def _with(self, entry: HistoryEntry) -> np.ndarray:
        z, q, steps = entry
        return self._rdp + rdp_vector(noise_multiplier=z, sample_rate=q, steps=steps)

    def projected(self, entry: HistoryEntry, delta: float) -> float:
        return epsilon_from_rdp(self._with(entry), delta=delta)

    def add(self, entry: HistoryEntry, *, epsilon: float | None = None) -> None:
        self._rdp = self._with(entry)
        self._epsilon = epsilon

    def epsilon(self, delta: float) -> float:
        if self._epsilon is None:
            self._epsilon = epsilon_from_rdp(self._rdp, delta=delta)
        return self._epsilon


class _HistoryComposition(_Composition):
    # prv / gdp / pld cannot add per-step summaries, so keep the history (merged by
    # (z, q): composition is commutative) and recompute, caching until it changes.

    def __init__(self, accountant: str) -> None:
        self._accountant = accountant
        self._steps: dict[tuple[float, float], int] = {}
        self._epsilon: float | None = 0.0

    def _history(self, extra: HistoryEntry | None = None) -> list[HistoryEntry]:
        steps = dict(self._steps)
        if extra is not None:
            z, q, n = extra
            steps[(z, q)] = steps.get((z, q), 0) + n
        return [(z, q, n) for (z, q), n in steps.items()]

    def projected(self, entry: HistoryEntry, delta: float) -> float:
        return epsilon_of_history(self._history(entry), delta=delta, accountant=self._accountant)

    def add(self, entry: HistoryEntry, *, epsilon: float | None = None) -> None:
        z, q, n = entry
        self._steps[(z, q)] = self._steps.get((z, q), 0) + n
        self._epsilon = epsilon

    def epsilon(self, delta: float) -> float:
        if self._epsilon is None:
            self._epsilon = epsilon_of_history(
                self._history(), delta=delta, accountant=self._accountant
            )
        return self._epsilon


# Name registry: accountant -> factory of a client's composition state.
_COMPOSITIONS: dict[str, Callable[[], _Composition]] = {
    name: partial(_HistoryComposition, name) for name in ACCOUNTANTS
}
_COMPOSITIONS["rdp"] = _RdpComposition


# --------------------------------------------------------------------------- file format


def parse_ledger_line(text: str, *, path: Path | str, line_no: int) -> dict[str, Any]:
    """Parse and validate one ledger line as :func:`read_ledger` does.

    Raises:
        LedgerError: naming ``path`` and ``line_no``.
    """
    return records.parse_line(text, path=path, line_no=line_no)


def read_ledger(path: Path | str) -> list[dict[str, Any]]:
    """Read and validate every line of a ledger file.

    Nothing is skipped: a corrupt, truncated, empty or non-JSON line, a line with a
    missing field, a wrong type or an out-of-range value raises.

    Args:
        path: A ``privacy_ledger.jsonl`` file.

    Returns:
        One dict per line, in file order (sample-level and user-level lines).

    Raises:
        LedgerError: naming the file and the 1-based line number.
        OSError: the file cannot be opened.
    """
    return records.read_records(path)


def _entry_of(line: Mapping[str, Any]) -> HistoryEntry:
    """The ``(z, q, steps)`` a line charges its subjects with."""
    # A user-level line is one release (steps 1), whatever a hand-written line says.
    steps = int(line["steps"]) if line["level"] == SAMPLE_LEVEL else 1
    return (float(line["noise_multiplier"]), float(line["sample_rate"]), steps)


def _subjects_of(line: Mapping[str, Any]) -> list[int]:
    """Who a line charges: its client; or the population, and with fixed-size client
    sampling (no amplification) also each client that took part."""
    if line["level"] == SAMPLE_LEVEL:
        return [int(line["client"])]
    fixed = line.get("sampling") == "fixed"
    return [POPULATION, *(int(c) for c in line.get("clients", []) if fixed)]


def _infer(records: list[dict[str, Any]], key: str, path: Path) -> Any:
    values = {r[key] for r in records if key in r}
    if len(values) == 1:
        return values.pop()
    if not values:
        raise LedgerError(f"no lines to infer {key!r} from; pass {key}= to load()", path=path)
    raise LedgerError(
        f"lines disagree on {key!r} ({sorted(values)}); pass {key}= to load()", path=path
    )


# --------------------------------------------------------------------------- the ledger


class PrivacyLedger:
    """Per-client sample-level privacy accounting, appended to a JSONL file.

    Args:
        path: File to append lines to (created; must not already hold lines: use
            :meth:`load` to resume one), or None for an in-memory ledger.
        delta: Delta every epsilon is reported at, in (0, 1).
        accountant: One of :data:`fedsim.privacy.ACCOUNTANTS`. ``"rdp"`` composes by
            summing cached RDP vectors (fast); the others recompute per client.

    Raises:
        PrivacyError: bad delta or accountant.
        LedgerError: ``path`` already holds ledger lines.

    Example:
        >>> with PrivacyLedger(None, delta=1e-5) as ledger:
        ...     event = PrivacyEvent(noise_multiplier=1.1, sample_rate=0.01, steps=100,
        ...                          max_grad_norm=1.0, delta=1e-5)
        ...     eps = ledger.record(round=1, client=7, event=event)
        >>> ledger.epsilon_of(7) == eps, ledger.epsilon_of(8)
        (True, 0.0)
    """

    def __init__(self, path: Path | str | None, *, delta: float, accountant: str = "rdp"):
        self._setup(path, delta=delta, accountant=accountant)
        if self.path is not None:
            if self.path.exists() and self.path.stat().st_size > 0:
                raise LedgerError(
                    "file already holds ledger lines; use PrivacyLedger.load(path) to resume "
                    "it, or choose a new path",
                    path=self.path,
                )
            self._open()

    def _setup(self, path: Path | str | None, *, delta: float, accountant: str) -> None:
        self.path: Path | None = Path(path) if path is not None else None
        self.delta: float = check_delta(delta)
        self.accountant: str = check_accountant(accountant)
        self._new_composition = _COMPOSITIONS[accountant]
        # One composition per charged subject and level: (level, client id or POPULATION).
        self._charged: dict[tuple[str, int], _Composition] = {}
        self._participations: dict[int, int] = {}
        #: User-level lines (population-level DP-FedAvg releases), in order.
        self.user_events: list[dict[str, Any]] = []
        self._file: IO[str] | None = None
        self._closed = False

    def _open(self) -> IO[str]:
        if self._closed:
            raise LedgerError("ledger is closed", path=self.path)
        if self._file is None:
            if self.path is None:
                raise LedgerError("an in-memory ledger has no file to append to", path=None)
            needs_newline = False
            if self.path.exists() and self.path.stat().st_size > 0:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    # A crash can leave the last (valid) line without its newline.
                    needs_newline = f.read(1) != b"\n"
            # Append mode: earlier lines are never rewritten; a crash loses at most
            # what was written since the last flush().
            self._file = open(self.path, "a", encoding="utf-8")
            if needs_newline:
                self._file.write("\n")
        return self._file

    # -- writing

    def record(
        self,
        *,
        round: int,  # shadows the builtin to match the ledger's field name
        client: int,
        event: PrivacyEvent,
        status: str = "trained",
        **extra: Any,
    ) -> float:
        """Compose one participation into ``client``'s state and append its line.

        Args:
            round: Round number, >= 0.
            client: Client id, >= 0.
            event: What the client reports it spent. Its delta must equal the ledger's.
            status: ``"trained"`` or ``"failed"`` (a failed client may still have spent
                privacy; events with ``steps == 0`` get a line too).
            **extra: JSON-serialisable fields appended after the standard keys (e.g.
                ``error="..."``); they must not reuse a standard key.

        Returns:
            The client's cumulative epsilon after this event.

        Raises:
            PrivacyError: a bad argument, a delta mismatch, or an accountant that cannot
                compose this history (``"gdp"`` with a changed noise or sample rate).
                Nothing is recorded then.
            TypeError: an ``extra`` value that JSON cannot serialise.
            LedgerError: the ledger is closed.
        """
        if self._closed:
            raise LedgerError("ledger is closed", path=self.path)
        round_ = check_int(round, name="round")
        client_id = check_int(client, name="client")
        if not isinstance(event, PrivacyEvent):
            raise PrivacyError(f"event must be a PrivacyEvent, got {type(event).__name__}")
        if status not in STATUSES:
            raise PrivacyError(f"status must be one of {STATUSES}, got {status!r}")
        clashes = sorted(set(extra) & set(LINE_KEYS))
        if clashes:
            raise PrivacyError(f"extra fields {clashes} would overwrite standard ledger keys")
        if not math.isclose(event.delta, self.delta, rel_tol=1e-12, abs_tol=0.0):
            # Lines carry the event's delta; a ledger epsilon at another delta would
            # make the file ambiguous, and a mismatch means the client was misconfigured.
            raise PrivacyError(
                f"event.delta={event.delta} differs from the ledger's delta={self.delta}"
            )

        eps = self._projected(SAMPLE_LEVEL, client_id, event.entry)
        line = records.sample_line(
            round=round_,
            client=client_id,
            status=status,
            event=event.fields(),
            accountant=self.accountant,
            epsilon=eps,
            extra=extra,
        )
        self._charge(line, epsilon=eps)
        return eps

    def record_user(
        self,
        *,
        round: int,  # shadows the builtin to match the ledger's field name
        noise_multiplier: float,
        sample_rate: float,
        clip_norm: float,
        sampling: str,
        clients: Sequence[int],
        **extra: Any,
    ) -> float:
        """Compose one user-level (DP-FedAvg) release of the population and append its line.

        One release per round: the sum of the sampled clients' clipped updates plus
        Gaussian noise of std ``noise_multiplier * clip_norm``. With ``sampling ==
        "poisson"`` the release is accounted with amplification at ``sample_rate`` (the
        rate every client was sampled with) and covers every client; with ``"fixed"``
        sampling, ``sample_rate`` must be 1.0 (no amplification) and only the clients
        that took part compose it.

        Returns:
            The population's user-level epsilon after this release.

        Raises:
            PrivacyError: amplification claimed for fixed-size sampling, or a bad value.
        """
        if self._closed:
            raise LedgerError("ledger is closed", path=self.path)
        if sampling not in USER_SAMPLINGS:
            raise PrivacyError(f"sampling must be one of {USER_SAMPLINGS}, got {sampling!r}")
        if sampling == "fixed" and sample_rate != 1.0:
            raise PrivacyError(
                "fixed-size client sampling is not Poisson sampling: it must be accounted "
                f"without amplification (sample_rate=1.0), got {sample_rate}"
            )
        event = PrivacyEvent(
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps=1,
            max_grad_norm=clip_norm,
            delta=self.delta,
        )
        eps = self._projected(USER_LEVEL, POPULATION, event.entry)
        line = records.user_line(
            round=check_int(round, name="round"),
            event=event.fields(),
            accountant=self.accountant,
            epsilon=eps,
            sampling=sampling,
            clients=sorted(int(c) for c in clients),
            extra=extra,
        )
        self._charge(line, epsilon=eps)
        return eps

    def _projected(self, level: str, subject: int, entry: HistoryEntry) -> float:
        """Epsilon of ``subject`` at ``level`` if ``entry`` were charged (no change)."""
        state = self._charged.get((level, subject))
        if state is None:
            state = self._new_composition()
        return state.projected(entry, self.delta)

    def _charge(self, line: dict[str, Any], *, epsilon: float | None, write: bool = True) -> None:
        """Append ``line`` (if the ledger has a file) and charge its subjects with its event.

        The one path of every line, written or loaded. ``epsilon`` is the first
        subject's epsilon after the line when already computed (None: computed lazily);
        ``write=False`` for lines read back from the file.

        Raises:
            TypeError: a value JSON cannot serialise; nothing is written or charged.
        """
        if write and self.path is not None:
            text = records.serialise(line)  # before any change: may raise TypeError
            # Written before the state changes: if the write fails, memory matches the file.
            self._open().write(text)
        level, entry = line["level"], _entry_of(line)
        for k, subject in enumerate(_subjects_of(line)):
            state = self._charged.get((level, subject))
            if state is None:
                state = self._charged[(level, subject)] = self._new_composition()
            state.add(entry, epsilon=epsilon if k == 0 else None)
        if level == SAMPLE_LEVEL:
            client = int(line["client"])
            self._participations[client] = self._participations.get(client, 0) + 1
        else:
            self.user_events.append(line)

    def _epsilon(self, level: str, subject: int) -> float:
        state = self._charged.get((level, subject))
        return 0.0 if state is None else state.epsilon(self.delta)

    def user_epsilon(self) -> float:
        """The population's user-level epsilon (0.0 before any release)."""
        return self._epsilon(USER_LEVEL, POPULATION)

    def user_epsilon_of(self, client: int) -> float:
        """User-level epsilon of one client.

        With Poisson sampling every release covers every client (amplified): the
        population value. Without amplification only releases the client took part in
        count.
        """
        if any(e.get("sampling") == "poisson" for e in self.user_events):
            return self.user_epsilon()
        return self._epsilon(USER_LEVEL, int(client))

    def user_summary(self, population: int) -> dict[str, float]:
        """Min, median and max user-level epsilon over clients ``0..population-1``."""
        values = sorted(self.user_epsilon_of(c) for c in range(int(population)))
        if not values:
            raise PrivacyError(f"population must be >= 1, got {population!r}")
        return {
            "min": float(values[0]),
            "median": float(statistics.median(values)),
            "max": float(values[-1]),
        }

    def level_summary(self, population: int, level: str) -> dict[str, float]:
        """:meth:`summary` (``level="sample"``) or :meth:`user_summary` (``"user"``)."""
        if level == "user":
            return self.user_summary(population)
        if level == "sample":
            return self.summary(population)
        raise PrivacyError(f"level must be 'sample' or 'user', got {level!r}")

    def projected_user_epsilon(self, *, noise_multiplier: float, sample_rate: float) -> float:
        """Population user-level epsilon after one more release with these values."""
        entry = (float(noise_multiplier), float(sample_rate), 1)
        return self._projected(USER_LEVEL, POPULATION, entry)

    def flush(self) -> None:
        """Push written lines to disk (flush + fsync). Call once per round."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush and close the file; idempotent. Further records raise LedgerError."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading

    def epsilon_of(self, client: int) -> float:
        """Cumulative epsilon of ``client``; 0.0 for a client never recorded."""
        return self._epsilon(SAMPLE_LEVEL, client)

    def epsilons(self) -> dict[int, float]:
        """Cumulative epsilon of every recorded client, by client id (ascending)."""
        return {c: self._epsilon(SAMPLE_LEVEL, c) for c in sorted(self._participations)}

    def participations(self, client: int) -> int:
        """Number of lines recorded for ``client`` (failed and zero-step ones included)."""
        return self._participations.get(client, 0)

    def projected_epsilon(self, client: int, event: PrivacyEvent) -> float:
        """Epsilon ``client`` would have after ``event``, without recording it.

        Raises:
            PrivacyError: as :meth:`record` for an accountant that cannot compose it.
        """
        if not isinstance(event, PrivacyEvent):
            raise PrivacyError(f"event must be a PrivacyEvent, got {type(event).__name__}")
        return self._projected(SAMPLE_LEVEL, client, event.entry)

    def summary(self, population: int) -> dict[str, float]:
        """Min, median and max epsilon over all ``population`` clients.

        Clients never recorded count as 0.0.

        Args:
            population: Number of clients in the federation, >= number recorded and >= 1.

        Returns:
            ``{"min": ..., "median": ..., "max": ...}``.

        Raises:
            PrivacyError: ``population`` smaller than the number of recorded clients.
        """
        seen = len(self._participations)
        if not is_integral(population) or population < max(1, seen):
            raise PrivacyError(
                f"population must be an integer >= {max(1, seen)} (clients recorded), "
                f"got {population!r}"
            )
        values = list(self.epsilons().values()) + [0.0] * (int(population) - seen)
        return {
            "min": float(min(values)),
            "median": float(statistics.median(values)),
            "max": float(max(values)),
        }

    # -- resuming

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        delta: float | None = None,
        accountant: str | None = None,
    ) -> PrivacyLedger:
        """Rebuild a ledger from its file, recomposing every client's epsilon.

        The stored ``epsilon`` values are not trusted: every event is composed again
        (with ``delta`` / ``accountant``, which may differ from the file's to re-account
        it). Nothing is appended on load; later :meth:`record` calls append to ``path``.

        Args:
            path: A ledger file written by :class:`PrivacyLedger`.
            delta: Delta to report at; default: the one all sample-level lines carry.
            accountant: Accountant to compose with; default: the one the lines carry.

        Returns:
            The ledger, ready to record further rounds.

        Raises:
            LedgerError: a bad line (naming its number), or lines that disagree on the
                delta / accountant to infer.
            PrivacyError: a bad ``delta`` or ``accountant`` argument.
        """
        path = Path(path)
        lines = records.read_records(path)
        d = check_delta(delta) if delta is not None else _infer(lines, "delta", path)
        if accountant is not None:
            name = check_accountant(accountant)
        elif lines:
            name = _infer(lines, "accountant", path)
        else:
            name = "rdp"
        ledger = cls.__new__(cls)
        ledger._setup(path, delta=d, accountant=name)
        for line in lines:
            # Epsilons are computed lazily, once per subject.
            ledger._charge(line, epsilon=None, write=False)
        return ledger

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(path={str(self.path) if self.path else None!r}, "
            f"delta={self.delta}, accountant={self.accountant!r}, "
            f"clients={len(self._participations)})"
        )
