"""The wire contract (DESIGN §1): DESIGN's examples validate, malformed bodies fail on the right field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared_schemas import answers_equal, extract_answer, gold_answer, parse_answer
from shared_schemas.wire import (
    API_VERSION,
    MAX_ARM_OUTPUTS,
    MAX_ID_CHARS,
    MAX_ITEMS,
    MAX_QUESTION_CHARS,
    MAX_TEXT_CHARS,
    MAX_TRAJECTORIES,
    ErrorResponse,
    InfoResponse,
    ItemResult,
    OpenRLHFRequest,
    OpenRLHFResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    TrajectoryScore,
    question_sha256,
)
from tests.support.arms import ARMS

REPO = Path(__file__).resolve().parents[1]

# DESIGN §1, verbatim.
DESIGN_REQUEST = """
{
  "items": [
    {
      "id": "gsm8k-train-17",
      "question": "Natalia sold clips to 48 of her friends in April, ...",
      "gold_answer": "#### 72",
      "trajectories": ["<completion 1>", "<completion 2>"],
      "num_tokens": [312, 298],
      "arm_outputs": null
    }
  ],
  "return_details": true
}
"""

DESIGN_RESPONSE = """
{
  "api_version": "1",
  "scorer": {"name": "regime-w", "version": "1.0.0", "config_fingerprint": "sha256:...", "model": "..."},
  "results": [
    {
      "id": "gsm8k-train-17",
      "consensus_answer": "72",
      "arms_from_cache": true,
      "scores": [
        {"reward": 1.43, "correctness": 1.0, "s_end": 0.875, "s_path": 0.81, "s_cf": 0.75,
         "s_wm": 0.83, "length_penalty": 3.12, "final_answer": "72", "format_ok": true}
      ]
    }
  ]
}
"""

# Fields the models add to DESIGN's response example (required by ItemResult).
ADDED_RESULT_FIELDS = {"label_free": False, "token_count_source": "client"}

ARM_NAMES = set(ARMS)


def _item(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "q1",
        "question": "Weng earns $12 an hour. How much for 50 minutes?",
        "gold_answer": "10",
        "trajectories": ["12 / 60 * 50 = 10\n#### 10", "The answer is 12."],
    }
    item.update(overrides)
    return item


def _error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(err["loc"]) for err in exc.value.errors()]


# ---------------------------------------------------------------- requests


def test_design_request_is_accepted_verbatim() -> None:
    request = ScoreRequest.model_validate_json(DESIGN_REQUEST)
    item = request.items[0]
    assert item.id == "gsm8k-train-17"
    assert item.gold_answer == "#### 72" and gold_answer(item.gold_answer) == "72"
    assert item.trajectories == ["<completion 1>", "<completion 2>"]
    assert item.num_tokens == [312, 298]
    assert item.arm_outputs is None
    assert request.return_details is True
    assert json.loads(request.model_dump_json()) == json.loads(DESIGN_REQUEST)


def test_optional_fields_default() -> None:
    request = ScoreRequest.model_validate({"items": [{"id": "a", "question": "q?", "trajectories": ["1"]}]})
    item = request.items[0]
    assert (item.gold_answer, item.num_tokens, item.arm_outputs) == (None, None, None)
    assert request.return_details is True


def test_arm_outputs_accepted_and_repeated_arms_allowed() -> None:
    arms = [{"arm": "cot_sampled", "text": "#### 10"}, {"arm": "cot_sampled", "text": "#### 11"}]
    item = ScoreItem.model_validate(_item(arm_outputs=arms))
    assert [a.arm for a in item.arm_outputs or []] == ["cot_sampled", "cot_sampled"]


@pytest.mark.parametrize(
    ("where", "body"),
    [
        (("return_details_typo",), {"items": [_item()], "return_details_typo": True}),
        (("items", 0, "trajectory"), {"items": [_item(trajectory="x")]}),
        (
            ("items", 0, "arm_outputs", 0, "prompt"),
            {"items": [_item(arm_outputs=[{"arm": "cot_greedy", "text": "#### 1", "prompt": "secret"}])]},
        ),
    ],
)
def test_extra_fields_are_rejected(where: tuple[Any, ...], body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as exc:
        ScoreRequest.model_validate(body)
    assert where in _error_locs(exc)
    assert all(err["type"] == "extra_forbidden" for err in exc.value.errors())


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"items": []}, ("items",)),
        ({"items": [_item(trajectories=[])]}, ("items", 0, "trajectories")),
        ({"items": [_item(id="")]}, ("items", 0, "id")),
        ({"items": [_item(question="")]}, ("items", 0, "question")),
        ({"items": [_item(arm_outputs=[{"arm": "", "text": "x"}])]}, ("items", 0, "arm_outputs", 0, "arm")),
        ({"items": [_item(num_tokens=[1, -1])]}, ("items", 0, "num_tokens", 1)),
        ({"items": [_item(trajectories=[None])]}, ("items", 0, "trajectories", 0)),
        ({"items": [_item(trajectories="a string, not a list")]}, ("items", 0, "trajectories")),
        ({}, ("items",)),
    ],
)
def test_empty_or_malformed_fields_are_rejected(body: dict[str, Any], where: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as exc:
        ScoreRequest.model_validate(body)
    assert where in _error_locs(exc)


@pytest.mark.parametrize("num_tokens", [[10], [10, 20, 30], []])
def test_num_tokens_of_the_wrong_length_is_rejected(num_tokens: list[int]) -> None:
    with pytest.raises(ValidationError) as exc:
        ScoreItem.model_validate(_item(num_tokens=num_tokens))
    message = str(exc.value)
    assert "num_tokens" in message and "trajectories" in message
    assert f"num_tokens has {len(num_tokens)} entries but trajectories has 2" in message


@pytest.mark.parametrize(
    ("item", "where"),
    [
        (_item(id="x" * (MAX_ID_CHARS + 1)), ("id",)),
        (_item(question="q" * (MAX_QUESTION_CHARS + 1)), ("question",)),
        (_item(gold_answer="9" * 1025), ("gold_answer",)),
        (_item(trajectories=["t" * (MAX_TEXT_CHARS + 1)]), ("trajectories", 0)),
        (_item(trajectories=["t"] * (MAX_TRAJECTORIES + 1)), ("trajectories",)),
        (_item(arm_outputs=[{"arm": "cot_greedy", "text": "#### 1"}] * (MAX_ARM_OUTPUTS + 1)), ("arm_outputs",)),
        (_item(arm_outputs=[{"arm": "a" * 129, "text": "#### 1"}]), ("arm_outputs", 0, "arm")),
        (_item(arm_outputs=[{"arm": "cot_greedy", "text": "t" * (MAX_TEXT_CHARS + 1)}]), ("arm_outputs", 0, "text")),
    ],
)
def test_over_long_strings_and_lists_are_rejected(item: dict[str, Any], where: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as exc:
        ScoreItem.model_validate(item)
    assert where in _error_locs(exc)


def test_too_many_items_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        ScoreRequest.model_validate({"items": [_item()] * (MAX_ITEMS + 1)})
    assert ("items",) in _error_locs(exc)


def test_limits_are_accepted_at_the_boundary() -> None:
    item = ScoreItem.model_validate(
        _item(id="x" * MAX_ID_CHARS, trajectories=["t"] * MAX_TRAJECTORIES, num_tokens=[0] * MAX_TRAJECTORIES)
    )
    assert len(item.trajectories) == MAX_TRAJECTORIES


# ---------------------------------------------------------------- responses


def _design_response_with_added_fields() -> dict[str, Any]:
    body = json.loads(DESIGN_RESPONSE)
    for result in body["results"]:
        result.update(ADDED_RESULT_FIELDS)
    return body


def test_design_response_round_trips() -> None:
    body = _design_response_with_added_fields()
    response = ScoreResponse.model_validate(body)
    assert response.api_version == API_VERSION == "1"
    assert response.results[0].scores[0].s_end == 0.875
    dumped = json.loads(response.model_dump_json(exclude_none=True))
    assert dumped == body
    assert ScoreResponse.model_validate_json(response.model_dump_json()) == response


def test_design_response_without_the_added_fields_names_them() -> None:
    with pytest.raises(ValidationError) as exc:
        ScoreResponse.model_validate_json(DESIGN_RESPONSE)
    missing = {err["loc"][-1] for err in exc.value.errors() if err["type"] == "missing"}
    assert missing == set(ADDED_RESULT_FIELDS)


def test_reduced_scores_need_only_reward_and_format() -> None:
    score = TrajectoryScore.model_validate({"reward": -0.03, "format_ok": False})
    assert score.final_answer is None and score.correctness is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_rewards_are_refused(bad: float) -> None:
    # JSON has no NaN: a NaN reward would be sent as null and break every client.
    with pytest.raises(ValidationError):
        TrajectoryScore(reward=bad, format_ok=True)


def test_unknown_token_count_source_is_rejected() -> None:
    body = _design_response_with_added_fields()
    body["results"][0]["token_count_source"] = "guess"
    with pytest.raises(ValidationError) as exc:
        ScoreResponse.model_validate(body)
    assert ("results", 0, "token_count_source") in _error_locs(exc)


def test_error_info_and_openrlhf_models() -> None:
    error = ErrorResponse.model_validate({"error": {"code": "unauthorized", "message": "missing API key"}})
    assert error.error.code == "unauthorized"
    with pytest.raises(ValidationError):
        ErrorResponse.model_validate({"error": {"code": "x"}})
    info = InfoResponse.model_validate(
        {
            "scorer": {"name": "regime-w", "version": "1.0.0", "config_fingerprint": "sha256:ab", "model": "m"},
            "backend": "openai",
            "arms": sorted(ARM_NAMES),
            "limits": {"max_items": 256},
        }
    )
    assert info.api_version == API_VERSION
    request = OpenRLHFRequest.model_validate(
        {"query": ["Q: 1+1?\nA: 2", "Q: 2+2?\nA: 5"], "prompts": ["Q: 1+1?\nA:", "Q: 2+2?\nA:"], "labels": ["2", "4"]}
    )
    assert len(request.query) == 2
    with pytest.raises(ValidationError, match="labels has 1 entries but query has 2"):
        OpenRLHFRequest.model_validate({"query": ["a", "b"], "labels": ["2"]})
    response = OpenRLHFResponse(rewards=[1.0, 0.0], scores=[1.0, 0.0], extra_logs={"s_wm": [0.9, 0.1]})
    assert OpenRLHFResponse.model_validate_json(response.model_dump_json()) == response


def test_json_schema_is_generated() -> None:
    schema = ScoreRequest.model_json_schema()
    item = schema["$defs"]["ScoreItem"]
    assert item["additionalProperties"] is False
    assert item["properties"]["trajectories"]["minItems"] == 1


# ---------------------------------------------------------------- examples/batch.json


def test_example_batch_is_a_realistic_valid_request() -> None:
    request = ScoreRequest.model_validate_json((REPO / "examples" / "batch.json").read_text(encoding="utf-8"))
    assert len(request.items) >= 5
    assert len({item.id for item in request.items}) == len(request.items)
    assert sum(item.gold_answer is None for item in request.items) >= 1
    assert sum(item.num_tokens is not None for item in request.items) >= 1
    any_disagreement = False
    for item in request.items:
        assert 3 <= len(item.trajectories) <= 4
        assert item.arm_outputs is not None
        assert {arm.arm for arm in item.arm_outputs} == ARM_NAMES
        arm_answers = [parse_answer(arm.text) for arm in item.arm_outputs]
        assert all(p.source == "hashes" for p in arm_answers), item.id
        majority = max({p.value for p in arm_answers}, key=[p.value for p in arm_answers].count)
        any_disagreement |= any(p.value != majority for p in arm_answers)
        parsed = [parse_answer(t) for t in item.trajectories]
        if item.gold_answer is not None:
            gold = gold_answer(item.gold_answer)
            assert answers_equal(majority, gold), item.id
            assert any(answers_equal(p.value, gold) for p in parsed), f"{item.id}: no right trajectory"
            assert any(p.value is not None and not answers_equal(p.value, gold) for p in parsed), item.id
        assert all(t.startswith("<think>") for t in item.trajectories)
    assert any_disagreement
    cut_off = [t for item in request.items for t in item.trajectories if "</think>" not in t]
    assert cut_off and all(not parse_answer(t).format_ok for t in cut_off)
    assert extract_answer(request.items[0].trajectories[0]) == "72"


def test_a_result_says_whose_arms_scored_it() -> None:
    """``arms_question_sha256`` (issue 22): optional for older services, a lower-case SHA-256 hex digest,
    and ``question_sha256`` is the hash a client compares it with."""
    assert question_sha256("What is 2 + 2?") == hashlib.sha256(b"What is 2 + 2?").hexdigest()
    assert question_sha256("π = 3.14?") == hashlib.sha256("π = 3.14?".encode()).hexdigest()
    result = {"id": "q", "consensus_answer": "4", "arms_from_cache": False, "scores": [], **ADDED_RESULT_FIELDS}
    assert ItemResult.model_validate(result).arms_question_sha256 is None
    digest = question_sha256("What is 2 + 2?")
    assert ItemResult.model_validate({**result, "arms_question_sha256": digest}).arms_question_sha256 == digest
    for bad in ("abc", digest.upper(), digest + "0"):
        with pytest.raises(ValidationError):
            ItemResult.model_validate({**result, "arms_question_sha256": bad})
