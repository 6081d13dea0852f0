"""Output shapes, parameter counts and layer layout of the registered models."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from fedsim.models import build_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_output_shape(case: Any) -> None:
    model = build_model(case.name, **case.kwargs())
    out = model(case.make_x(5))
    assert out.shape == (5, case.num_classes)  # (batch, num_classes)
    assert out.dtype == torch.float32


def test_femnist_cnn_parameter_count_matches_leaf() -> None:
    model = build_model("femnist_cnn", input_shape=(1, 28, 28), num_classes=62)
    conv1 = 5 * 5 * 1 * 32 + 32
    conv2 = 5 * 5 * 32 * 64 + 64
    fc1 = (64 * 7 * 7) * 2048 + 2048
    fc2 = 2048 * 62 + 62
    assert n_params(model) == conv1 + conv2 + fc1 + fc2 == 6_603_710


def test_femnist_cnn_accepts_other_image_sizes() -> None:
    model = build_model("femnist_cnn", input_shape=(3, 32, 20), num_classes=10)
    assert model.fc1.in_features == 64 * 8 * 5
    assert model(torch.randn(2, 3, 32, 20)).shape == (2, 10)


def test_cnn_default_parameter_count_on_digits() -> None:
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    conv1 = 3 * 3 * 1 * 16 + 16
    conv2 = 3 * 3 * 16 * 32 + 32
    fc = (32 * 2 * 2) * 64 + 64  # 8x8 pooled twice -> 2x2
    out = 64 * 10 + 10
    assert n_params(model) == conv1 + conv2 + fc + out == 13_706


def test_cnn_stops_pooling_at_one_pixel() -> None:
    # 8 -> 4 -> 2 -> 1, then two more blocks without pooling.
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=3, channels=[4] * 5)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_cnn_pools_only_the_side_that_can_shrink() -> None:
    model = build_model("cnn", input_shape=(2, 9, 1), num_classes=4, channels=[4, 4], hidden=0)
    assert model(torch.randn(3, 2, 9, 1)).shape == (3, 4)
    assert model.classifier[0].in_features == 4 * 2 * 1  # 9 -> 4 -> 2 high, width stays 1


def test_char_lstm_parameter_count_with_leaf_defaults() -> None:
    model = build_model("char_lstm", input_shape=(80,), num_classes=80)
    embedding = 80 * 8
    layer0 = 4 * 256 * (8 + 256) + 2 * 4 * 256  # gates x (input + recurrent) + two biases
    layer1 = 4 * 256 * (256 + 256) + 2 * 4 * 256
    fc = 256 * 80 + 80
    assert n_params(model) == embedding + layer0 + layer1 + fc == 819_920
    assert model(torch.randint(0, 80, (2, 80))).shape == (2, 80)


def test_char_lstm_state_dict_has_each_parameter_once() -> None:
    torch.manual_seed(0)
    model = build_model("char_lstm", input_shape=(80,), num_classes=80)
    state = model.state_dict()
    # Same names, same order as parameters(): what a federated round ships, no aliases twice.
    assert list(state) == [name for name, _ in model.named_parameters()]
    assert "lstm.weight_ih_l0" in state and "lstm.l0.ih.weight" not in state
    wrapped = GradSampleModule(copy.deepcopy(model))
    assert len(wrapped.state_dict()) == len(state)


def test_char_lstm_state_dict_round_trips_strictly() -> None:
    torch.manual_seed(0)
    source = build_model("char_lstm", input_shape=(80,), num_classes=80, hidden=16)
    torch.manual_seed(1)
    target = build_model("char_lstm", input_shape=(80,), num_classes=80, hidden=16)
    target.load_state_dict(source.state_dict())  # strict by default
    x = torch.randint(0, 80, (3, 10))
    assert torch.equal(source(x), target(x))


def test_logreg_is_one_linear_layer() -> None:
    model = build_model("logreg", input_shape=(60,), num_classes=10)
    assert n_params(model) == 60 * 10 + 10
    assert model(torch.randn(4, 60)).shape == (4, 10)


@pytest.mark.parametrize("shape", [(60,), (1, 8, 8)])
def test_mlp_flattens_any_shape(shape: tuple[int, ...]) -> None:
    model = build_model("mlp", input_shape=shape, num_classes=10, hidden=32)
    d = 1
    for s in shape:
        d *= s
    assert n_params(model) == d * 32 + 32 + 32 * 10 + 10
    assert model(torch.randn(4, *shape)).shape == (4, 10)
