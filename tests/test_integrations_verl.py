"""verl 0.9.1's own code loads ``trainer/integrations/verl_reward.py`` and scores a small batch with it
against a live, keyed ``regime-w-serve`` (hf backend, tiny model) on loopback.

Needs the ``integrations`` extra (``pip install -e ".[integrations]"`` then
``pip install --no-deps verl==0.9.1``: verl's own dependency list pulls a GPU stack). Skipped
without verl. Run: ``python -m pytest -m integrations tests/test_integrations_verl.py``.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integrations

verl = pytest.importorskip("verl", reason="the integrations extra (verl 0.9.1 --no-deps) is not installed")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from trainer.integrations import integration_files, verl_reward  # noqa: E402
from trainer.integrations.core import RewardFailed  # noqa: E402

QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples?", "A pen costs $2. How much do 5 pens cost?"]
GOLDS = ["7", "10"]
RESPONSES = [
    ["3+4 = 7. The answer is \\boxed{7}.", "3+4 = 8. #### 8"],
    ["2*5 = 10. #### 10", "2*5 = 12. The answer is 12."],
]


@pytest.fixture(scope="module")
def service(live_service):
    return live_service


@pytest.fixture(autouse=True)
def service_env(service, monkeypatch):
    monkeypatch.setenv("REGIME_W_URL", service.url)
    monkeypatch.setenv("REGIME_W_API_KEY", service.api_key)
    monkeypatch.setenv("REGIME_W_COALESCE_MS", "30000")  # a burst is sent when all its samples wait:
    monkeypatch.setenv("REGIME_W_COALESCE_MAX", "4")  # the 4 samples of a step (no timing in the test)
    verl_reward.reset()
    yield
    verl_reward.reset()


def requests_seen(service) -> float:
    text = httpx.get(service.url + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("regime_w_requests_total{") and 'route="/v1/score"' in line and 'status="200"' in line
    )


def batch(tokenizer, *, label_free: bool = False, with_question: bool = True):
    """A verl ``DataProto`` as its rollout hands it to the reward: prompts, responses, masks, non-tensors."""
    from verl import DataProto

    prompts, responses, sources, models, extras = [], [], [], [], []
    for q, gold, answers in zip(QUESTIONS, GOLDS, RESPONSES):
        for answer in answers:
            prompts.append(tokenizer(q, add_special_tokens=False)["input_ids"])
            responses.append(tokenizer(answer, add_special_tokens=False)["input_ids"])
            sources.append("openai/gsm8k")
            models.append({"style": "rule", "ground_truth": "" if label_free else gold})
            extras.append({"split": "train", "index": len(extras), "question": q} if with_question else {})
    p_len, r_len = max(map(len, prompts)), max(map(len, responses))
    pad = tokenizer.pad_token_id
    prompt_ids = torch.tensor([[pad] * (p_len - len(p)) + p for p in prompts])  # left-padded prompts
    response_ids = torch.tensor([r + [pad] * (r_len - len(r)) for r in responses])  # right-padded responses
    mask = torch.tensor(
        [
            [0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r))
            for p, r in zip(prompts, responses)
        ]
    )
    return DataProto.from_dict(
        tensors={
            "prompts": prompt_ids,
            "responses": response_ids,
            "attention_mask": mask,
            "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        },
        non_tensors={
            "data_source": np.array(sources, dtype=object),
            "reward_model": np.array(models, dtype=object),
            "extra_info": np.array(extras, dtype=object),
        },
    )


def loop_config(tiny_model_dir, name: str):
    return OmegaConf.create(
        {
            "actor_rollout_ref": {"model": {"path": str(tiny_model_dir), "tokenizer_path": None}},
            "reward": {
                "num_workers": 1,
                "custom_reward_function": {"path": integration_files()["verl"], "name": name, "reward_kwargs": {}},
                "reward_manager": {
                    "source": "register",
                    "name": "naive",
                    "module": {"path": None, "name": "custom_reward_manager"},
                },
                "reward_model": {"enable": False, "model_path": None},
                "sandbox_fusion": None,
            },
        }
    )


@pytest.mark.parametrize("name", ["compute_score", "compute_score_async"])
def test_verl_reward_loop_worker_scores_a_batch(name, tiny_model_dir, service):
    """verl 0.9.1's ``RewardLoopWorker`` (what ``RewardLoopManager`` runs as a Ray actor): our function
    through ``get_custom_reward_fn`` and the ``naive`` manager, every sample of the batch at once."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager import NaiveRewardManager

    worker = RewardLoopWorker(loop_config(tiny_model_dir, name))
    assert isinstance(worker.reward_manager, NaiveRewardManager)
    data = batch(worker.input_tokenizer)
    sent = []
    for _ in range(3):  # the run's first samples go out as they come; once concurrency is seen, a step is one request
        before = requests_seen(service)
        outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))
        sent.append(requests_seen(service) - before)
    scores = [o["reward_score"] for o in outputs]
    extra = [o["reward_extra_info"] for o in outputs]
    assert [e["correctness"] for e in extra] == [1.0, 0.0, 1.0, 0.0]
    assert [e["score01"] for e in extra] == [1.0, 0.0, 1.0, 0.0]
    assert scores[0] > scores[1] and scores[2] > scores[3]
    rm = NaiveRewardManager.assemble_rm_scores(data, scores)  # what the manager turns them into
    assert rm.shape == data.batch["responses"].shape and rm.sum(dim=1).tolist() == pytest.approx(scores)
    assert sent[-1] == 1, f"{sent} HTTP requests for three batches of {len(data)} responses"


def reward_manager_config(name: str, function: str = "compute_score_async"):
    return OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {"path": integration_files()["verl"], "name": function, "reward_kwargs": {}},
                "reward_manager": {"source": "register", "name": name, "module": {"path": None, "name": "x"}},
                "sandbox_fusion": None,
            }
        }
    )


def test_the_managers_verl_0_9_1_offers_and_no_batch_manager(tiny_model_dir, service):
    """verl 0.9.1's ``load_reward_manager`` resolves ``reward.reward_manager.name`` in the reward loop's
    registry: ``naive``, ``dapo``, ``gdpo``, ``rate_limited``, ``remote``; there is no ``batch``."""
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_manager import NaiveRewardManager
    from verl.trainer.ppo.reward import load_reward_manager

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="Unknown reward manager: batch"):
        load_reward_manager(reward_manager_config("batch"), tokenizer)
    assert not hasattr(verl_reward, "compute_score_batch")  # nothing offered for a manager that is not there
    manager = load_reward_manager(reward_manager_config("naive"), tokenizer)
    assert isinstance(manager, NaiveRewardManager) and manager.is_async_reward_score
    data = batch(tokenizer)
    outputs = manager.loop.run_until_complete(asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(4))))
    assert [o["reward_extra_info"]["correctness"] for o in outputs] == [1.0, 0.0, 1.0, 0.0]


def test_a_missing_question_is_a_clear_error(tiny_model_dir, service):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = batch(tokenizer, with_question=False)
    with pytest.raises(verl_reward.RewardFailed, match=r"extra_info\['question'\] is missing") as raised:
        verl_reward.compute_score("openai/gsm8k", "#### 7", "7", data.non_tensor_batch["extra_info"][0])
    assert isinstance(raised.value.__cause__, ValueError)
    with pytest.raises(verl_reward.RewardFailed, match="extra_info"):
        asyncio.run(verl_reward.compute_score_async("gsm8k", "#### 7", "7", {}))


def test_the_function_verl_loads_pickles_for_ray(tiny_model_dir, service):
    """What verl's ``remote`` manager does with the function (``RewardComputeWorker.remote(compute_score)``):
    Ray pickles it with cloudpickle, by value for a file loaded by path. The module-level lock of the
    file made that fail (``cannot pickle '_thread.lock' object``), also after a first call built a client."""
    import cloudpickle
    from verl.trainer.ppo.reward import get_custom_reward_fn

    for name in ("compute_score", "compute_score_async"):
        fn = get_custom_reward_fn(reward_manager_config("naive", name))
        data = {"solution_str": "3+4 = 7. #### 7", "ground_truth": "7", "extra_info": {"question": QUESTIONS[0]}}
        first = fn(data_source="gsm8k", **data) if name == "compute_score" else asyncio.run(fn(data_source="x", **data))
        copy = cloudpickle.loads(cloudpickle.dumps(fn))  # after the first call: the process has a client now
        again = (
            copy(data_source="gsm8k", **data) if name == "compute_score" else asyncio.run(copy(data_source="x", **data))
        )
        assert first["correctness"] == again["correctness"] == 1.0 and first["score"] == again["score"]


@pytest.fixture(scope="module")
def ray_cluster(service):
    """A local Ray instance (one CPU) whose workers see the service's URL and key."""
    ray = pytest.importorskip("ray")
    env = {"REGIME_W_URL": service.url, "REGIME_W_API_KEY": service.api_key, "REGIME_W_COALESCE_MS": "0"}
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def test_verl_remote_manager_builds_and_scores_in_ray_actors(ray_cluster, tiny_model_dir, service):
    """verl 0.9.1's ``remote`` reward manager, built by ``load_reward_manager``: it starts Ray actors
    holding our (pickled) function and scores every sample of a batch in them."""
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_manager.remote import RemoteRewardManager
    from verl.trainer.ppo.reward import load_reward_manager

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = reward_manager_config("remote", "compute_score")
    config.reward.num_workers = 1
    manager = load_reward_manager(config, tokenizer)
    assert isinstance(manager, RemoteRewardManager)
    data = batch(tokenizer)
    outputs = manager.loop.run_until_complete(asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(4))))
    assert [o["reward_extra_info"]["correctness"] for o in outputs] == [1.0, 0.0, 1.0, 0.0]
    scores = [o["reward_score"] for o in outputs]
    assert scores[0] > scores[1] and scores[2] > scores[3]


@pytest.fixture(scope="module")
def rate_limited(tiny_model_dir):
    """verl 0.9.1's ``rate_limited`` manager as docs/integrations.md sets it up: ``max_concurrent`` at
    least a worker's share of a batch (its default, 1, sends the samples one by one), ``timeout`` above
    the client's patience. Its limits are class-wide, set by the first instance: one per module."""
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_manager.limited import RateLimitedRewardManager
    from verl.trainer.ppo.reward import load_reward_manager

    config = reward_manager_config("rate_limited", "compute_score_async")
    config.reward.max_concurrent = 256
    config.reward.timeout = 1000.0
    manager = load_reward_manager(config, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert isinstance(manager, RateLimitedRewardManager) and manager._max_concurrent == 256
    return manager


def test_rate_limited_with_the_documented_settings_merges_a_batch(rate_limited, tiny_model_dir, service):
    data = batch(rate_limited.tokenizer)
    sent = []
    for _ in range(3):  # as the reward loop does: every sample of the worker's share at once
        before = requests_seen(service)
        result = rate_limited(data, return_dict=True)
        sent.append(requests_seen(service) - before)
    assert result["reward_extra_info"]["correctness"] == [1.0, 0.0, 1.0, 0.0]
    assert "error" not in result["reward_extra_info"]
    assert sent[-1] == 1, f"{sent} HTTP requests for three batches of {len(data)} responses"


def test_an_outage_under_rate_limited_fails_the_step_not_a_zero(rate_limited, monkeypatch):
    """``rate_limited`` catches ``Exception`` around the function and scores 0.0; an outage past the
    client's patience reaches verl as ``RewardFailed`` (a ``BaseException``) and fails the call."""
    from tests.support.servers import free_port

    monkeypatch.setenv("REGIME_W_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("REGIME_W_PATIENCE_S", "0.5")
    verl_reward.reset()
    data = batch(rate_limited.tokenizer)
    with pytest.raises(RewardFailed, match="could not reach the reward service") as raised:
        rate_limited(data, return_dict=True)
    assert raised.value.__cause__ is not None
