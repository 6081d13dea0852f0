"""Shakespeare next-character prediction, one client per speaking role, built like LEAF.

Built like LEAF's Shakespeare: the plays are the 37 modern-spelling ``*_gut.txt`` files of the
installed `shakespeare` package (the ``*_gut_f.txt`` First Folio files are the same plays in
old spelling and are skipped; the five poems have no speakers). A role is one speaker in one
play; its text is its lines in order, one per line (see `fedsim.data.shakespeare_text`).
A sample is a window of `seq_len` characters of one role's text, and its label is the next
character; windows start at every position (stride 1) and never cross into another role.
Each role's windows are split by position: the first ``1 - test_fraction`` train, the rest
test, so test text follows train text as in LEAF.

Characters are ids into LEAF's 80-character vocabulary `VOCAB`; characters outside it map to
id 79 (``"}"``), where LEAF's ``find() == -1`` lands.

Samples are stored as start offsets into one uint8 tensor holding every kept role's text
once; ``batch`` gathers the windows.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedsim.data._checks import check_fraction, check_int, check_optional_int
from fedsim.data.base import DatasetBundle, TextWindowDataset
from fedsim.data.errors import DataError
from fedsim.data.shakespeare_text import parse_all_plays

# LEAF's character set (models/utils/language_utils.py, ALL_LETTERS), in LEAF's order, so ids
# match models and results built on LEAF.
VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
# LEAF encodes with ALL_LETTERS.find(c), which gives -1 for a character outside the set; used as an
# index that is the last entry, "}". We map unknown characters there explicitly. In the parsed
# plays this only affects a handful of "_", "@", "*" and "/" characters.
UNKNOWN_INDEX = len(VOCAB) - 1


def _lookup_table() -> np.ndarray:
    table = np.full(256, UNKNOWN_INDEX, dtype=np.uint8)
    for i, ch in enumerate(VOCAB):
        table[ord(ch)] = i
    return table


_LOOKUP = _lookup_table()


def encode(text: str) -> np.ndarray:
    """Map characters to LEAF vocabulary ids (unknown characters -> `UNKNOWN_INDEX`).

    Args:
        text: any string.

    Returns:
        uint8 array of ids, one per character.
    """
    # UTF-32 gives one fixed-width code point per character, so lengths are preserved.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < 256, _LOOKUP[codes & 0xFF], UNKNOWN_INDEX).astype(np.uint8)


def decode(ids: np.ndarray | torch.Tensor) -> str:
    """Map vocabulary ids back to characters (the inverse of `encode` on known characters)."""
    return "".join(VOCAB[int(i)] for i in np.asarray(ids).reshape(-1))


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Encode every parsed role once: (ids, offsets, lengths, role names, play ids)."""
    roles = parse_all_plays()
    lengths = np.array([len(r.text) for r in roles], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    ids = encode("".join(r.text for r in roles))
    ids.flags.writeable = False
    names = tuple(f"{r.play}/{r.name}" for r in roles)
    plays = tuple(r.play for r in roles)
    return ids, offsets, lengths, names, plays


def _window_positions(n_windows: int, cap: int | None) -> np.ndarray:
    """Positions of the windows kept for one role: all, or `cap` evenly spaced ones.

    Evenly spaced (rather than the first `cap`) keeps a capped role's windows spread over its whole
    text, so its positional train/test split still tests on its last speeches.
    """
    if cap is None or n_windows <= cap:
        return np.arange(n_windows, dtype=np.int64)
    # Spacing is >= 1 because n_windows > cap, so rounding cannot produce duplicates.
    return np.rint(np.linspace(0, n_windows - 1, cap)).astype(np.int64)


def _kept_roles(
    n_windows: np.ndarray, *, min_samples: int, max_roles: int | None, seq_len: int
) -> np.ndarray:
    """Indices of the roles kept, in play order: at least `min_samples` windows each, and
    only the `max_roles` with the most windows when that is given."""
    keep = np.flatnonzero(n_windows >= min_samples)
    if keep.size == 0:
        raise DataError(
            f"no role has min_samples={min_samples} windows of seq_len={seq_len}; "
            f"the largest has {int(n_windows.max())}"
        )
    if max_roles is not None and keep.size > max_roles:
        # Largest first, ties by order; then back to play order so group ids stay readable.
        largest = keep[np.argsort(-n_windows[keep], kind="stable")[:max_roles]]
        keep = np.sort(largest)
    return keep


def _role_datasets(
    corpus: tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]],
    n_windows: np.ndarray,
    keep: np.ndarray,
    seq_len: int,
    cap: int | None,
    test_fraction: float,
) -> tuple[TextWindowDataset, TextWindowDataset, int]:
    """Train and test windows of the kept roles, and the length of their text.

    `corpus` is (ids, offsets, lengths, names) of every role. The kept roles' texts are
    laid end to end in one tensor; each role's windows are split by position, its last
    `test_fraction` going to test."""
    ids, offsets, lengths, names = corpus
    pieces: list[np.ndarray] = []
    train_starts: list[np.ndarray] = []
    test_starts: list[np.ndarray] = []
    train_groups: list[np.ndarray] = []
    test_groups: list[np.ndarray] = []
    base = 0
    for group, r in enumerate(keep):
        pieces.append(ids[offsets[r] : offsets[r] + lengths[r]])
        pos = _window_positions(int(n_windows[r]), cap)
        n_test = min(max(1, round(len(pos) * test_fraction)), len(pos) - 1)
        n_train = len(pos) - n_test
        train_starts.append(base + pos[:n_train])
        test_starts.append(base + pos[n_train:])
        train_groups.append(np.full(n_train, group, dtype=np.int64))
        test_groups.append(np.full(n_test, group, dtype=np.int64))
        base += int(lengths[r])
    text = torch.from_numpy(np.concatenate(pieces))  # fresh array: one copy, owned by the bundle
    group_names = tuple(names[r] for r in keep)
    train = TextWindowDataset(
        text,
        np.concatenate(train_starts),
        seq_len,
        np.concatenate(train_groups),
        group_names=group_names,
    )
    test = TextWindowDataset(
        text,
        np.concatenate(test_starts),
        seq_len,
        np.concatenate(test_groups),
        group_names=group_names,
    )
    return train, test, int(text.shape[0])


def load_shakespeare(
    *,
    seed: int,
    seq_len: int = 80,
    test_fraction: float = 0.2,
    min_samples: int = 100,
    max_samples_per_role: int | None = 2000,
    max_roles: int | None = None,
) -> DatasetBundle:
    """Load the Shakespeare next-character task with one natural client per speaking role.

    How roles, windows and the vocabulary are built: see the module docstring.

    Args:
        seed: accepted for a uniform loader interface; the dataset is deterministic (role
            selection by `max_roles` keeps the largest roles, not a random subset).
        seq_len: characters per input window (LEAF uses 80).
        test_fraction: share of each role's windows, taken from the end of its text, for test.
        min_samples: roles with fewer windows than this (before capping) are dropped.
        max_samples_per_role: keep at most this many evenly spaced windows per role (None: all).
            The cap bounds the largest clients (HAMLET alone has ~64,000 windows).
        max_roles: keep only the this many roles with the most windows (None: all).

    Returns:
        A `DatasetBundle` with ``num_classes == 80`` and ``input_shape == (seq_len,)``. ``groups``
        is the role id, 0..R-1 in play order then order of first speech; ``group_names[g]`` is
        ``"<play>/<ROLE>"`` (e.g. ``"hamlet/HAMLET"``). Both splits contain every role.

    Raises:
        DataError: on an out-of-range argument, if the texts are missing, or if no role is left.
    """
    check_int("seed", seed, minimum=0)
    seq_len = check_int("seq_len", seq_len, minimum=1)
    test_fraction = check_fraction("test_fraction", test_fraction)
    # Two windows is the least that can be split into a train and a test part.
    min_samples = check_int("min_samples", min_samples, minimum=2)
    cap = check_optional_int("max_samples_per_role", max_samples_per_role, minimum=2)
    max_roles = check_optional_int("max_roles", max_roles, minimum=1)
    ids, offsets, lengths, names, plays = _corpus()
    n_windows = np.maximum(lengths - seq_len, 0)
    keep = _kept_roles(n_windows, min_samples=min_samples, max_roles=max_roles, seq_len=seq_len)
    train, test, text_chars = _role_datasets(
        (ids, offsets, lengths, names), n_windows, keep, seq_len, cap, test_fraction
    )
    return DatasetBundle(
        name="shakespeare",
        train=train,
        test=test,
        num_classes=len(VOCAB),
        input_shape=(seq_len,),
        info={
            "clients": int(keep.size),
            "plays": len({plays[r] for r in keep}),
            "train_samples": len(train),
            "test_samples": len(test),
            "vocab_size": len(VOCAB),
            "seq_len": seq_len,
            "text_chars": text_chars,
        },
    )
