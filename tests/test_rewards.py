"""RegimeWReward as TRL calls it, against the real flaky (here: well-behaved) loopback server."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest

from tests.support.flaky_server import FlakyServer, start_flaky_server
from trainer.configs import RewardServiceArguments
from trainer.reward_client import RewardClient
from trainer.rewards import COMPONENTS, RegimeWReward, completion_text, question_text

Q1 = "Natalia sold 48 clips in April and half as many in May. How many in total?"
Q2 = "Weng earns $12 an hour. How much for 50 minutes?"


@pytest.fixture(scope="module")
def server() -> Iterator[FlakyServer]:
    with start_flaky_server() as srv:
        yield srv


@pytest.fixture
def srv(server: FlakyServer) -> FlakyServer:
    server.reset()
    return server


def toy(text: str) -> dict[str, float]:
    """What the flaky server's toy scorer returns for ``text`` (see tests/support/flaky_server.py)."""
    n = len(text)
    return {"reward": float(n), "s_end": (n % 10) / 10, "s_path": (n % 4) / 4, "s_cf": (n % 2) / 2, "s_wm": (n % 5) / 5}


def grpo_batch() -> tuple[list[str], list[str], dict[str, list]]:
    """Two questions x three generations, laid out the way GRPOTrainer passes them."""
    completions = [
        "48/2 = 24, 48 + 24 = 72. #### 72",
        "The answer is 70",
        "\\boxed{72}",
        "12/60 = 0.2, 0.2 x 50 = 10. #### 10",
        "I think 11",
        "",
    ]
    prompts = [f"<|user|>{Q1}<|end|>"] * 3 + [f"<|user|>{Q2}<|end|>"] * 3
    columns = {"question": [Q1] * 3 + [Q2] * 3, "gold_answer": ["72"] * 3 + ["#### 10"] * 3}
    return prompts, completions, columns


def test_groups_completions_per_question_and_returns_rewards(srv: FlakyServer) -> None:
    prompts, completions, columns = grpo_batch()
    with RegimeWReward(base_url=srv.url) as reward:
        rewards = reward(prompts=prompts, completions=completions, trainer_state=None, **columns)
    assert rewards == [toy(c)["reward"] for c in completions]
    stats = srv.stats()
    assert stats["score_requests"] == 1
    assert stats["items_per_request"] == [2]  # one item per question, three trajectories each
    ids = stats["ids_per_request"][0]
    assert len(set(ids)) == 2
    correctness = [s.correctness for s in reward.last_scores]
    assert correctness == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert reward.__name__ == "regime_w"


def test_interleaved_questions_map_back_to_their_positions(srv: FlakyServer) -> None:
    completions = ["a" * 3, "b" * 5, "c" * 7, "d" * 11]
    questions = [Q1, Q2, Q1, Q2]
    with RegimeWReward(base_url=srv.url) as reward:
        rewards = reward(prompts=questions, completions=completions, question=questions)
    assert rewards == [3.0, 5.0, 7.0, 11.0]
    assert srv.stats()["items_per_request"] == [2]


def test_conversational_prompts_and_completions(srv: FlakyServer) -> None:
    prompts = [[{"role": "user", "content": Q1}]] * 2 + [[{"role": "user", "content": Q2}]]
    completions = [
        [{"role": "assistant", "content": "so 72. #### 72"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "about "}, {"type": "text", "text": "70"}]}],
        [{"role": "assistant", "content": "#### 10"}],
    ]
    with RegimeWReward(base_url=srv.url) as reward:
        rewards = reward(prompts=prompts, completions=completions)  # no question column: from the prompt
    assert rewards == [float(len("so 72. #### 72")), float(len("about 70")), float(len("#### 10"))]
    assert srv.stats()["items_per_request"] == [2]
    assert [s.correctness for s in reward.last_scores] == [None, None, None]  # label-free
    assert question_text(prompts[0]) == Q1 and completion_text(completions[1]) == "about 70"


def test_gold_from_gsm8k_answer_column_ids_and_completion_ids(srv: FlakyServer) -> None:
    completions = ["#### 72", "#### 71"]
    with RegimeWReward(base_url=srv.url) as reward:
        reward(
            prompts=[Q1, Q1],
            completions=completions,
            question=[Q1, Q1],
            answer=["48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72"] * 2,
            id=["gsm8k-train-0", "gsm8k-train-0"],
            completion_ids=[[1, 2, 3], [4, 5, 6, 7, 8]],
        )
    assert [s.correctness for s in reward.last_scores] == [1.0, 0.0]
    assert [s.num_tokens for s in reward.last_scores] == [3, 5]  # counted by the policy's tokenizer
    assert srv.stats()["ids_per_request"] == [["gsm8k-train-0"]]


def test_component_functions_report_the_last_call(srv: FlakyServer) -> None:
    prompts, completions, columns = grpo_batch()
    reward = RegimeWReward(base_url=srv.url)
    components = reward.component_functions()
    assert [f.__name__ for f in components] == list(COMPONENTS) == ["s_end", "s_path", "s_cf", "s_wm"]
    reward(prompts=prompts, completions=completions, **columns)
    for fn in components:
        got = fn(prompts=prompts, completions=completions, **columns)
        assert got == [toy(c)[fn.__name__] for c in completions]
    assert srv.stats()["score_requests"] == 1  # components reuse the main call's scores
    assert reward.last_components["s_wm"] == [toy(c)["s_wm"] for c in completions]
    # Other completions than the last call's: the component scores them instead of going stale.
    fresh = ["x" * 13, "y" * 4]
    assert components[0](prompts=[Q1, Q1], completions=fresh, question=[Q1, Q1]) == [0.3, 0.4]
    assert srv.stats()["score_requests"] == 2
    reward.close()


def test_reward_key_and_return_details(srv: FlakyServer) -> None:
    with RegimeWReward(base_url=srv.url, reward_key="s_wm") as reward:
        assert reward(prompts=[Q1], completions=["abc"], question=[Q1]) == [toy("abc")["s_wm"]]
    with RegimeWReward(base_url=srv.url, return_details=False) as reward:
        assert reward(prompts=[Q1], completions=["abcd"]) == [4.0]
        assert reward.component_functions()[0](prompts=[Q1], completions=["abcd"]) == [None]
    assert srv.stats()["return_details"] == [True, False]
    with pytest.raises(ValueError, match="reward_key"):
        RegimeWReward(base_url=srv.url, reward_key="nope")


def test_outside_trl_and_shared_client(srv: FlakyServer) -> None:
    with RewardClient(srv.url, batch_items=1) as client:
        reward = RegimeWReward(client)
        scores = reward.score([Q1, Q2, Q1], ["#### 72", "#### 9", "#### 7"], ["72", "10", "72"])
        assert [s.correctness for s in scores] == [1.0, 0.0, 0.0]
        assert [s.reward for s in scores] == [7.0, 6.0, 6.0]
        reward.close()  # does not close a client it does not own
        assert client.ready()
    assert srv.stats()["items_per_request"] == [1, 1]  # batch_items=1: one item per request


def test_from_args_and_pickle_round_trip(srv: FlakyServer) -> None:
    args = RewardServiceArguments(reward_url=srv.url, reward_batch_items=4)
    reward = RegimeWReward.from_args(args)
    assert reward(prompts=[Q1], completions=["ab"]) == [2.0]
    clone = pickle.loads(pickle.dumps(reward))
    assert clone(prompts=[Q2], completions=["abc"]) == [3.0]
    assert clone.client.batch_items == 4
    reward.close()
    clone.close()


def test_bad_inputs_are_named() -> None:
    reward = RegimeWReward(base_url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        reward(prompts=[Q1, Q2], completions=["a"])
    with pytest.raises(ValueError, match="'gold_answer' has 1 entries for 2"):
        reward(prompts=[Q1, Q2], completions=["a", "b"], gold_answer=["1"])
    with pytest.raises(ValueError, match="no question text"):
        reward(prompts=[""], completions=["a"])
    with pytest.raises(TypeError, match="completion must be"):
        reward(prompts=[Q1], completions=[42])
    with pytest.raises(ValueError, match="either a client"):
        RegimeWReward(RewardClient("http://127.0.0.1:9"), base_url="http://127.0.0.1:9")
    assert reward(prompts=[], completions=[]) == []


def test_grpo_trainer_logs_regime_w_and_components(srv: FlakyServer, tiny_model_dir, tmp_path) -> None:
    """One real GRPO step on the tiny model: the reward and its components reach TRL's logs."""
    import datasets
    import transformers
    from trl import GRPOConfig, GRPOTrainer

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    data = datasets.Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": Q1}], "question": Q1, "gold_answer": "72"},
            {"prompt": [{"role": "user", "content": Q2}], "question": Q2, "gold_answer": "10"},
        ]
    )
    reward = RegimeWReward(base_url=srv.url)
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        logging_steps=1,
        learning_rate=1e-4,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        reward_weights=[1.0, 0.0, 0.0, 0.0, 0.0],
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward, *reward.component_functions()],
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
    )
    trainer.train()
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    for name in ("regime_w", *COMPONENTS):
        assert f"rewards/{name}/mean" in logged, sorted(logged)
    stats = srv.stats()
    # One generation batch, one request: the component functions reused the main call's scores.
    assert stats["score_requests"] == 1, stats
    assert all(n == 2 for n in stats["items_per_request"])  # two questions per step, grouped
    # The total reward is the regime_w reward alone (components have weight 0).
    assert logged["reward"] == pytest.approx(logged["rewards/regime_w/mean"], rel=1e-5)
    reward.close()


def test_timing_hook_accumulates_wait_and_logs_it_per_call(srv: FlakyServer) -> None:
    """``wait_seconds``/``calls`` count the HTTP scoring calls only; TRL's log_metric gets each call's wait."""
    from trainer.reward_client import RewardServiceHTTPError

    srv.configure(script=[{"sleep": 0.3}])
    prompts, completions, columns = grpo_batch()
    logged: list[tuple[str, float]] = []

    def log_metric(name: str, value: float) -> None:
        logged.append((name, value))

    with RegimeWReward(base_url=srv.url, max_retries=0) as reward:
        assert (reward.wait_seconds, reward.calls) == (0.0, 0)
        reward(prompts=prompts, completions=completions, log_metric=log_metric, **columns)
        assert reward.calls == 1 and reward.wait_seconds >= 0.3
        waits = [v for name, v in logged if name == "regime_w/wait_s"]
        assert len(waits) == 1 and waits[0] == pytest.approx(reward.wait_seconds)

        for fn in reward.component_functions():  # same completions: served from the last call, no HTTP
            fn(prompts=prompts, completions=completions, **columns)
        assert reward.calls == 1

        first = reward.wait_seconds
        reward(prompts=prompts, completions=completions[::-1], **columns)
        assert reward.calls == 2 and reward.wait_seconds > first

        srv.configure(script=[{"status": 400, "code": "bad", "message": "no"}])
        with pytest.raises(RewardServiceHTTPError):
            reward(prompts=prompts, completions=completions, **columns)
        assert reward.calls == 3  # a failed call was waited on too

        reward.reset_timing()
        assert (reward.wait_seconds, reward.calls) == (0.0, 0)
