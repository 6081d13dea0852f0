"""FEMNIST from LEAF JSON files written here (two writers), natural partition by writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsim.data import DataError, load_dataset, partition_indices
from fedsim.data.femnist import load_femnist


def _user(n: int, first_label: int) -> dict[str, list]:
    x = [[(i + j) % 7 / 7.0 for j in range(784)] for i in range(n)]
    return {"x": x, "y": [(first_label + i) % 62 for i in range(n)]}


def _leaf(users: dict[str, dict[str, list]]) -> dict:
    return {
        "users": list(users),
        "num_samples": [len(u["y"]) for u in users.values()],
        "user_data": users,
    }


def _write_leaf(root: Path) -> None:
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
    train = {"f0001_40": _user(3, 61), "f0000_14": _user(2, 10)}
    (root / "train" / "all_data_0_niid_train.json").write_text(json.dumps(_leaf(train)))
    test = {"f0000_14": _user(1, 5), "f0001_40": _user(1, 36)}
    (root / "test" / "all_data_0_niid_test.json").write_text(json.dumps(_leaf(test)))


def test_loads_writers_as_groups(tmp_path: Path) -> None:
    _write_leaf(tmp_path)
    bundle = load_femnist(seed=0, root=str(tmp_path))
    assert bundle.num_classes == 62 and bundle.input_shape == (1, 28, 28)
    assert len(bundle.train) == 5 and len(bundle.test) == 2
    train = bundle.train
    assert train.group_names == ("f0000_14", "f0001_40")  # sorted writer names, both splits
    # Writer f0000_14 (id 0) has labels 10, 11; f0001_40 (id 1) has 61, 0, 1.
    by_writer = {g: sorted(train.labels[train.groups == g].tolist()) for g in (0, 1)}
    assert by_writer == {0: [10, 11], 1: [0, 1, 61]}
    assert sorted(bundle.test.groups.tolist()) == [0, 1]
    x, _ = train.batch(np.flatnonzero(train.groups == 0)[:1])
    assert tuple(x.shape) == (1, 1, 28, 28)
    np.testing.assert_allclose(x[0, 0, 0, :3].numpy(), [0.0, 1 / 7, 2 / 7], rtol=1e-6)
    parts = partition_indices(train, method="natural", num_clients=2, seed=0)
    assert [p.size for p in parts] == [2, 3]


def test_registry(tmp_path: Path) -> None:
    _write_leaf(tmp_path)
    assert load_dataset("femnist", seed=0, root=str(tmp_path)).info["writers"] == 2


def test_missing_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="give root"):
        load_femnist(seed=0)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"missing directory .*test"):
        load_femnist(seed=0, root=str(tmp_path))
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"no \*\.json files in .*train"):
        load_femnist(seed=0, root=str(tmp_path))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("user_data"), "not a LEAF file"),
        (lambda d: d["user_data"]["w"]["x"][0].pop(), "must hold 784 pixel values|malformed"),
        (lambda d: d["user_data"]["w"]["y"].append(3), "2 images but 3 labels"),
        (
            lambda d: d["user_data"]["w"]["y"].__setitem__(0, 62),
            r"labels must be integers in 0..61",
        ),
        (lambda d: d["num_samples"].__setitem__(0, 5), "num_samples says 5"),
        (lambda d: d.update(users=["ghost"]), "'ghost' is listed in 'users' but has no"),
        (lambda d: d["users"].append("ghost"), "'num_samples' must list one count per user"),
    ],
)
def test_malformed_file_names_file_and_writer(tmp_path: Path, mutate, message: str) -> None:
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
    doc = _leaf({"w": _user(2, 0)})
    mutate(doc)
    bad = tmp_path / "train" / "bad.json"
    bad.write_text(json.dumps(doc))
    (tmp_path / "test" / "ok.json").write_text(json.dumps(_leaf({"w": _user(1, 0)})))
    with pytest.raises(DataError, match=message) as err:
        load_femnist(seed=0, root=str(tmp_path))
    assert "bad.json" in str(err.value)


def test_invalid_json(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
    (tmp_path / "train" / "cut.json").write_text('{"users": ["a"], "user_da')
    with pytest.raises(DataError, match=r"cut.json is not valid JSON"):
        load_femnist(seed=0, root=str(tmp_path))
