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

import json
import math
import os
import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np

from fedsim.privacy._checks import (
    check_delta,
    check_int,
    check_noise_multiplier,
    check_positive,
    check_sample_rate,
    check_steps,
    is_integral,
    is_real,
)
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

__all__ = [
    "DISCARDED",
    "LINE_KEYS",
    "STATUSES",
    "LedgerError",
    "PrivacyEvent",
    "PrivacyLedger",
    "parse_ledger_line",
    "read_ledger",
]

SAMPLE_LEVEL = "sample"
USER_LEVEL = "user"

#: A line of a killed attempt of a round that a resume runs again. With fresh
#: (OS-entropy) noise that attempt's releases differ from the re-run's: it stays
#: composed like any other line (resume marks it instead of dropping it).
DISCARDED = "discarded"

#: Allowed ``status`` values. A client that trained and then failed still spent privacy.
#: "late": trained past the round deadline, update discarded, privacy spent all the same.
#: Every status is composed; DISCARDED is also allowed on user-level lines.
STATUSES: tuple[str, ...] = ("trained", "failed", "late", DISCARDED)

#: How clients were sampled for a user-level release.
USER_SAMPLINGS: tuple[str, ...] = ("poisson", "fixed")

#: Keys of a sample-level line, in the order they are written; extra keys follow.
LINE_KEYS: tuple[str, ...] = (
    "round",
    "client",
    "level",
    "status",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "max_grad_norm",
    "delta",
    "accountant",
    "epsilon",
)


@dataclass(frozen=True)
class PrivacyEvent:
    """A client's report of one participation: what its DP-SGD run spent.

    Attributes:
        noise_multiplier: Noise standard deviation / clipping norm, >= 0.
        sample_rate: Poisson sampling probability (batch size / shard size), in (0, 1].
        steps: Optimiser steps taken, >= 0.
        max_grad_norm: Per-example clipping norm, > 0 (recorded, not used in epsilon).
        delta: The delta the client was configured with, in (0, 1).

    Raises:
        PrivacyError: a field out of range (on construction).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float

    def __post_init__(self) -> None:
        # Normalise numpy scalars and ints to float/int so lines serialise identically.
        object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier))
        object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate))
        object.__setattr__(self, "steps", check_steps(self.steps))
        object.__setattr__(
            self, "max_grad_norm", check_positive(self.max_grad_norm, name="max_grad_norm")
        )
        object.__setattr__(self, "delta", check_delta(self.delta))

    @property
    def entry(self) -> HistoryEntry:
        """``(noise_multiplier, sample_rate, steps)``, the opacus history format."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


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


def _parse_line(text: str, *, path: Path, line_no: int) -> dict[str, Any]:
    """Parse and validate one ledger line.

    Raises:
        LedgerError: naming ``path`` and ``line_no``.
    """
    if not text.strip():
        raise LedgerError("empty line", path=path, line_no=line_no)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise LedgerError(
            f"not valid JSON (truncated or corrupt line?): {err.msg} at column {err.colno}",
            path=path,
            line_no=line_no,
        ) from err
    if not isinstance(record, dict):
        raise LedgerError(
            f"expected a JSON object, got {type(record).__name__}", path=path, line_no=line_no
        )
    level = record.get("level")
    if level == USER_LEVEL:
        return record  # population-level release, written by the server; kept as is
    if level != SAMPLE_LEVEL:
        raise LedgerError(
            f"'level' must be {SAMPLE_LEVEL!r} or {USER_LEVEL!r}, got {level!r}",
            path=path,
            line_no=line_no,
        )
    missing = [key for key in LINE_KEYS if key not in record]
    if missing:
        raise LedgerError(f"missing required field(s) {missing}", path=path, line_no=line_no)
    try:
        check_int(record["round"], name="'round'")
        check_int(record["client"], name="'client'")
        if record["status"] not in STATUSES:
            raise PrivacyError(f"'status' must be one of {STATUSES}, got {record['status']!r}")
        check_accountant(record["accountant"])
        eps = record["epsilon"]
        if not is_real(eps) or math.isnan(eps) or eps < 0:
            raise PrivacyError(f"'epsilon' must be a number >= 0, got {eps!r}")
        _event_of(record)
    except PrivacyError as err:
        raise LedgerError(str(err), path=path, line_no=line_no) from err
    return record


def parse_ledger_line(text: str, *, path: Path | str, line_no: int) -> dict[str, Any]:
    """Parse and validate one ledger line as :func:`read_ledger` does.

    Raises:
        LedgerError: naming ``path`` and ``line_no``.
    """
    return _parse_line(text, path=Path(path), line_no=line_no)


def _event_of(record: Mapping[str, Any]) -> PrivacyEvent:
    return PrivacyEvent(
        noise_multiplier=record["noise_multiplier"],
        sample_rate=record["sample_rate"],
        steps=record["steps"],
        max_grad_norm=record["max_grad_norm"],
        delta=record["delta"],
    )


def _read_numbered(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    # Binary, decoded per line: a torn write can leave bytes that are not UTF-8, and
    # that must be reported with its line number like any other corrupt line.
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise LedgerError("not UTF-8 text", path=path, line_no=line_no) from err
            records.append((line_no, _parse_line(text, path=path, line_no=line_no)))
    return records


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
    return [record for _, record in _read_numbered(Path(path))]


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
        self._clients: dict[int, _Composition] = {}
        self._participations: dict[int, int] = {}
        #: User-level lines (population-level DP-FedAvg releases), in order.
        self.user_events: list[dict[str, Any]] = []
        self._user: _Composition = self._new_composition()
        self._user_clients: dict[int, _Composition] = {}
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

        state = self._clients.get(client_id)
        if state is None:
            state = self._new_composition()
        eps = state.projected(event.entry, self.delta)
        line = {
            "round": round_,
            "client": client_id,
            "level": SAMPLE_LEVEL,
            "status": status,
            "noise_multiplier": event.noise_multiplier,
            "sample_rate": event.sample_rate,
            "steps": event.steps,
            "max_grad_norm": event.max_grad_norm,
            "delta": event.delta,
            "accountant": self.accountant,
            "epsilon": eps,
            **extra,
        }
        text = json.dumps(line) + "\n"  # before any state change: may raise TypeError
        if self.path is not None:
            # Written before the state changes: if the write fails, memory matches the file.
            self._open().write(text)
        state.add(event.entry, epsilon=eps)
        self._clients[client_id] = state
        self._participations[client_id] = self._participations.get(client_id, 0) + 1
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
        ids = sorted(int(c) for c in clients)
        eps = self._user.projected(event.entry, self.delta)
        line = {
            "round": check_int(round, name="round"),
            "level": USER_LEVEL,
            "status": "released",
            "noise_multiplier": event.noise_multiplier,
            "sample_rate": event.sample_rate,
            "steps": 1,
            "max_grad_norm": event.max_grad_norm,
            "delta": self.delta,
            "accountant": self.accountant,
            "epsilon": eps,
            "sampling": sampling,
            "clients_sampled": len(ids),
            "clients": ids,
            **extra,
        }
        text = json.dumps(line) + "\n"
        if self.path is not None:
            self._open().write(text)
        self._add_user(line)
        return eps

    def _add_user(self, line: dict[str, Any]) -> None:
        entry = (float(line["noise_multiplier"]), float(line["sample_rate"]), 1)
        self._user.add(entry)
        self.user_events.append(line)
        if line.get("sampling") == "fixed":
            for c in line.get("clients", []):
                state = self._user_clients.get(int(c))
                if state is None:
                    state = self._user_clients[int(c)] = self._new_composition()
                state.add(entry)

    def user_epsilon(self) -> float:
        """The population's user-level epsilon (0.0 before any release)."""
        return self._user.epsilon(self.delta) if self.user_events else 0.0

    def user_epsilon_of(self, client: int) -> float:
        """User-level epsilon of one client.

        With Poisson sampling every release covers every client (amplified): the
        population value. Without amplification only releases the client took part in
        count.
        """
        if any(e.get("sampling") == "poisson" for e in self.user_events):
            return self.user_epsilon()
        state = self._user_clients.get(client)
        return 0.0 if state is None else state.epsilon(self.delta)

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
        return self._user.projected((float(noise_multiplier), float(sample_rate), 1), self.delta)

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
        state = self._clients.get(client)
        return 0.0 if state is None else state.epsilon(self.delta)

    def epsilons(self) -> dict[int, float]:
        """Cumulative epsilon of every recorded client, by client id (ascending)."""
        return {c: self._clients[c].epsilon(self.delta) for c in sorted(self._clients)}

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
        state = self._clients.get(client)
        if state is None:
            state = self._new_composition()
        return state.projected(event.entry, self.delta)

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
        seen = len(self._clients)
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
        numbered = _read_numbered(path)
        records = [r for _, r in numbered]
        d = check_delta(delta) if delta is not None else _infer(records, "delta", path)
        if accountant is not None:
            name = check_accountant(accountant)
        elif records:
            name = _infer(records, "accountant", path)
        else:
            name = "rdp"
        ledger = cls.__new__(cls)
        ledger._setup(path, delta=d, accountant=name)
        for _, record in numbered:
            if record["level"] == USER_LEVEL:
                ledger._add_user(record)
                continue
            client = int(record["client"])
            state = ledger._clients.get(client)
            if state is None:
                state = ledger._clients[client] = ledger._new_composition()
            state.add(_event_of(record).entry)  # epsilon computed lazily, once per client
            ledger._participations[client] = ledger._participations.get(client, 0) + 1
        return ledger

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(path={str(self.path) if self.path else None!r}, "
            f"delta={self.delta}, accountant={self.accountant!r}, clients={len(self._clients)})"
        )
