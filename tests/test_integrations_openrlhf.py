"""OpenRLHF 0.11.2's own rollout executor (``openrlhf.utils.agent.SingleTurnAgentExecutor``) loads
``trainer/integrations/openrlhf_reward.py`` by path and rewards a prompt's samples with it against a
live, keyed ``regime-w-serve``; and the same executor's plain-HTTP path against ``/get_reward``.

vLLM cannot be installed here, so the one stand-in is the generation engine the executor is handed
(``tests/support/fake_vllm.py``: fixed responses as token ids, like vLLM's ``RequestOutput``);
everything from tokenizing the prompt to decoding the query and calling the reward is OpenRLHF's.

Needs the ``integrations`` extra (``pip install --no-deps openrlhf==0.11.2`` + aiohttp, pylatexenc);
skipped without it. Run: ``python -m pytest -m integrations tests/test_integrations_openrlhf.py``.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytestmark = pytest.mark.integrations

pytest.importorskip("openrlhf", reason="the integrations extra (openrlhf 0.11.2 --no-deps) is not installed")

from openrlhf.utils.agent import SingleTurnAgentExecutor  # noqa: E402

from tests.support.fake_vllm import FakeEngine, sampling_params  # noqa: E402
from tests.support.servers import ServiceSpec, start_live_service  # noqa: E402
from tests.test_service_hf import metric  # noqa: E402
from trainer.integrations import integration_files, openrlhf_reward  # noqa: E402
from trainer.prompts import build_prompt  # noqa: E402
from trainer.reward_client import RewardClient  # noqa: E402

QUESTION = "Mia has 6 shells and finds 3 more. How many shells does she have?"
RESPONSES = ["6+3 = 9. The answer is \\boxed{9}.", "6+3 = 10. #### 10", "So 9. #### 9", "I think 8."]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def rollout(executor, tokenizer, prompt, label, responses=RESPONSES):
    """What OpenRLHF's ``RolloutRayActor.generate_responses`` does: every sample of a prompt at once."""
    engine = FakeEngine(tokenizer, responses)
    params = sampling_params()

    async def all_samples():
        return await asyncio.gather(
            *[
                executor.execute(
                    prompt=prompt,
                    label=label,
                    sampling_params=params,
                    max_length=512,
                    hf_tokenizer=tokenizer,
                    llm_engine=engine,
                )
                for _ in responses
            ]
        )

    return asyncio.run(all_samples())


def score_requests(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("regime_w_requests_total{") and 'route="/v1/score"' in line
    )


@pytest.fixture
def keyed_env(live_service, monkeypatch):
    monkeypatch.setenv("REGIME_W_URL", live_service.url)
    monkeypatch.setenv("REGIME_W_API_KEY", live_service.api_key)
    monkeypatch.setenv("REGIME_W_COALESCE_MS", "30000")  # a burst is sent when all its samples wait:
    monkeypatch.setenv("REGIME_W_COALESCE_MAX", "4")  # the 4 samples of a step (no timing in the test)
    openrlhf_reward.reset()
    yield live_service
    openrlhf_reward.reset()


@pytest.mark.parametrize("label", ["9", ""])
def test_openrlhf_loads_the_reward_file_and_rewards_a_prompts_samples(keyed_env, tokenizer, label):
    service = keyed_env
    executor = SingleTurnAgentExecutor(integration_files()["openrlhf"])  # OpenRLHF's own loader
    assert executor.reward_func.__module__ == "reward_func"
    prompt = build_prompt(QUESTION, tokenizer)  # chat-templated, the trainer's instruction appended
    with RewardClient(service.url, api_key=service.api_key) as client:  # arms precomputed for the raw question
        client.precompute([QUESTION])
    generations = metric(service.url, "regime_w_arm_generations_total")
    sent = []
    for _ in range(3):  # the run's first samples go out as they come; once concurrency is seen, one request each
        requests = score_requests(service.url)
        outputs = rollout(executor, tokenizer, prompt, label)
        sent.append(score_requests(service.url) - requests)
    assert metric(service.url, "regime_w_arm_generations_total") == generations  # the cache was hit
    assert sent[-1] == 1, sent  # four concurrent samples, one request

    rewards = [float(o["reward"][0]) for o in outputs]
    scores = [float(o["scores"][0]) for o in outputs]
    logs = {k: [float(o["extra_logs"][k][0]) for o in outputs] for k in outputs[0]["extra_logs"]}
    assert all(0.0 <= s <= 1.0 for s in scores)
    if label:
        assert scores == [1.0, 0.0, 1.0, 0.0] and logs["label_free"] == [0.0] * 4
        assert rewards[0] > rewards[1] and rewards[2] > rewards[3]
    else:  # OpenRLHF's default label "" -> label-free: scores are s_wm
        assert logs["label_free"] == [1.0] * 4 and scores == pytest.approx(logs["s_wm"])
    import torch  # how OpenRLHF 0.11.2 turns them into an Experience: torch.tensor([value])

    assert torch.tensor([outputs[0]["reward"]]).numel() == 1
    assert {"s_end", "s_path", "s_cf", "s_wm", "correctness"} <= set(logs)


def test_a_keyless_call_fails_loudly_not_as_a_zero(keyed_env, tokenizer, monkeypatch):
    monkeypatch.setenv("REGIME_W_API_KEY", "not-the-key-0123456789")
    openrlhf_reward.reset()
    with pytest.raises(openrlhf_reward.RewardFailed, match="401") as raised:
        openrlhf_reward.reward_func(["Q? #### 1"], ["Q?"], ["1"])
    assert isinstance(raised.value.__cause__, Exception)  # the client's error, kept as the cause


@pytest.mark.parametrize("failure", ["wrong key", "service down", "label without an answer"])
def test_openrlhf_executor_stops_at_a_reward_failure(keyed_env, tokenizer, monkeypatch, failure):
    """OpenRLHF 0.11.2's ``SingleTurnAgentExecutor.execute`` wraps the reward in ``except Exception`` (logs
    at INFO, reward None, a crash later elsewhere): our failure passes it and stops the rollout, saying why."""
    label = "9"
    if failure == "wrong key":
        monkeypatch.setenv("REGIME_W_API_KEY", "not-the-key-0123456789")
        expected = "401"
    elif failure == "service down":
        from tests.support.servers import free_port

        monkeypatch.setenv("REGIME_W_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
        monkeypatch.setenv("REGIME_W_PATIENCE_S", "0.5")
        expected = "Regime W reward failed"
    else:
        label = "no number at all"
        expected = "labels\\[0\\]"
    openrlhf_reward.reset()
    executor = SingleTurnAgentExecutor(integration_files()["openrlhf"])
    with pytest.raises(openrlhf_reward.RewardFailed, match=expected) as raised:
        rollout(executor, tokenizer, build_prompt(QUESTION, tokenizer), label, responses=RESPONSES[:2])
    assert "OpenRLHF queries" in str(raised.value) and raised.value.__cause__ is not None


def test_what_openrlhf_does_with_an_ordinary_exception(tokenizer):
    """The reason for ``RewardFailed``: an ``Exception`` from a reward function becomes a sample with no reward."""
    executor = SingleTurnAgentExecutor(integration_files()["openrlhf"])

    def failing(queries, prompts, labels):
        raise RuntimeError("service down")

    executor.reward_func = failing
    [output] = rollout(executor, tokenizer, build_prompt(QUESTION, tokenizer), "9", responses=RESPONSES[:1])
    assert output["reward"] is None and output["scores"] is None


def test_openrlhf_http_path_against_get_reward(tokenizer, tiny_model_dir, tmp_path):
    """OpenRLHF's plain ``--reward.remote_url http://.../get_reward`` (no Authorization header in 0.11.2):
    works against a service without keys on a private address; on a keyed one it gets 401 -> None."""
    spec = ServiceSpec(api_key=None)
    with start_live_service(spec, tmp_path, tiny_model_dir) as open_service:
        executor = SingleTurnAgentExecutor(open_service.url + "/get_reward")
        outputs = rollout(executor, tokenizer, build_prompt(QUESTION, tokenizer), "9")
    assert [o["scores"][0] for o in outputs] == [1.0, 0.0, 1.0, 0.0]
    assert outputs[0]["extra_logs"]["label_free"] == [0.0]
