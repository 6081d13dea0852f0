"""The schema of ``privacy_ledger.jsonl`` lines: writer, reader and validator in one place.

The ledger writes lines with :func:`sample_line` / :func:`user_line` and
:func:`serialise`; the ledger's resume, the audit and the report read them with
:func:`read_records` / :func:`parse_line`. Nobody else spells the keys, levels or
statuses. The format (DESIGN.md, "Record formats")::

    {"round": 3, "client": 17, "level": "sample", "status": "trained",
     "noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 20,
     "max_grad_norm": 1.0, "delta": 1e-05, "accountant": "rdp", "epsilon": 2.31}

A line charges a set of subjects with one event: a sample-level line one client, a
user-level line (no ``client``; ``sampling``, ``clients_sampled``, ``clients``) the
population (Poisson client sampling) or the sampled clients (fixed-size sampling).
``epsilon`` is the charged subject's cumulative epsilon after the line; an infinite
epsilon is written as ``Infinity``, which Python's ``json`` reads back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsim.privacy._checks import check_int, is_real
from fedsim.privacy.accountants import check_accountant
from fedsim.privacy.errors import LedgerError, PrivacyError
from fedsim.privacy.events import EVENT_KEYS, PrivacyEvent

SAMPLE_LEVEL = "sample"
USER_LEVEL = "user"
LEVELS: tuple[str, ...] = (SAMPLE_LEVEL, USER_LEVEL)

# -- statuses: every name a line's "status" can hold

TRAINED = "trained"
#: Trained, then failed: the privacy was spent all the same.
FAILED = "failed"
#: Trained past the round deadline, update discarded, privacy spent all the same.
LATE = "late"
#: A line of a killed attempt of a round that a resume runs again. With fresh
#: (OS-entropy) noise that attempt's releases differ from the re-run's: it stays
#: composed like any other line (resume marks it instead of dropping it).
DISCARDED = "discarded"
#: A user-level (DP-FedAvg) release of the noised sum, written by the server.
RELEASED = "released"

#: Allowed ``status`` values of a sample-level line. Every status is composed.
STATUSES: tuple[str, ...] = (TRAINED, FAILED, LATE, DISCARDED)
#: Allowed ``status`` values of a user-level line. The server writes RELEASED (and a
#: resume DISCARDED); the others are accepted for hand-written ledgers.
USER_STATUSES: tuple[str, ...] = (RELEASED, TRAINED, FAILED, DISCARDED)

#: How clients were sampled for a user-level release.
USER_SAMPLINGS: tuple[str, ...] = ("poisson", "fixed")

#: Keys of a sample-level line, in the order they are written; extra keys follow.
LINE_KEYS: tuple[str, ...] = (
    "round",
    "client",
    "level",
    "status",
    *EVENT_KEYS,
    "accountant",
    "epsilon",
)
#: Keys a user-level line must carry: a sample-level line's without "client", plus how
#: the clients were sampled (then the optional ``clients`` list and extra keys).
USER_KEYS: tuple[str, ...] = (
    *(key for key in LINE_KEYS if key != "client"),
    "sampling",
    "clients_sampled",
)

# --------------------------------------------------------------------------- writing


def sample_line(
    *,
    round: int,  # shadows the builtin to match the field name
    client: int,
    status: str,
    event: Mapping[str, float | int],
    accountant: str,
    epsilon: float,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """A sample-level line: ``client``'s participation, in the written key order.

    ``event`` holds ``noise_multiplier``, ``sample_rate``, ``steps``,
    ``max_grad_norm`` and ``delta``.
    """
    return {
        "round": round,
        "client": client,
        "level": SAMPLE_LEVEL,
        "status": status,
        **_mechanism(event),
        "accountant": accountant,
        "epsilon": epsilon,
        **extra,
    }


def user_line(
    *,
    round: int,  # shadows the builtin to match the field name
    event: Mapping[str, float | int],
    accountant: str,
    epsilon: float,
    sampling: str,
    clients: Sequence[int],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """A user-level line: one release of the noised sum of ``clients``' updates."""
    return {
        "round": round,
        "level": USER_LEVEL,
        "status": RELEASED,
        **_mechanism(event),
        "accountant": accountant,
        "epsilon": epsilon,
        "sampling": sampling,
        "clients_sampled": len(clients),
        "clients": list(clients),
        **extra,
    }


def _mechanism(event: Mapping[str, float | int]) -> dict[str, float | int]:
    return {key: event[key] for key in EVENT_KEYS}


def serialise(line: Mapping[str, Any]) -> str:
    """The line as written: one JSON object and a newline.

    Raises:
        TypeError: a value JSON cannot serialise.
    """
    return json.dumps(line) + "\n"


# --------------------------------------------------------------------------- reading


def parse_line(
    text: str, *, path: Path | str, line_no: int, check_user: bool = False
) -> dict[str, Any]:
    """Parse and validate one ledger line.

    Args:
        text: The line.
        path, line_no: Where it is (named in errors).
        check_user: Validate user-level lines too (:func:`check_user_line`). The
            ledger's own resume keeps them as written; the audit checks them.

    Raises:
        LedgerError: naming ``path`` and ``line_no``.
    """
    path = Path(path)
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
    if level not in LEVELS:
        raise LedgerError(
            f"'level' must be {SAMPLE_LEVEL!r} or {USER_LEVEL!r}, got {level!r}",
            path=path,
            line_no=line_no,
        )
    if level == USER_LEVEL and not check_user:
        return record  # population-level release, written by the server; kept as is
    check = check_sample_line if level == SAMPLE_LEVEL else check_user_line
    try:
        check(record)
    except PrivacyError as err:
        raise LedgerError(str(err), path=path, line_no=line_no) from err
    return record


def read_numbered(
    path: Path | str, *, check_user: bool = False
) -> list[tuple[int, dict[str, Any]]]:
    """Every line of a ledger file with its 1-based number, validated (:func:`parse_line`).

    Nothing is skipped: a corrupt, truncated, empty or non-JSON line, a line with a
    missing field, a wrong type or an out-of-range value raises.

    Raises:
        LedgerError: naming the file and the line.
        OSError: the file cannot be opened.
    """
    path = Path(path)
    records = []
    # Binary, decoded per line: a torn write can leave bytes that are not UTF-8, and
    # that must be reported with its line number like any other corrupt line.
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise LedgerError("not UTF-8 text", path=path, line_no=line_no) from err
            records.append(
                (line_no, parse_line(text, path=path, line_no=line_no, check_user=check_user))
            )
    return records


def read_records(path: Path | str, *, check_user: bool = False) -> list[dict[str, Any]]:
    """Every line of a ledger file, validated, in file order (see :func:`read_numbered`)."""
    return [record for _, record in read_numbered(path, check_user=check_user)]


# --------------------------------------------------------------------------- validating


def check_event_fields(record: Mapping[str, Any]) -> None:
    """The mechanism fields of a line make a valid ``PrivacyEvent`` (its checks, one source).

    Raises:
        PrivacyError: naming the field.
    """
    PrivacyEvent.from_fields(record)


def _check_common(record: Mapping[str, Any], keys: Sequence[str], statuses: Sequence[str]) -> None:
    missing = [key for key in keys if key not in record]
    if missing:
        raise PrivacyError(f"missing required field(s) {missing}")
    check_int(record["round"], name="'round'")
    if record["status"] not in statuses:
        raise PrivacyError(f"'status' must be one of {tuple(statuses)}, got {record['status']!r}")
    check_accountant(record["accountant"])
    eps = record["epsilon"]
    if not is_real(eps) or math.isnan(eps) or eps < 0:
        raise PrivacyError(f"'epsilon' must be a number >= 0, got {eps!r}")


def _require_keys(record: Mapping[str, Any], keys: Iterable[str], message: str) -> None:
    """PrivacyError `message` followed by the keys of `keys` that `record` lacks, if any."""
    missing = [key for key in keys if key not in record]
    if missing:
        raise PrivacyError(f"{message} {missing}")


def check_sample_line(record: Mapping[str, Any]) -> None:
    """Validate a sample-level line's fields.

    Raises:
        PrivacyError: a missing field, a wrong type or an out-of-range value.
    """
    _require_keys(record, LINE_KEYS, "missing required field(s)")
    check_int(record["round"], name="'round'")
    check_int(record["client"], name="'client'")
    _check_common(record, LINE_KEYS, STATUSES)
    check_event_fields(record)


def _int_at_least_zero(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_user_line(record: Mapping[str, Any]) -> None:
    """Validate a user-level line as strictly as :func:`check_sample_line` a sample line.

    Raises:
        PrivacyError: a missing field, a wrong type or an out-of-range value.
    """
    _require_keys(record, USER_KEYS, "user-level line misses required field(s)")
    if not _int_at_least_zero(record["round"]):
        raise PrivacyError(f"'round' must be an integer >= 0, got {record['round']!r}")
    _check_common(record, USER_KEYS, USER_STATUSES)
    if record["sampling"] not in USER_SAMPLINGS:
        raise PrivacyError(
            f"'sampling' must be one of {USER_SAMPLINGS}, got {record['sampling']!r}"
        )
    if not _int_at_least_zero(record["clients_sampled"]):
        raise PrivacyError(
            f"'clients_sampled' must be an integer >= 0, got {record['clients_sampled']!r}"
        )
    clients = record.get("clients")  # optional: the ids that took part (fixed needs them)
    if clients is not None and (
        not isinstance(clients, list) or not all(_int_at_least_zero(c) for c in clients)
    ):
        raise PrivacyError(f"'clients' must be a list of client ids >= 0, got {clients!r}")
    check_event_fields(record)


#: Level -> validator of its lines.
VALIDATORS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    SAMPLE_LEVEL: check_sample_line,
    USER_LEVEL: check_user_line,
}
