"""The per-run data cache: one build per machine, memory-mapped files, the same training."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.clients.trainer import LocalTrainer, build_global_model
from fedsim.clients.worker import load_scenario_data
from fedsim.data import cache, clear_dataset_cache, load_dataset
from fedsim.data import registry as data_registry
from fedsim.shards import build_shards
from tests.conftest import small_scenario


def _mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose mapping holds `tensor`'s memory in this process, if any."""
    ptr = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(v, 16) for v in fields[0].split("-"))
        if lo <= ptr < hi:
            return fields[5] if len(fields) == 6 else None
    return None


@pytest.fixture
def run_cache(tmp_path: Path):  # type: ignore[no-untyped-def]
    clear_dataset_cache()
    with cache.run_cache(tmp_path / "data_cache") as folder:
        yield folder
    clear_dataset_cache()


def test_two_loads_map_the_same_files_and_build_once(run_cache: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    builds = []
    real_build = data_registry._build
    monkeypatch.setattr(data_registry, "_build", lambda *a: builds.append(a) or real_build(*a))
    first = load_dataset("digits", seed=1)
    clear_dataset_cache()  # as a second process would: nothing in this process's memory
    second = load_dataset("digits", seed=1)
    assert len(builds) == 1
    assert first is not second
    for split in ("train", "test"):
        a, b = getattr(first, split), getattr(second, split)
        for ta, tb in zip(a.arrays(), b.arrays(), strict=True):
            file_a = _mapped_file(torch.from_numpy(ta))
            assert file_a is not None and file_a.startswith(str(run_cache))
            assert file_a == _mapped_file(torch.from_numpy(tb))
        assert np.array_equal(a.labels, b.labels)


def _load_in_child(folder: str, queue) -> None:  # type: ignore[no-untyped-def]
    import os

    os.environ[cache.CACHE_ENV] = folder
    bundle = load_dataset("digits", seed=1)
    queue.put(_mapped_file(torch.from_numpy(bundle.train.arrays()[0])))


def test_another_process_maps_the_entry_the_first_wrote(run_cache: Path) -> None:
    load_dataset("digits", seed=1)
    entries = sorted(p.name for p in run_cache.iterdir() if p.is_dir())
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_in_child, args=(str(run_cache), queue))
    proc.start()
    mapped = queue.get(timeout=120)
    proc.join(timeout=30)
    assert mapped == str(run_cache / entries[0] / "train_x.npy")
    assert sorted(p.name for p in run_cache.iterdir() if p.is_dir()) == entries  # no rebuild


def test_run_cache_restores_the_variable_and_removes_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data_cache"
    with cache.run_cache(folder):
        assert cache.cache_root() == folder
        load_dataset("digits", seed=2)
        assert any(folder.iterdir())
    assert cache.cache_root() is None
    assert not folder.exists()
    clear_dataset_cache()


def _one_round(sc) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    bundle = load_scenario_data(sc)
    shards = build_shards(sc, bundle)
    trainer = LocalTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    init = build_global_model(sc, bundle.input_shape, bundle.num_classes).state_dict()
    results = [
        trainer.train(client=c, round=1, indices=shards.train[c], global_state=init)
        for c in range(sc.population)
    ]
    total = sum(r.num_examples for r in results)
    return {k: sum(r.state[k].double() * (r.num_examples / total) for r in results) for k in init}


@pytest.mark.parametrize("dp", ["off", "sample"])
def test_cached_data_trains_to_the_same_weights(tmp_path: Path, dp: str) -> None:
    sc = small_scenario(dp__mode=dp, data__partition="dirichlet")
    clear_dataset_cache()
    plain = _one_round(sc)
    clear_dataset_cache()
    with cache.run_cache(tmp_path / "data_cache"):
        cached = _one_round(sc)
        assert _mapped_file(torch.from_numpy(load_scenario_data(sc).train.arrays()[0]))
    clear_dataset_cache()
    for key, value in plain.items():
        assert torch.equal(value, cached[key]), key


def test_text_window_data_stays_per_process(run_cache: Path) -> None:
    # Shakespeare is a token stream with window offsets, not plain arrays: not cached.
    from fedsim.data.base import TextWindowDataset

    bundle = load_dataset("shakespeare", seed=0)
    assert isinstance(bundle.train, TextWindowDataset)
    assert not [p for p in run_cache.iterdir() if p.is_dir()]


def test_folder_absent_on_this_machine_means_no_cache(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache.cache_root() is None
