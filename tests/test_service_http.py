"""The reward service over HTTP. The routes, validation, auth and error bodies are tested in
process (``create_app`` behind ``httpx.ASGITransport``); what the server itself does (startup flags,
keys from a file, its log, streamed bodies, settings from the environment) is tested against
``regime-w-serve`` under uvicorn on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reward_service.settings import Settings
from tests.support.arms import ARMS
from tests.support.inprocess import InProcessService
from tests.support.servers import free_port, running_service

KEY = "test-key-0123456789abcdef"
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
RIGHT = "<think>In May she sold 48/2 = 24. Total 48+24 = 72.</think>\nNatalia sold 72 clips. #### 72"
WRONG = "<think>May: 48/2 = 24. Total 48+24 = 62.</think>\nThe answer is 62."
ARM_TEXT = "April: 48. May: 48/2 = 24.\nTotal: 48 + 24 = 72.\n#### 72"
SECRET_MARKER = "ARM-TEXT-MUST-NOT-LEAK-7f3a"


def arm_outputs(text: str = ARM_TEXT) -> list[dict[str, str]]:
    return [{"arm": a, "text": text + ("" if i else f"\n{SECRET_MARKER}")} for i, a in enumerate(ARMS)]


def item(**overrides):
    base = {
        "id": "gsm8k-train-0",
        "question": QUESTION,
        "gold_answer": "#### 72",
        "trajectories": [RIGHT, WRONG],
        "num_tokens": [30, 28],
        "arm_outputs": arm_outputs(),
    }
    base.update(overrides)
    return base


SERVICE_ENV = {
    "REGIME_W_API_KEYS": f"{KEY},second-key-abcdefabcdef",
    "REGIME_W_CACHE_PATH": "none",
    "REGIME_W_MAX_BODY_BYTES": str(8 * 1024 * 1024),
    "REGIME_W_BACKEND": "provided",
}


@pytest.fixture(scope="module")
def client():
    """The app in process, with the key; ``anonymous=True`` sends a request without it."""
    settings = Settings(
        api_keys=f"{KEY},second-key-abcdefabcdef", cache_path="none", backend="provided", max_body_bytes=8 * 1024 * 1024
    )
    with InProcessService(settings, headers={"Authorization": f"Bearer {KEY}"}) as service:
        yield service


@pytest.fixture(scope="module")
def provided_server():
    """regime-w-serve under uvicorn, for what the server itself does."""
    with running_service(env=SERVICE_ENV, timeout=60) as server:
        yield server


@pytest.fixture()
def real_client(provided_server):
    with httpx.Client(base_url=provided_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
        yield c


def assert_error(r: httpx.Response, status: int, code: str | None = None, mentions: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body
    if mentions:
        assert mentions in body["error"]["message"], body
    return body


def test_score_batch_with_arm_outputs(client):
    r = client.post("/v1/score", json={"items": [item(), item(id="label-free", gold_answer=None)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["api_version"] == "1"
    assert body["scorer"]["name"] == "regime-w"
    assert body["scorer"]["config_fingerprint"].startswith("sha256:")
    first, free = body["results"]
    assert first["id"] == "gsm8k-train-0" and first["consensus_answer"] == "72"
    assert first["arms_from_cache"] is False and first["label_free"] is False
    assert first["token_count_source"] == "client"
    right, wrong = first["scores"]
    assert right["final_answer"] == "72" and right["correctness"] == 1.0 and right["format_ok"] is True
    assert wrong["final_answer"] == "62" and wrong["correctness"] == 0.0
    assert right["s_end"] == 1.0 and wrong["s_end"] == 0.0
    assert right["reward"] > wrong["reward"]
    assert right["length_penalty"] == pytest.approx(0.30)
    # label-free: correctness left out and said so
    assert free["label_free"] is True and free["scores"][0]["correctness"] is None
    assert free["scores"][0]["reward"] < right["reward"]
    assert SECRET_MARKER not in r.text


def test_return_details_false_gives_rewards_only(client):
    r = client.post("/v1/score", json={"items": [item()], "return_details": False})
    assert r.status_code == 200, r.text
    score = r.json()["results"][0]["scores"][0]
    assert score["reward"] is not None and score["s_wm"] is None and score["final_answer"] == "72"


def test_whitespace_token_counts_without_tokenizer(client):
    r = client.post("/v1/score", json={"items": [item(num_tokens=None)]})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["token_count_source"] == "whitespace"
    assert result["scores"][0]["num_tokens"] == len(RIGHT.split())


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {KEY}"}])
def test_missing_or_wrong_key_is_401(client, headers):
    r = client.post("/v1/score", json={"items": [item()]}, headers=headers, anonymous=True)
    assert_error(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate") == "Bearer"


def test_second_key_works(client):
    r = client.post("/v1/score", json={"items": [item()]}, headers={"Authorization": "Bearer second-key-abcdefabcdef"})
    assert r.status_code == 200, r.text


def test_health_and_metrics_need_no_key(client):
    assert client.get("/healthz", anonymous=True).json() == {"status": "ok"}
    assert client.get("/readyz", anonymous=True).status_code == 200
    metrics = client.get("/metrics", anonymous=True).text
    assert "regime_w_requests_total" in metrics


def test_info_lists_arm_names_not_prompts(client):
    r = client.get("/v1/info")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["arms"] == ARMS and info["backend"] == "provided"
    assert info["limits"]["max_body_bytes"] == 8 * 1024 * 1024
    from reward_service.regime_w.config import default_config

    for spec in default_config().arms:
        assert spec.instruction.split("{question}")[0].strip()[:40] not in r.text
        if spec.system:
            assert spec.system[:40] not in r.text


def test_openapi_document_is_served(client):
    doc = client.get("/openapi.json", anonymous=True).json()
    assert "/v1/score" in doc["paths"] and "/get_reward" in doc["paths"]


def test_malformed_json_is_422(client):
    r = client.post("/v1/score", content=b'{"items": [', headers={"Content-Type": "application/json"})
    assert_error(r, 422, "invalid_request", "JSON")


def test_wrong_types_name_the_field(client):
    r = client.post("/v1/score", json={"items": [item(trajectories="not a list")]})
    assert_error(r, 422, "invalid_request", "items[0].trajectories")


def test_empty_trajectory_list_is_422(client):
    r = client.post("/v1/score", json={"items": [item(trajectories=[], num_tokens=None)]})
    assert_error(r, 422, "invalid_request", "items[0].trajectories")


def test_extra_field_is_422(client):
    r = client.post("/v1/score", json={"items": [item(surprise=1)]})
    assert_error(r, 422, "invalid_request", "surprise")


def test_num_tokens_length_mismatch_is_422(client):
    r = client.post("/v1/score", json={"items": [item(num_tokens=[1])]})
    assert_error(r, 422, "invalid_request", "num_tokens")


def test_gold_answer_without_a_number_is_422(client):
    r = client.post("/v1/score", json={"items": [item(gold_answer="seventy-two")]})
    assert_error(r, 422, "invalid_request", "items[0].gold_answer")


def test_unknown_arm_is_422_naming_it(client):
    bad = arm_outputs() + [{"arm": "no_such_arm", "text": "#### 1"}]
    r = client.post("/v1/score", json={"items": [item(arm_outputs=bad)]})
    assert_error(r, 422, "invalid_request", "no_such_arm")


def test_missing_arm_outputs_with_provided_backend_is_400(client):
    r = client.post("/v1/score", json={"items": [item(arm_outputs=None)]})
    body = assert_error(r, 400, "arms_unavailable", "items[0].arm_outputs")
    assert "provided" in body["error"]["message"]


def test_get_reward_with_provided_backend_is_a_clear_4xx(client):
    r = client.post("/get_reward", json={"query": ["Q: 1+1? A: 2"], "prompts": ["Q: 1+1? A:"], "labels": ["2"]})
    assert_error(r, 400, "arms_unavailable", "provided")


def test_body_over_limit_is_413(real_client):
    big = "x" * (12 * 1024 * 1024)
    r = real_client.post("/v1/score", json={"items": [item(trajectories=[big], num_tokens=None)]})
    assert_error(r, 413, "payload_too_large")


def test_body_over_limit_streamed_without_length_is_413(real_client):
    def chunks():
        for _ in range(12):
            yield b"x" * (1024 * 1024)

    r = real_client.post("/v1/score", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_trajectory_limit_names_the_field():
    env = {"REGIME_W_API_KEYS": KEY, "REGIME_W_MAX_TRAJECTORIES": "2", "REGIME_W_CACHE_PATH": "none"}
    with running_service("--backend", "provided", env=env, timeout=60) as server:
        r = httpx.post(
            server.url + "/v1/score",
            json={"items": [item(trajectories=[RIGHT] * 3, num_tokens=None)]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert_error(r, 422, "invalid_request", "items[0].trajectories")


def test_refuses_to_start_without_a_key(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("REGIME_W_")}
    proc = subprocess.run(
        [sys.executable, "-m", "reward_service.cli", "--port", str(free_port()), "--backend", "provided"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2
    assert "--insecure-no-auth" in proc.stderr


def test_insecure_no_auth_serves_and_warns(tmp_path):
    with running_service("--backend", "provided", "--insecure-no-auth", "--cache-path", "none", timeout=60) as server:
        r = httpx.post(server.url + "/v1/score", json={"items": [item()]})
        assert r.status_code == 200, r.text
        assert "WITHOUT authentication" in server.log()


def test_keys_from_file(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# service keys\nfile-key-1234567890\n\n")
    env = {"REGIME_W_API_KEYS_FILE": str(keys), "REGIME_W_CACHE_PATH": "none"}
    with running_service("--backend", "provided", env=env, timeout=60) as server:
        ok = httpx.post(
            server.url + "/v1/score", json={"items": [item()]}, headers={"Authorization": "Bearer file-key-1234567890"}
        )
        assert ok.status_code == 200, ok.text
        assert httpx.post(server.url + "/v1/score", json={"items": [item()]}).status_code == 401
        assert "file-key-1234567890" not in server.log()


def test_examples_batch_scores(client):
    from pathlib import Path

    batch = json.loads((Path(__file__).resolve().parents[1] / "examples" / "batch.json").read_text())
    r = client.post("/v1/score", json=batch)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(batch["items"]) >= 5
    for res, it in zip(results, batch["items"]):
        assert res["id"] == it["id"] and len(res["scores"]) == len(it["trajectories"])
        for s in res["scores"]:
            for key in ("s_end", "s_path", "s_cf", "s_wm"):
                assert 0.0 <= s[key] <= 1.0


def test_no_arm_text_or_prompt_in_the_log(real_client, provided_server):
    r = real_client.post(
        "/v1/score",
        json={"items": [item(), item(arm_outputs=arm_outputs() + [{"arm": "bogus", "text": SECRET_MARKER}])]},
    )
    assert r.status_code == 422
    assert SECRET_MARKER not in r.text
    real_client.post("/v1/score", json={"items": [item()]})
    log = provided_server.log()
    assert "POST /v1/score" in log  # the log is being read
    assert SECRET_MARKER not in log
    from reward_service.regime_w.config import default_config

    for spec in default_config().arms:
        assert spec.instruction.split("{question}")[0].strip()[:40] not in log


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
item_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values | st.text(max_size=10),
        "question": json_values | st.just(QUESTION),
        "gold_answer": json_values | st.sampled_from(["#### 72", "72", "", "seventy", "1/0", "#### "]),
        "trajectories": json_values | st.lists(st.text(max_size=50), max_size=3),
        "num_tokens": json_values | st.lists(st.integers(-5, 10**8), max_size=3),
        "arm_outputs": json_values
        | st.lists(
            st.fixed_dictionaries({"arm": st.sampled_from(ARMS + ["x"]), "text": st.text(max_size=40)}), max_size=9
        ),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"items": st.lists(item_like, max_size=3) | json_values},
            optional={"return_details": json_values, "extra": json_values},
        ),
    )
)
def test_no_input_yields_a_500(client, body):
    r = client.post("/v1/score", json=body)
    assert r.status_code in {200, 400, 413, 422}, (r.status_code, r.text, body)
    payload = r.json()
    if r.status_code != 200:
        assert set(payload) == {"error"} and payload["error"]["message"]
