"""FedProx: the proximal term changes the update exactly as the formula says."""

from __future__ import annotations

import copy

import torch

from fedsim.clients.trainer import LocalTrainer, build_global_model
from fedsim.clients.worker import load_scenario_data
from fedsim.shards import build_shards
from tests.conftest import small_scenario


def test_proximal_term_follows_the_formula() -> None:
    # full-batch SGD, 2 steps: w1 = w0 - lr g(w0); w2 = w1 - lr (g(w1) + mu (w1 - w0))
    sc = small_scenario(
        dp__mode="off",
        model={"name": "logreg"},
        train__batch_size=10_000,
        train__epochs=2,
        train__lr=0.5,
    )
    bundle = load_scenario_data(sc)
    idx = build_shards(sc, bundle).train[0]
    trainer = LocalTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    init = build_global_model(sc, bundle.input_shape, bundle.num_classes).state_dict()
    mu, lr = 0.7, 0.5

    got = trainer.train(
        client=0, round=1, indices=idx, global_state=init, config={"proximal-mu": mu}
    ).state
    plain = trainer.train(client=0, round=1, indices=idx, global_state=init).state

    model = build_global_model(sc, bundle.input_shape, bundle.num_classes)
    model.load_state_dict(init)
    w0 = copy.deepcopy(list(model.parameters()))
    x, y = bundle.train.batch(idx)
    for _ in range(2):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p, p0 in zip(model.parameters(), w0, strict=True):
                p -= lr * (p.grad + mu * (p - p0))
    want = model.state_dict()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)
    # and mu > 0 really changed the update
    assert any(not torch.allclose(got[k], plain[k]) for k in got)


def test_proximal_term_under_dp_is_added_after_noise() -> None:
    sc = small_scenario(train__epochs=2)
    bundle = load_scenario_data(sc)
    idx = build_shards(sc, bundle).train[1]
    trainer = LocalTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    init = build_global_model(sc, bundle.input_shape, bundle.num_classes).state_dict()
    a = trainer.train(client=1, round=1, indices=idx, global_state=init).state
    b = trainer.train(
        client=1, round=1, indices=idx, global_state=init, config={"proximal-mu": 1.0}
    ).state
    # same seeded batches and noise: the only difference is the proximal pull, which
    # keeps the weights closer to the global model
    dist = lambda s: sum(float(((s[k] - init[k]) ** 2).sum()) for k in init)  # noqa: E731
    assert dist(b) < dist(a)
