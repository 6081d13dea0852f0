"""Registry, option checking, determinism and Opacus validation of fedsim.models."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from fedsim.models import MODELS, ModelError, build_model, check_private


def test_registry_holds_the_documented_models() -> None:
    assert set(MODELS) == {"cnn", "cnn1d", "femnist_cnn", "char_lstm", "logreg", "mlp"}


def test_cases_cover_every_registered_model(all_cases: list[Any]) -> None:
    # Guards against a model being registered without the shape/Opacus tests running on it.
    assert {c.name for c in all_cases} == set(MODELS)


def test_model_error_is_a_value_error() -> None:
    assert issubclass(ModelError, ValueError)


def test_unknown_name_is_named_and_allowed_names_listed() -> None:
    with pytest.raises(ModelError) as info:
        build_model("resnet", input_shape=(1, 8, 8), num_classes=10)
    msg = str(info.value)
    assert "'resnet'" in msg
    for name in MODELS:
        assert name in msg


@pytest.mark.parametrize("name", [None, ["cnn"], "CNN"])
def test_non_name_is_refused_cleanly(name: Any) -> None:
    with pytest.raises(ModelError, match="unknown model"):
        build_model(name, input_shape=(1, 8, 8), num_classes=10)


def test_unknown_option_is_named_and_allowed_options_listed() -> None:
    with pytest.raises(ModelError) as info:
        build_model("cnn", input_shape=(1, 8, 8), num_classes=10, chanels=[8])
    msg = str(info.value)
    assert "chanels" in msg and "channels" in msg and "hidden" in msg


def test_preset_without_options_says_so() -> None:
    with pytest.raises(ModelError, match="hidden.*no options"):
        build_model("femnist_cnn", input_shape=(1, 28, 28), num_classes=62, hidden=128)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("cnn", {"channels": []}, r"channels=\[\]"),
        ("cnn", {"channels": [16, 0]}, r"channels=\[16, 0\].*entry 0"),
        ("cnn", {"channels": "16"}, r"channels='16'"),
        ("cnn", {"hidden": -1}, r"hidden=-1.*>= 0"),
        ("cnn", {"hidden": True}, r"hidden=True"),
        ("cnn", {"input_shape": (8, 8)}, r"input_shape=\(8, 8\).*\(channels, height, width\)"),
        ("femnist_cnn", {"input_shape": (1, 3, 28)}, r"input_shape=\(1, 3, 28\).*>= 4"),
        ("char_lstm", {"input_shape": (4, 80)}, r"input_shape=\(4, 80\).*\(seq_len,\)"),
        ("char_lstm", {"layers": 0}, r"layers=0.*>= 1"),
        ("logreg", {"input_shape": ()}, r"input_shape=\(\)"),
        ("logreg", {"num_classes": 1}, r"num_classes=1.*>= 2"),
        ("mlp", {"num_classes": 10.0}, r"num_classes=10.0"),
        ("mlp", {"hidden": 0}, r"hidden=0.*>= 1"),
    ],
)
def test_bad_values_name_the_problem(name: str, kwargs: dict[str, Any], expected: str) -> None:
    defaults: dict[str, Any] = {
        "cnn": {"input_shape": (1, 8, 8), "num_classes": 10},
        "femnist_cnn": {"input_shape": (1, 28, 28), "num_classes": 62},
        "char_lstm": {"input_shape": (80,), "num_classes": 80},
        "logreg": {"input_shape": (60,), "num_classes": 10},
        "mlp": {"input_shape": (60,), "num_classes": 10},
    }[name]
    with pytest.raises(ModelError, match=expected) as info:
        build_model(name, **{**defaults, **kwargs})
    assert repr(name) in str(info.value)


def test_build_is_deterministic_given_the_seed(case: Any) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(case.name, **case.kwargs()).state_dict()

    first, again, other = weights(0), weights(0), weights(1)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_every_registered_model_passes_check_private(case: Any) -> None:
    model = build_model(case.name, **case.kwargs())
    assert model.training  # Opacus needs training mode; build_model must not leave eval on
    check_private(model)


def test_batchnorm_is_refused_with_opacus_reason() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    with pytest.raises(ModelError, match="BatchNorm") as info:
        check_private(model)
    assert "GroupNorm" in str(info.value)  # Opacus' hint on what to use instead


def test_all_problems_are_reported_together() -> None:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.LSTM(4, 4)).eval()
    with pytest.raises(ModelError) as info:
        check_private(model)
    msg = str(info.value)
    assert "training mode" in msg and "BatchNorm" in msg and "DPLSTM" in msg
