"""The trainer's one exception tree (trainer/errors.py): every error it raises on purpose is under
``TrainerBaseException``; ``RewardFailed`` alone is not an ``Exception``, and passes a handler that
swallows one. The frameworks' own handlers are run in tests/test_integrations_openrlhf.py
(``-k stops_at_a_reward_failure``) and tests/test_integrations_verl.py (``-k rate_limited``)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.servers import free_port
from trainer.errors import RewardFailed, RewardInputError, StageError, TrainerBaseException, TrainerError
from trainer.integrations import openrlhf_reward, verl_reward
from trainer.integrations.core import IntegrationError
from trainer.reward_client import (
    RewardServiceConnectionError,
    RewardServiceError,
    RewardServiceHTTPError,
    RewardServiceProtocolError,
    RewardServiceTimeout,
)
from trainer.rewards import RegimeWReward

#: each error and its parent in the tree
TREE: dict[type[BaseException], type[BaseException]] = {
    TrainerError: TrainerBaseException,
    RewardFailed: TrainerBaseException,
    StageError: TrainerError,
    RewardInputError: TrainerError,
    IntegrationError: RewardInputError,
    RewardServiceError: TrainerError,
    RewardServiceConnectionError: RewardServiceError,
    RewardServiceTimeout: RewardServiceError,
    RewardServiceHTTPError: RewardServiceError,
    RewardServiceProtocolError: RewardServiceError,
}

#: the modules of the reward path (light to import: no torch) whose own exception classes must be in the tree
MODULES = (
    "trainer.errors",
    "trainer.reward_client.errors",
    "trainer.reward_modes",
    "trainer.rewards",
    "trainer.records",
    "trainer.integrations.core",
    "trainer.integrations.openrlhf_reward",
    "trainer.integrations.verl_reward",
)


def test_the_tree_is_as_documented() -> None:
    for error, parent in TREE.items():
        assert parent in error.__mro__[1:], (error, parent)
        assert issubclass(error, TrainerBaseException)
    for error in TREE:
        assert issubclass(error, Exception) is (error is not RewardFailed), error
    assert issubclass(RewardInputError, ValueError) and issubclass(IntegrationError, ValueError)
    assert openrlhf_reward.RewardFailed is verl_reward.RewardFailed is RewardFailed


def test_every_exception_class_of_the_reward_path_is_in_the_tree() -> None:
    found = [
        obj
        for name in MODULES
        for obj in vars(importlib.import_module(name)).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name
    ]
    assert set(TREE) <= set(found)  # every class of the tree is defined in these modules
    assert [e for e in found if not issubclass(e, TrainerBaseException)] == []


def test_the_root_catches_both_branches() -> None:
    for error in (StageError("stage"), RewardFailed("failed")):
        with pytest.raises(TrainerBaseException):
            raise error


def _down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIME_W_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("REGIME_W_PATIENCE_S", "0.3")
    openrlhf_reward.reset()


def test_a_reward_failure_passes_a_handler_that_swallows_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenRLHF 0.11.2's ``SingleTurnAgentExecutor.execute`` calls the reward function through
    ``asyncio.to_thread`` inside ``except Exception`` (log at INFO, reward None). The same shape, with the
    real reward file and an unreachable service: its ``RewardFailed`` reaches the caller, the cause kept;
    the cause itself (an ``Exception``) would have been swallowed."""
    _down(monkeypatch)
    swallowed: list[BaseException] = []

    async def execute(reward_func: Callable[..., Any]) -> object:
        try:
            return await asyncio.to_thread(reward_func, ["Q: 2+2? #### 4"], ["Q: 2+2?"], ["4"])
        except Exception as exc:  # what OpenRLHF does
            swallowed.append(exc)
            return None

    with pytest.raises(RewardFailed, match="Regime W reward failed for 1 OpenRLHF queries") as raised:
        asyncio.run(execute(openrlhf_reward.reward_func))
    assert swallowed == [] and isinstance(raised.value.__cause__, RewardServiceConnectionError)

    cause = raised.value.__cause__

    def plain(queries: list[str], prompts: list[str], labels: list[str]) -> object:
        raise cause

    assert asyncio.run(execute(plain)) is None and isinstance(swallowed[0], RewardServiceConnectionError)
    openrlhf_reward.reset()


def test_a_trl_reward_raises_an_ordinary_trainer_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRL 1.16 catches nothing around a reward function: the TRL rewards raise ``TrainerError``s."""
    _down(monkeypatch)
    with RegimeWReward(max_retries=0) as reward, pytest.raises(RewardServiceConnectionError) as raised:
        reward(prompts=["Q: 2+2?"], completions=["#### 4"])
    assert isinstance(raised.value, TrainerError) and isinstance(raised.value, Exception)
