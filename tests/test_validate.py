"""The registry's facts that let `fedsim check` skip building built-in components.

`fedsim.validate.model_is_known` and `strategy_is_known` vouch for a scenario without
importing torch, Opacus or Flower; these tests build every case they vouch for (and
every case they do not) the way the full check does, so the facts cannot drift from
the builders and constructors.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from fedsim import registry, validate
from fedsim.config import Scenario, ScenarioError
from fedsim.strategies.factory import strategy_options

# Every built-in data set, with the extremes of the fields that set its shape.
DATA: list[dict[str, Any]] = [
    {"name": "digits"},
    {"name": "mnist1d"},
    {"name": "mnist", "root": "/nonexistent"},
    {"name": "fashion_mnist", "root": "/nonexistent"},
    {"name": "cifar10", "root": "/nonexistent"},
    {"name": "femnist", "root": "/nonexistent", "partition": "natural"},
    {"name": "synthetic", "synthetic": {"dim": 1, "num_classes": 2}},
    {"name": "synthetic", "synthetic": {"dim": 60, "num_classes": 10}},
    {"name": "shakespeare", "partition": "natural", "shakespeare": {"seq_len": 1}},
    {"name": "shakespeare", "partition": "natural", "shakespeare": {"seq_len": 1000}},
    {"name": "hub", "hub": {"dataset": "some/set"}},
]
BUILTIN_MODELS = [e.name for e in registry.MODELS.entries() if e.builtin]
BUILTIN_STRATEGIES = [e.name for e in registry.STRATEGIES.entries() if e.builtin]


def scenario(model: dict[str, Any], data: dict[str, Any], dp_mode: str) -> Scenario | None:
    """A small scenario (schema checks only: nothing built), or None if the schema refuses it."""
    dp = {"mode": dp_mode, "noise_multiplier": 1.0, "max_grad_norm": 1.0}
    raw = {
        "name": "grid",
        "population": 4,
        "data": {"partition": "iid", **data},
        "model": model,
        "dp": dp if dp_mode != "off" else {"mode": "off"},
    }
    try:
        return Scenario.from_dict(raw, checks="schema")
    except ScenarioError:
        return None  # e.g. a sequence model on images: refused before any check builds


def built_check(sc: Scenario, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`check_model` as it ran before the registry's facts: building the model."""
    with monkeypatch.context() as patch:
        patch.setattr(validate, "model_is_known", lambda _: False)
        return validate.check_model(sc)


CASES = [
    (m, d, mode)
    for m, d, mode in itertools.product(BUILTIN_MODELS, DATA, ("off", "sample"))
    if scenario({"name": m}, d, mode) is not None
]


@pytest.mark.parametrize(
    ("model", "data", "dp_mode"),
    CASES,
    ids=[f"{m}-{d['name']}-{i}-{mode}" for i, (m, d, mode) in enumerate(CASES)],
)
def test_a_known_model_is_one_that_builds(
    model: str, data: dict[str, Any], dp_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = scenario({"name": model}, data, dp_mode)
    assert sc is not None
    problems = built_check(sc, monkeypatch)
    if validate.model_is_known(sc):
        assert problems == []  # vouched for: building finds nothing either
    elif validate.model_io(sc) is not None:
        # Not vouched for although the shape is known: building must refuse it (else the
        # facts are stricter than the builder and `fedsim check` imports torch for nothing).
        assert problems, f"{model} builds for {data}: its registry facts are too strict"


def test_the_cases_cover_every_model_and_both_verdicts() -> None:
    known = {m for m, d, mode in CASES if validate.model_is_known(scenario({"name": m}, d, mode))}
    assert known == set(BUILTIN_MODELS)
    refused = [
        (m, d["name"])
        for m, d, mode in CASES
        if not validate.model_is_known(scenario({"name": m}, d, mode))
        and validate.model_io(scenario({"name": m}, d, mode)) is not None
    ]
    assert ("cnn", "mnist1d") in refused  # a 2-D example for a 3-D model


def test_options_a_user_model_or_a_user_data_set_are_built() -> None:
    digits = {"name": "digits"}
    assert validate.model_is_known(scenario({"name": "cnn"}, digits, "sample"))
    assert not validate.model_is_known(scenario({"name": "cnn", "hidden": 8}, digits, "sample"))
    user_model = {"name": "tests.fixtures.nets:make_net"}
    assert not validate.model_is_known(scenario(user_model, digits, "sample"))
    user_data = {"name": "tests.fixtures.data:load_blobs", "options": {"examples": 60}}
    assert not validate.model_is_known(scenario({"name": "mlp"}, user_data, "off"))


def test_an_option_of_a_built_in_model_is_still_checked_by_its_builder() -> None:
    raw = {"name": "o", "population": 4, "model": {"name": "cnn", "hidden": -1}}
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(raw)
    assert info.value.problems == [
        "model: model 'cnn': option hidden=-1 is not allowed; expected an integer >= 0"
    ]


@pytest.mark.parametrize("name", BUILTIN_STRATEGIES)
def test_a_known_strategy_is_one_its_constructor_takes(name: str) -> None:
    sc = Scenario.from_dict(
        {"name": "s", "population": 4, "strategy": {"name": name}, "dp": {"mode": "off"}},
        checks="schema",
    )
    assert validate.strategy_is_known(sc)
    cls, options = strategy_options(sc)  # what the full check runs: nothing missing
    assert cls is registry.STRATEGIES.load(name)
    cls(**options)  # and the constructor takes the options it is given


def test_a_strategy_with_options_is_checked_against_its_constructor() -> None:
    raw = {"name": "s", "population": 4, "strategy": {"name": "fedprox", "options": {"mu": 1}}}
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(raw)
    assert info.value.problems[0].startswith("strategy.options.mu: not an option of FedProx")


def test_the_shakespeare_classes_are_its_vocabulary() -> None:
    # validate.model_io reads the class count from the registry, not by importing the
    # loader (fedsim.data imports torch).
    from fedsim.data.shakespeare import VOCAB

    assert registry.DATASETS.info("shakespeare")["num_classes"] == len(VOCAB)
