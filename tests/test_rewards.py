"""The TRL reward functions as TRL calls them: ``RegimeWReward`` / ``AsyncRegimeWReward`` against the
flaky (here: well-behaved) loopback server for exact request shapes, the controls, and a real
``GRPOTrainer`` run (tiny model, conversational data set, 2 steps) against a live ``regime-w-serve``."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from tests.support.flaky_server import FlakyServer
from trainer.configs import RewardServiceArguments
from trainer.reward_client import RewardClient
from trainer.rewards import (
    COMPONENTS,
    AsyncRegimeWReward,
    CorrectnessReward,
    MajorityReward,
    RegimeWReward,
    build_reward_functions,
    completion_text,
    question_text,
)

Q1 = "Natalia sold 48 clips in April and half as many in May. How many in total?"
Q2 = "Weng earns $12 an hour. How much for 50 minutes?"


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


def test_reward_key_and_return_details(srv: FlakyServer) -> None:
    with RegimeWReward(base_url=srv.url, reward_key="s_wm") as reward:
        assert reward(prompts=[Q1], completions=["abc"], question=[Q1]) == [toy("abc")["s_wm"]]
    with RegimeWReward(base_url=srv.url, return_details=False) as reward:
        assert reward(prompts=[Q1], completions=["abcd"]) == [4.0]
        assert reward.last_scores[0].s_wm is None
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

        first = reward.wait_seconds
        reward(prompts=prompts, completions=completions[::-1], **columns)
        assert reward.calls == 2 and reward.wait_seconds > first

        srv.configure(script=[{"status": 400, "code": "bad", "message": "no"}])
        with pytest.raises(RewardServiceHTTPError):
            reward(prompts=prompts, completions=completions, **columns)
        assert reward.calls == 3  # a failed call was waited on too

        reward.reset_timing()
        assert (reward.wait_seconds, reward.calls) == (0.0, 0)


# ------------------------------------------------------------------ what TRL 1.16 passes, and logs


def test_reasoning_content_is_sent_in_front_of_the_answer(srv: FlakyServer) -> None:
    """TRL's parse_response splits a reasoning model's output into reasoning_content and content."""
    turn = {"role": "assistant", "reasoning_content": "48/2 = 24. 48 + 24 = 72.", "content": "#### 72"}
    sent = "<think>\n48/2 = 24. 48 + 24 = 72.\n</think>\n\n#### 72"
    assert completion_text([turn]) == sent
    with RegimeWReward(base_url=srv.url) as reward:
        rewards = reward(prompts=[[{"role": "user", "content": Q1}]], completions=[[turn]], gold_answer=["72"])
    assert rewards == [float(len(sent))]  # the toy scorer's reward is the length of what it received
    assert reward.last_scores[0].correctness == 1.0


def test_components_go_to_log_metric(srv: FlakyServer) -> None:
    prompts, completions, columns = grpo_batch()
    logged: dict[str, float] = {}
    extra: dict[str, list] = {}
    with RegimeWReward(base_url=srv.url) as reward:
        reward(
            prompts=prompts,
            completions=completions,
            log_metric=logged.__setitem__,
            log_extra=extra.__setitem__,
            **columns,
        )
    for name in COMPONENTS:
        assert logged[f"regime_w/{name}"] == pytest.approx(sum(toy(c)[name] for c in completions) / 6)
    assert logged["regime_w/correctness"] == pytest.approx(3 / 6)
    assert logged["regime_w/http_calls"] == 1.0 and logged["regime_w/wait_s"] > 0
    assert len(extra["final_answer"]) == 6


def test_label_free_leaves_the_gold_out(srv: FlakyServer) -> None:
    prompts, completions, columns = grpo_batch()
    args = RewardServiceArguments(reward_url=srv.url, label_free=True)
    [reward] = build_reward_functions(args, use_async=False)
    with reward:
        reward(prompts=prompts, completions=completions, **columns)
    assert [s.correctness for s in reward.last_scores] == [None] * 6


def test_async_reward_is_what_trl_awaits(srv: FlakyServer) -> None:
    from trl.trainer.utils import is_async_callable

    prompts, completions, columns = grpo_batch()
    reward = AsyncRegimeWReward(base_url=srv.url)
    assert is_async_callable(reward) and not is_async_callable(RegimeWReward(base_url=srv.url))

    async def twice() -> tuple[list, list]:
        a = await reward(prompts=prompts, completions=completions, **columns)
        scores = await reward.score([Q1], ["#### 72"], ["72"])
        await reward.aclose()
        return a, scores

    rewards, scores = asyncio.run(twice())
    assert rewards == [toy(c)["reward"] for c in completions] and scores[0].correctness == 1.0
    assert reward.calls == 2 and srv.stats()["items_per_request"] == [2, 1]
    clone = pickle.loads(pickle.dumps(AsyncRegimeWReward.from_args(RewardServiceArguments(reward_url=srv.url))))
    assert asyncio.run(clone(prompts=[Q1], completions=["abc"])) == [3.0]


def test_controls_need_no_service() -> None:
    prompts = [Q1] * 4 + [Q2] * 2
    completions = ["#### 72", "\\boxed{72}", "#### 70", "no answer", "#### 10", "#### 9"]
    columns = {"question": prompts, "gold_answer": ["72"] * 4 + ["10"] * 2}
    assert CorrectnessReward()(prompts=prompts, completions=completions, **columns) == [1, 1, 0, 0, 1, 0]
    # Q1's vote: 72 twice wins; Q2: a tie, every readable answer is a mode
    assert MajorityReward()(prompts=prompts, completions=completions, question=prompts) == [1, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="needs a gold answer"):
        CorrectnessReward()(prompts=[Q1], completions=["#### 1"])
    assert [
        f.__name__
        for mode in ("correctness", "majority")
        for f in build_reward_functions(RewardServiceArguments(reward=mode))
    ] == ["correctness", "majority"]


def test_a_real_grpo_run_against_regime_w_serve(live_service, tiny_model_dir, tmp_path) -> None:
    """TRL's GRPOTrainer, a conversational data set, two steps, the async reward, a live service."""
    import datasets
    import httpx
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
    reward = AsyncRegimeWReward(base_url=live_service.url, api_key=live_service.api_key)
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-4,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        seed=0,
    )
    before = httpx.get(live_service.url + "/metrics").text
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward], args=config, train_dataset=data, processing_class=tokenizer
    )
    trainer.train()
    reward.close()
    steps = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(steps) == 2
    for entry in steps:
        for name in (*COMPONENTS, "correctness", "wait_s", "http_calls"):
            assert f"regime_w/{name}" in entry, sorted(entry)
        assert entry["regime_w/http_calls"] == 1.0  # one HTTP request per step: both questions in it
        assert entry["reward"] == pytest.approx(entry["rewards/regime_w/mean"], rel=1e-5)
    assert reward.calls == 2
    after = httpx.get(live_service.url + "/metrics").text

    def scored(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("regime_w_trajectories_scored_total")
        )

    assert scored(after) - scored(before) == 8  # 2 steps x 2 questions x 2 generations


def test_question_text_is_the_raw_question() -> None:
    """What TRL passes as ``prompts`` when the data set has no ``question`` column: the question is read back."""
    from trainer.prompts import INSTRUCTION, build_messages

    assert question_text(build_messages(Q1)) == Q1
    assert question_text([{"role": "system", "content": "Be brief."}, *build_messages(Q2)]) == Q2
    assert question_text(f"<|user|>{Q1}\n{INSTRUCTION}<|end|>\n<|assistant|>") == Q1
    assert question_text(f"<|im_start|>user\n{Q2}\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n") == Q2
    assert question_text(f"Question: {Q1}\nAnswer:") == Q1
    assert question_text(Q2) == Q2


@pytest.mark.parametrize("style", ["conversational", "plain"])
def test_grpo_without_a_question_column_hits_the_precomputed_arms(live_service, tiny_model_dir, tmp_path, style):
    """TRL's GRPOTrainer on prompts built by the trainer (instruction appended; chat-templated string
    or conversational), no ``question`` column, after ``/v1/arms/precompute`` of the raw questions:
    the service generates no arm text."""
    import datasets
    import httpx
    import transformers
    from trl import GRPOConfig, GRPOTrainer

    from trainer.prompts import build_messages, build_prompt

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    questions = [f"{Q1} ({style})", f"{Q2} ({style})"]  # not cached by another test of this module
    build = (lambda q: build_messages(q)) if style == "conversational" else (lambda q: build_prompt(q, tokenizer))
    data = datasets.Dataset.from_list([{"prompt": build(q), "gold_answer": g} for q, g in zip(questions, ["72", "10"])])
    with RewardClient(live_service.url, api_key=live_service.api_key) as client:
        client.precompute(questions)

    def generated() -> float:
        text = httpx.get(live_service.url + "/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("regime_w_arm_generations_total")
        )

    reward = AsyncRegimeWReward(base_url=live_service.url, api_key=live_service.api_key)
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-4,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        seed=0,
    )
    before = generated()
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward], args=config, train_dataset=data, processing_class=tokenizer
    )
    trainer.train()
    reward.close()
    assert reward.calls == 1 and len(reward.last_scores) == 4
    assert generated() == before  # every question found its precomputed arms
