"""``POST /get_reward`` as OpenRLHF calls it: chat-templated prompts, "" / null / numeric labels, big
batches, 0-1 scores, hostile bodies answered 4xx (never 500) on a live ``regime-w-serve`` (hf backend,
tiny model), plus the pure parsing of ``reward_service.openrlhf_compat``."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest

from reward_service.limits import Limits
from reward_service.openrlhf_compat import (
    INSTRUCTION_SUFFIXES,
    CompatError,
    chunk_items,
    normalize_label,
    plan_groups,
    question_from_prompt,
    response_from_query,
)
from reward_service.settings import Settings
from shared_schemas.wire import OpenRLHFRequest
from tests.test_service_hf import metric
from trainer.prompts import INSTRUCTION, PLAIN_TEMPLATE, build_prompt

Q = "Sam has 7 coins and finds 5 more. How many coins does he have?"
USER = f"{Q}\n{INSTRUCTION}"

# The last user turn as each template family writes it (a system turn and an earlier exchange first,
# so "the last user turn" is what is tested, not "the only one").
TEMPLATED = {
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
        f"\n\nHello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{USER}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "deepseek_r1": f"<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>Hello<｜end▁of▁sentence｜><｜User｜>{USER}<｜Assistant｜><think>\n",
    "chatml_qwen": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello"
        f"<|im_end|>\n<|im_start|>user\n{USER}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "mistral": f"<s>[INST] Hi [/INST]Hello</s>[INST] {USER} [/INST]",
    "phi3": f"<|user|>\n{USER}<|end|>\n<|assistant|>\n",
    "plain": PLAIN_TEMPLATE.format(question=Q),
}


# ------------------------------------------------------------------------------------------ pure


def test_the_service_strips_the_trainers_own_instruction():
    assert INSTRUCTION in INSTRUCTION_SUFFIXES


@pytest.mark.parametrize("family", sorted(TEMPLATED))
def test_question_from_the_last_user_turn_of_each_template(family):
    assert question_from_prompt(TEMPLATED[family]) == Q


def test_question_from_the_trainers_prompt_with_a_real_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert question_from_prompt(build_prompt(Q, tokenizer)) == Q


def test_an_untemplated_prompt_is_the_question():
    assert question_from_prompt(f"  {Q}  ") == Q


@pytest.mark.parametrize(
    "end", ["", "<|eot_id|>", "<|im_end|>", "<｜end▁of▁sentence｜>", "</s>", "<|eot_id|><|finetune_right_pad_id|>"]
)
def test_response_is_the_query_minus_prompt_and_end_tokens(end):
    prompt = TEMPLATED["llama3"]
    assert response_from_query(prompt + "7+5 = 12. #### 12" + end, prompt) == "7+5 = 12. #### 12"


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        (12, "12"),
        (12.0, "12"),
        (2.5, "2.5"),
        ("#### 12", "#### 12"),
    ],
)
def test_labels(label, expected):
    assert normalize_label(label, "labels[0]") == expected


def test_a_whole_gsm8k_solution_as_label_is_reduced_to_its_answer():
    solution = "Natalia sold 48/2 = 24 clips in May. " * 40 + "\n#### 72"
    assert len(solution) > 1024
    assert normalize_label(solution, "labels[0]") == "72"


def test_an_unreadable_label_names_the_field():
    with pytest.raises(ValueError, match=r"labels\[3\]"):
        normalize_label("no number here", "labels[3]")


def deployment_limits(**changes: int) -> Limits:
    """The default deployment's limits (the settings' defaults), with ``changes``."""
    return replace(Limits.from_settings(Settings()), **changes)


def test_groups_and_chunks_respect_the_limits():
    prompts = [TEMPLATED["chatml_qwen"]] * 5 + [TEMPLATED["llama3"].replace("7 coins", "8 coins")] * 3
    body = OpenRLHFRequest(
        query=[p + f" #### {i}" for i, p in enumerate(prompts)], prompts=prompts, labels=["12"] * 5 + [None] * 3
    )
    limits = deployment_limits(openrlhf_max_queries=8, max_items=2, max_trajectories=2)
    groups = plan_groups(body, limits)
    assert [(g.question[:12], g.label, g.indices) for g in groups] == [
        ("Sam has 7 co", "12", [0, 1, 2, 3, 4]),
        ("Sam has 8 co", None, [5, 6, 7]),
    ]
    chunks = list(chunk_items(groups, limits))
    assert [[len(i.trajectories) for i in items] for items, _ in chunks] == [[2, 2], [1, 2], [1]]
    assert sorted(i for _, where in chunks for idx in where for i in idx) == list(range(8))
    with pytest.raises(CompatError, match="limit of 7"):
        plan_groups(body, deployment_limits(openrlhf_max_queries=7))


def test_questions_go_through_the_providers_resolution():
    """``/get_reward`` hands every question it reads to ``ArmProvider.resolve`` (the known question a
    wrapped text contains): two wrappings of one question are one group, scored as that question."""
    from reward_service.question_index import QuestionIndex

    question = "Sam has 7 coins and finds 5 more. How many coins does he have?"
    index = QuestionIndex()
    index.add(question)

    def resolve(text: str) -> str:
        match = index.find(text)
        return match.question if match is not None and match.question is not None else text

    prompts = [
        f"<|im_start|>user\n{question}\nLet's think step by step.<|im_end|>\n<|im_start|>assistant\n",
        f"Solve: {question}\nAnswer:",
    ]
    body = OpenRLHFRequest(query=[p + " #### 12" for p in prompts], prompts=prompts, labels=["12", "12"])
    groups = plan_groups(body, deployment_limits(), resolve)
    assert [(g.question, g.indices) for g in groups] == [(question, [0, 1])]
    assert len(plan_groups(body, deployment_limits())) == 2  # without it: two texts, two arm sets


def test_lone_surrogates_and_long_questions_name_their_field():
    body = OpenRLHFRequest(query=["What is 1? #### 1"], prompts=["What is 1?"], metas=[{"question": "a \ud800 b"}])
    with pytest.raises(CompatError, match=r"metas\[0\]\.question: holds a lone UTF-16 surrogate"):
        plan_groups(body, deployment_limits())
    with pytest.raises(ValueError, match="unicode"):  # typed text fields: refused by the wire model itself
        OpenRLHFRequest(query=["\udfff #### 1"], prompts=["What is 1?"])
    long = "q" * 100_001
    with pytest.raises(CompatError, match=r"prompts\[0\] \(the question read from it\): 100001 characters"):
        plan_groups(OpenRLHFRequest(query=[long + " #### 1"], prompts=[long]), deployment_limits())


# ------------------------------------------------------------------------------------ live service


@pytest.fixture(scope="module")
def server(live_service):
    return live_service


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=300) as client:
        yield client


def openrlhf_body(prompt: str, responses: list[str], label):
    body = {"query": [prompt + r for r in responses], "prompts": [prompt] * len(responses)}
    if label != "absent":
        body["labels"] = [label] * len(responses)
    return body


RIGHT, WRONG = "7+5 = 12. The answer is \\boxed{12}.<|eot_id|>", "7+5 = 13. The answer is \\boxed{13}.<|eot_id|>"


def test_labelled_scores_are_correctness_in_0_1(http):
    r = http.post("/get_reward", json=openrlhf_body(TEMPLATED["llama3"], [RIGHT, WRONG], 12))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["scores"] == [1.0, 0.0]
    assert out["extra_logs"]["correctness"] == [1.0, 0.0] and out["extra_logs"]["label_free"] == [0.0, 0.0]
    assert out["rewards"][0] > out["rewards"][1]


@pytest.mark.parametrize("label", ["", None, "absent"])
def test_blank_null_or_missing_label_is_label_free(http, label):
    r = http.post("/get_reward", json=openrlhf_body(TEMPLATED["chatml_qwen"], [RIGHT, WRONG], label))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["extra_logs"]["label_free"] == [1.0, 1.0]
    assert out["scores"] == out["extra_logs"]["s_wm"]
    assert all(0.0 <= s <= 1.0 for s in out["scores"])


def test_precomputed_arms_are_reused_for_a_chat_templated_prompt(http, server):
    question = "Lena has 9 marbles and gives away 4. How many marbles are left?"
    r = http.post("/v1/arms/precompute", json={"questions": [question]})
    assert r.status_code == 200, r.text
    before = metric(server.url, "regime_w_arm_generations_total")
    for family in ("llama3", "deepseek_r1", "chatml_qwen", "mistral"):
        prompt = TEMPLATED[family].replace(Q, question)
        r = http.post("/get_reward", json=openrlhf_body(prompt, ["9-4 = 5. #### 5", "#### 6"], "5"))
        assert r.status_code == 200, r.text
    assert metric(server.url, "regime_w_arm_generations_total") == before


def test_a_batch_of_8192_queries_is_scored_in_chunks(http):
    prompts = [TEMPLATED["phi3"].replace("7 coins", f"{n} coins") for n in range(4)]
    body = {"query": [], "prompts": [], "labels": []}
    for k in range(8192):
        n = k % 4
        body["prompts"].append(prompts[n])
        body["query"].append(prompts[n] + f"{n}+5 = {n + 5 + k % 2}. #### {n + 5 + k % 2}<|end|>")
        body["labels"].append(n + 5)
    r = http.post("/get_reward", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["rewards"]) == len(out["scores"]) == 8192
    assert out["scores"] == [1.0 if k % 2 == 0 else 0.0 for k in range(8192)]
    over = http.post("/get_reward", json={"query": ["x"] * 8193, "prompts": ["y"] * 8193})
    assert over.status_code == 422 and "8192" in over.json()["error"]["message"]


# A lone surrogate is refused where the body is parsed (the message says so) or, past the parser,
# by /get_reward naming the field: either way a 422 saying what is wrong.
@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("surrogate", lambda b: b.update(metas=[{"question": "half \ud800 a pair"}])),
        ("metas[0].question", lambda b: b.update(metas=[{"question": "q" * 100_001}])),
        ("prompts[0]", lambda b: b.update(prompts=["p" * 100_001], query=["p" * 100_001 + " #### 1"])),
        ("surrogate", lambda b: b.update(query=["\udfff #### 1"], prompts=["What is 1?"])),
        ("labels[0]", lambda b: b.update(labels=["no answer in it"])),
    ],
)
def test_hostile_bodies_are_422_and_the_connection_stays_usable(http, name, mutate):
    body = {"query": ["What is 1? #### 1"], "prompts": ["What is 1?"], "labels": ["1"]}
    mutate(body)
    raw = json.dumps(body, ensure_ascii=True).encode()  # lone surrogates travel as \\ud800 escapes
    r = http.post("/get_reward", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert name in r.json()["error"]["message"]
    # the same pooled connection serves the next request
    ok = http.post("/get_reward", json=openrlhf_body(TEMPLATED["plain"], [RIGHT], 12))
    assert ok.status_code == 200, ok.text
