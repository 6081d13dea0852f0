"""Hugging Face datasets: a tiny save_to_disk fixture and a simulated offline failure.

No test touches the network: the online route is exercised with FederatedDataset patched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsim.data import DataError, from_hf_dataset, load_dataset, load_hub

datasets = pytest.importorskip("datasets")


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def _grey(n: int, seed: int = 0):
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcd"))}
    )
    return datasets.Dataset.from_dict(
        {"image": _images(n, (6, 5), seed), "label": [i % 3 for i in range(n)]}, features=features
    )


def test_from_hf_dataset_greyscale_images() -> None:
    ds = _grey(4)
    out = from_hf_dataset(ds, "image", "label")
    x, y = out.batch(np.arange(4))
    assert tuple(x.shape) == (4, 1, 6, 5) and y.tolist() == [0, 1, 2, 0]
    expected = np.asarray(ds[0]["image"], dtype=np.float32) / 255.0
    np.testing.assert_allclose(x[0, 0].numpy(), expected, rtol=1e-6)


def test_from_hf_dataset_rgb_string_labels_and_groups() -> None:
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine": datasets.Value("string"),
            "writer": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "img": _images(3, (4, 4, 3)),  # 4x4 RGB: only the feature type says it is HWC
            "fine": ["dog", "cat", "dog"],
            "writer": ["w9", "w1", "w9"],
        },
        features=features,
    )
    out = from_hf_dataset(ds, "img", "fine", "writer")
    x, y = out.batch([0, 1, 2])
    assert tuple(x.shape) == (3, 3, 4, 4)  # HWC -> CHW
    np.testing.assert_allclose(
        x[0, 2].numpy(), np.asarray(ds[0]["img"])[:, :, 2] / 255.0, rtol=1e-6
    )
    assert y.tolist() == [1, 0, 1]  # sorted vocabulary: cat=0, dog=1
    assert out.groups.tolist() == [1, 0, 1] and out.group_names == ("w1", "w9")
    with pytest.raises(DataError, match="'fine': value 'dog' is not in the vocabulary"):
        from_hf_dataset(ds, "img", "fine", label_vocab=["cat"])


def test_from_hf_dataset_feature_vectors_and_errors() -> None:
    ds = datasets.Dataset.from_dict({"x": [[0.5, 1.0], [2.0, 3.0]], "y": [1, 0]})
    out = from_hf_dataset(ds, "x", "y")
    assert tuple(out.batch([0])[0].shape) == (1, 2)
    chw = datasets.Dataset.from_dict({"x": np.zeros((2, 3, 8, 8), np.float32), "y": [0, 1]})
    assert tuple(from_hf_dataset(chw, "x", "y").batch([0])[0].shape) == (1, 3, 8, 8)
    with pytest.raises(DataError, match="no column 'image'; columns: x, y"):
        from_hf_dataset(ds, "image", "y")
    ragged = datasets.Dataset.from_dict(
        {"image": _images(1, (4, 4)) + _images(1, (5, 5)), "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    with pytest.raises(DataError, match="different shapes"):
        from_hf_dataset(ragged, "image", "label")


def test_load_hub_from_save_to_disk(tmp_path: Path) -> None:
    root = tmp_path / "tiny_hf"
    datasets.DatasetDict({"train": _grey(6, 0), "test": _grey(3, 1)}).save_to_disk(str(root))
    bundle = load_hub("tiny", seed=0, root=str(root))
    assert bundle.name == "tiny" and bundle.num_classes == 4  # from the ClassLabel
    assert bundle.input_shape == (1, 6, 5)
    assert len(bundle.train) == 6 and len(bundle.test) == 3
    via_registry = load_dataset("hub", seed=0, root=str(root))
    assert via_registry.name == "tiny_hf" and len(via_registry.test) == 3
    with pytest.raises(DataError, match="no split 'validation'; available: train, test"):
        load_hub("tiny", seed=0, root=str(root), test_split="validation")


def test_load_hub_single_split_is_split_by_seed(tmp_path: Path) -> None:
    root = tmp_path / "one"
    _grey(10).save_to_disk(str(root))
    a = load_dataset("hub", seed=3, root=str(root), test_split="", test_fraction=0.3)
    assert len(a.train) == 7 and len(a.test) == 3
    b = load_hub("one", seed=3, root=str(root), test_split=None, test_fraction=0.3)
    assert np.array_equal(a.test.labels, b.test.labels)
    with pytest.raises(DataError, match="holds a single split"):
        load_hub("one", seed=0, root=str(root))
    with pytest.raises(DataError, match="does not exist"):
        load_hub("x", seed=0, root=str(tmp_path / "missing"))


def test_offline_fetch_is_a_clear_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr_datasets

    calls: list[str] = []

    class OfflineFederatedDataset:
        def __init__(self, *, dataset: str, **kwargs: object) -> None:
            calls.append(dataset)

        def load_split(self, split: str) -> None:
            raise ConnectionError("Couldn't reach 'ylecun/mnist' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(flwr_datasets, "FederatedDataset", OfflineFederatedDataset)
    with pytest.raises(
        DataError, match=r"could not load hub dataset 'ylecun/mnist'.*offline"
    ) as err:
        load_dataset("hub", seed=0, dataset="ylecun/mnist")
    assert "save_to_disk" in str(err.value) and calls == ["ylecun/mnist"]
    with pytest.raises(DataError, match="needs dataset"):
        load_dataset("hub", seed=0)


def test_online_route_uses_federated_dataset_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr_datasets

    splits = {"train": _grey(5, 0), "test": _grey(2, 1)}

    class FakeFederatedDataset:
        def __init__(self, *, dataset: str, partitioners: dict, **kwargs: object) -> None:
            assert partitioners == {"train": 1}

        def load_split(self, split: str):
            if split not in splits:
                raise ValueError(f"The given split: '{split}' is not present in the dataset")
            return splits[split]

    monkeypatch.setattr(flwr_datasets, "FederatedDataset", FakeFederatedDataset)
    bundle = load_hub("org/tiny", seed=0)
    assert len(bundle.train) == 5 and bundle.info["source"] == "hub"
    with pytest.raises(DataError, match="'valid' is not present"):
        load_hub("org/tiny", seed=0, test_split="valid")
