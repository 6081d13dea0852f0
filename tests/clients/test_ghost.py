"""Ghost clipping and per-example hooks clip and average the same way (noise off)."""

from __future__ import annotations

import pytest
import torch

from fedsim.clients.trainer import LocalTrainer, build_global_model
from fedsim.clients.worker import load_scenario_data
from fedsim.shards import build_shards
from tests.conftest import small_scenario


@pytest.mark.parametrize("clip", [0.01, 1.0, 100.0])
def test_ghost_and_hooks_give_the_same_noiseless_update(clip: float) -> None:
    states = {}
    for mode in ("hooks", "ghost"):
        sc = small_scenario(
            dp__noise_multiplier=0.0,
            dp__max_grad_norm=clip,
            dp__grad_sample_mode=mode,
            train__max_steps=3,
            model__channels=[4, 8],
            model__hidden=16,
        )
        bundle = load_scenario_data(sc)
        idx = build_shards(sc, bundle).train[0]
        trainer = LocalTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
        assert trainer.grad_sample_mode == mode
        init = build_global_model(sc, bundle.input_shape, bundle.num_classes).state_dict()
        states[mode] = trainer.train(client=0, round=1, indices=idx, global_state=init).state
    for key in states["hooks"]:
        torch.testing.assert_close(states["ghost"][key], states["hooks"][key], rtol=1e-4, atol=1e-6)


def test_auto_mode_is_recorded_per_model() -> None:
    sc = small_scenario()
    bundle = load_scenario_data(sc)
    trainer = LocalTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    assert trainer.grad_sample_mode == "ghost"  # the small CNN's weights sit in Linear layers
