"""Shakespeare: parsing the plays into roles and the windowed next-character dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.data import DataError, load_shakespeare, partition_indices
from fedsim.data.shakespeare import UNKNOWN_INDEX, VOCAB, decode, encode
from fedsim.data.shakespeare_text import parse_all_plays, parse_play, play_files


@pytest.fixture(scope="module")
def roles():
    return {f"{r.play}/{r.name}": r for r in parse_all_plays()}


@pytest.fixture(scope="module")
def bundle():
    return load_shakespeare(seed=0)


@pytest.fixture(scope="module")
def uncapped():
    return load_shakespeare(seed=0, max_samples_per_role=None)


def test_parse_is_cached() -> None:
    # How fast the parse is belongs in a benchmark (a shared machine makes a timed
    # unit test flaky); what a user relies on is that it happens once per process.
    parse_all_plays.cache_clear()
    first = parse_all_plays()
    assert parse_all_plays() is first
    assert parse_all_plays.cache_info().hits == 1


POEMS = {
    "sonnets",
    "lovers_complaint",
    "passionate_pilgrim",
    "phoenix_and_the_turtle",
    "rape_of_lucrece",
}


def test_only_modern_editions_are_read() -> None:
    stems = [p.name.removesuffix("_gut.txt") for p in play_files()]
    assert len(stems) == 42  # 37 plays + 5 poems
    assert not any(s.endswith("_f") for s in stems)  # First Folio duplicates skipped
    assert {r.play for r in parse_all_plays()} == set(stems) - POEMS


def test_known_roles_and_their_words(roles) -> None:
    # Hamlet abbreviates speakers ("Ham."); they are expanded from the list of persons.
    hamlet = roles["hamlet/HAMLET"].text
    assert hamlet.startswith("A little more than kin, and less than kind!\n")
    assert "To be, or not to be" in hamlet
    assert "ROSENCRANTZ AND GUILDENSTERN" in {k.split("/")[1] for k in roles if "hamlet/" in k}
    assert "O Romeo, Romeo! wherefore art thou Romeo?" in roles["romeo_and_juliet/JULIET"].text
    assert "Out, damned spot!" in roles["macbeth/LADY MACBETH"].text
    assert roles["henry_v/CHORUS"].text.startswith("O for a Muse of fire")
    # Stage directions are gone and speaker lines are not part of the speech.
    assert "[" not in hamlet and "Exit" not in hamlet and "\nHam.\n" not in hamlet


def test_parse_play_on_a_small_text() -> None:
    raw = (
        "A PLAY\n\nby Somebody\n\nPERSONS REPRESENTED.\n\nHamlet, a prince.\nHoratio, friend.\n\n"
        "ACT I.\n\nScene I. A room.\n\n[Enter Hamlet and Horatio.]\n\nHam.\nFirst   line,\n"
        "second line. [Aside.]\n\nHor.\nReply.\n\n[Exit.]\n\nStill Horatio.\n\nHam.\nAgain.\n"
        "HOR. Inline speaker tag.\n\nHor.\nBye.\n"
    )
    parsed = {r.name: r.text for r in parse_play(raw, "toy")}
    assert parsed == {
        "HAMLET": "First line,\nsecond line.\nAgain.\n",
        "HORATIO": "Reply.\nStill Horatio.\nInline speaker tag.\nBye.\n",
    }


def test_no_speakers_in_a_poem() -> None:
    assert parse_play("SONNETS\n\nFrom fairest creatures we desire increase,\n", "poem") == []


def test_default_bundle_numbers(bundle) -> None:
    info = bundle.info
    assert info["clients"] == 1048
    assert info["plays"] == 37
    assert info["vocab_size"] == 80 and bundle.num_classes == 80
    assert bundle.input_shape == (80,)
    assert info["train_samples"] == len(bundle.train) > 1_000_000
    assert info["test_samples"] == len(bundle.test) > 250_000
    counts = np.bincount(bundle.train.groups) + np.bincount(bundle.test.groups)
    assert counts.max() == 2000 and counts.min() >= 100


def test_uncapped_numbers(uncapped) -> None:
    assert uncapped.info["clients"] == 1048  # the cap changes sizes, not which roles are kept
    total = len(uncapped.train) + len(uncapped.test)
    assert total > 4_000_000
    # Each role contributes len(text) - seq_len windows.
    assert total == uncapped.info["text_chars"] - 80 * uncapped.info["clients"]
    everyone = load_shakespeare(seed=0, max_samples_per_role=None, min_samples=2)
    assert everyone.info["clients"] > 1100


def test_groups_contiguous_and_in_both_splits(bundle) -> None:
    r = bundle.info["clients"]
    assert np.array_equal(np.unique(bundle.train.groups), np.arange(r))
    assert np.array_equal(np.unique(bundle.test.groups), np.arange(r))
    assert len(bundle.train.group_names) == r
    assert "hamlet/HAMLET" in bundle.train.group_names


def test_batch_shapes_and_labels(bundle) -> None:
    x, y = bundle.train.batch(np.array([0, 10, 500_000]))
    assert x.shape == (3, 80) and x.dtype == torch.int64
    assert y.shape == (3,) and y.dtype == torch.int64
    assert int(x.max()) < 80 and int(x.min()) >= 0
    assert np.array_equal(bundle.train.labels[[0, 10, 500_000]], y.numpy())


def test_windows_decode_to_the_roles_text_and_y_is_next_char(bundle, roles) -> None:
    train = bundle.train
    hamlet_id = train.group_names.index("hamlet/HAMLET")
    first = int(np.flatnonzero(train.groups == hamlet_id)[0])
    x, y = train.batch([first])
    text = roles["hamlet/HAMLET"].text
    assert decode(x[0]) == text[:80]
    assert decode(y) == text[80]
    # Random windows of every split: x + y is a piece of that same role's text.
    rng = np.random.default_rng(0)
    for split in (bundle.train, bundle.test):
        picks = rng.choice(len(split), 300, replace=False)
        xs, ys = split.batch(picks)
        for i, pick in enumerate(picks):
            role = roles[split.group_names[split.groups[pick]]]
            assert decode(xs[i]) + decode(ys[i : i + 1]) in role.text


def test_no_window_crosses_roles(uncapped, roles) -> None:
    # The last window of every role (its test split's end) still lies inside the role: its
    # label is the role's final newline.
    test = uncapped.test
    last = np.flatnonzero(np.diff(np.append(test.groups, -1)) != 0)
    xs, ys = test.batch(last)
    for i, idx in enumerate(last):
        text = roles[test.group_names[test.groups[idx]]].text
        assert decode(xs[i]) + decode(ys[i : i + 1]) == text[-81:]


def test_train_and_test_disjoint_and_positional(bundle) -> None:
    train, test = bundle.train, bundle.test
    assert train.text is test.text  # one stored copy of the text
    # Starts are increasing in each split, so a binary search finds any shared window.
    assert np.all(np.diff(train.starts) > 0) and np.all(np.diff(test.starts) > 0)
    pos = np.minimum(np.searchsorted(train.starts, test.starts), len(train) - 1)
    assert not np.any(train.starts[pos] == test.starts)
    for g in (0, 100, 1047):
        tr = train.starts[train.groups == g]
        te = test.starts[test.groups == g]
        assert tr.max() < te.min()  # test windows come after train windows in the role's text
        assert 0.15 < te.size / (tr.size + te.size) < 0.25


def test_max_roles_keeps_the_largest() -> None:
    top = load_shakespeare(seed=0, max_roles=5)
    assert top.info["clients"] == 5
    assert "hamlet/HAMLET" in top.train.group_names
    assert "othello/IAGO" in top.train.group_names


def test_seq_len_option() -> None:
    short = load_shakespeare(seed=0, seq_len=10, max_roles=3)
    x, _ = short.train.batch([0])
    assert x.shape == (1, 10) and short.input_shape == (10,)


def test_vocab_is_leafs() -> None:
    assert len(VOCAB) == 80 and VOCAB[0] == "\n" and VOCAB[-1] == "}"
    assert decode(encode("To be, or not")) == "To be, or not"
    assert encode("_@é").tolist() == [UNKNOWN_INDEX] * 3 == [79] * 3


def test_natural_partition_gives_roles(bundle) -> None:
    parts = partition_indices(bundle.train, method="natural", num_clients=1048, seed=0)
    hamlet_id = bundle.train.group_names.index("hamlet/HAMLET")
    assert parts[hamlet_id].size == 1600  # capped at 2000 windows, 80% train


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"seq_len": 0}, "seq_len must be >= 1, got 0"),
        ({"test_fraction": 1.0}, "test_fraction < 1, got 1.0"),
        ({"min_samples": 1}, "min_samples must be >= 2, got 1"),
        ({"max_samples_per_role": 1}, "max_samples_per_role must be >= 2, got 1"),
        ({"max_roles": 0}, "max_roles must be >= 1, got 0"),
        ({"min_samples": 10**7}, "no role has min_samples=10000000"),
    ],
)
def test_bad_arguments_named(kwargs, needle) -> None:
    with pytest.raises(DataError) as err:
        load_shakespeare(seed=0, **kwargs)
    assert needle in str(err.value)
