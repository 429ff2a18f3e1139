"""Hardening of the HTTP edge (issue 11, items 3, 6, 7, 8): auth before the body, strict JSON and
framing, key rules at start, no unkeyed public bind, no local path in responses, a queue gauge,
and an OpenAPI document that states all of it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reward_service.settings import Settings
from tests.support.arms import ARMS
from tests.support.inprocess import InProcessService
from tests.support.servers import free_port, running_service

KEY = "hardening-key-0123456789abcdef"


def body(**overrides: object) -> dict:
    item = {
        "id": "q",
        "question": "What is 70 + 2?",
        "gold_answer": "72",
        "trajectories": ["70 + 2 = 72\n#### 72"],
        "num_tokens": [8],
        "arm_outputs": [{"arm": a, "text": "70 + 2 = 72\n#### 72"} for a in ARMS],
    }
    item.update(overrides)
    return {"items": [item]}


@pytest.fixture(scope="module")
def client():
    with InProcessService(
        Settings(api_keys=KEY, cache_path="none", backend="provided"), headers={"Authorization": f"Bearer {KEY}"}
    ) as service:
        yield service


@pytest.fixture(scope="module")
def server():
    env = {"REGIME_W_API_KEYS": KEY, "REGIME_W_BACKEND": "provided", "REGIME_W_CACHE_PATH": "none"}
    with running_service(env=env, timeout=60) as srv:
        yield srv


def raw_request(port: int, head: bytes, body: bytes = b"", wait_s: float = 60.0) -> bytes:
    """Send ``head`` and ``body`` on a fresh connection; return what the server answers within ``wait_s``
    (a hang guard: a server that answers returns at once, whatever the machine's load)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head + body)
        answer = b""
        deadline = time.monotonic() + wait_s
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


# ---------------------------------------------------------------- auth before the body (item 3)


def test_keyless_8_mib_body_is_refused_before_it_is_read(server) -> None:
    """The request announces 8 MiB and sends 1 KiB of it: the 401 comes at once, the body never read."""
    port = int(server.url.rsplit(":", 1)[1])
    head = b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8388608\r\n\r\n"
    answer = raw_request(port, head, b"{" + b" " * 1023)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")
    # answered although 8 MiB - 1 KiB of the body never came: it was not waited for (no clock needed)


@pytest.mark.parametrize("content", [b'{"items": [', b"\xff\xfe not json", b'{"items": 1, "items": 2}'])
def test_malformed_body_without_a_key_is_401(client, content: bytes) -> None:
    r = client.post("/v1/score", content=content, headers={"Content-Type": "application/json"}, anonymous=True)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_every_protected_route_is_401_without_a_key(client) -> None:
    for method, path in [
        ("POST", "/v1/score"),
        ("GET", "/v1/info"),
        ("POST", "/v1/arms/precompute"),
        ("POST", "/get_reward"),
        ("GET", "/no/such/route"),
    ]:
        assert client.request(method, path, anonymous=True).status_code == 401, path
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path, anonymous=True).status_code == 200, path


# ---------------------------------------------------------------- strict JSON and framing (item 8)


def test_duplicate_keys_are_422(client) -> None:
    for content in (
        b'{"items": [], "items": [{"id": "q"}]}',
        b'{"items": [{"id": "a", "id": "b", "question": "q", "trajectories": ["t"]}]}',
    ):
        r = client.post("/v1/score", content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "duplicate key" in r.json()["error"]["message"], r.text


def test_lone_surrogate_and_non_utf8_are_422_not_500(client) -> None:
    content = b'{"items": [{"id": "q", "question": "\\ud800 what?", "trajectories": ["t"]}]}'
    r = client.post("/v1/score", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "surrogate" in r.json()["error"]["message"], r.text
    paired = b'{"items": [{"id": "q", "question": "\\ud83d\\ude00 What is 70 + 2?", "trajectories": ["t"]}]}'
    assert client.post("/v1/score", content=paired, headers={"Content-Type": "application/json"}).status_code == 400
    r = client.post("/v1/score", content=b'{"items": "\xff"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "UTF-8" in r.json()["error"]["message"]


def test_content_length_with_transfer_encoding_is_400(server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    payload = b'{"items": []}'
    head = (
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(payload)).encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunked = hex(len(payload))[2:].encode() + b"\r\n" + payload + b"\r\n0\r\n\r\n"
    answer = raw_request(port, head, chunked)
    assert answer.split(b"\r\n", 1)[0] in {b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 400 "}, answer[:300]


# ---------------------------------------------------------------- keys at start (item 7)


def serve(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REGIME_W_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reward_service.cli",
            "--port",
            str(free_port()),
            "--backend",
            "provided",
            "--cache-path",
            "none",
            *flags,
        ],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "keys, problem",
    [
        ("short-key", "is 9 characters long"),
        ("n\u00f6n-ascii-key-0123456789", "not printable ASCII"),
        ("has space key 0123456789", "space"),
    ],
)
def test_bad_keys_refuse_to_start_without_echoing_them(keys: str, problem: str) -> None:
    proc = serve({"REGIME_W_API_KEYS": keys})
    assert proc.returncode == 2 and problem in proc.stderr, proc.stderr
    assert keys not in proc.stderr and "16 to 512 characters" in proc.stderr


def test_inline_comment_in_key_file_refuses_to_start(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# a comment line is fine\nfile-key-1234567890abc  # but not after a key\n")
    proc = serve({"REGIME_W_API_KEYS_FILE": str(keys)})
    assert proc.returncode == 2 and "line 2" in proc.stderr and "inline comment" in proc.stderr, proc.stderr
    assert "file-key-1234567890abc" not in proc.stderr


def test_no_key_on_a_public_address_needs_a_second_flag() -> None:
    proc = serve({}, "--host", "0.0.0.0", "--insecure-no-auth")
    assert proc.returncode == 2 and "not a loopback address" in proc.stderr, proc.stderr
    assert Settings(host="::1", insecure_no_auth=True).check_startable() is None
    Settings(host="0.0.0.0", insecure_no_auth=True, insecure_no_auth_public=True).check_startable()
    with running_service(
        "--backend", "provided", "--cache-path", "none", "--insecure-no-auth", "--insecure-no-auth-public", timeout=60
    ) as srv:
        assert httpx.get(srv.url + "/v1/info").status_code == 200
        assert "WITHOUT authentication" in srv.log()


# ---------------------------------------------------------------- no path out, queue gauge (item 8)


def test_no_local_model_path_in_info_or_scores(live_service, tiny_model_dir) -> None:
    info = httpx.get(live_service.url + "/v1/info", headers=live_service.headers).json()
    scored = httpx.post(
        live_service.url + "/v1/score",
        headers=live_service.headers,
        timeout=120,
        json={"items": [{"id": "q", "question": "What is 2 + 3?", "trajectories": ["#### 5"]}]},
    )
    assert scored.status_code == 200, scored.text
    for text in (str(info), scored.text):
        assert str(tiny_model_dir) not in text and str(Path(tiny_model_dir).parent) not in text
    assert info["scorer"]["model"] == Path(tiny_model_dir).name == scored.json()["scorer"]["model"]
    assert Settings(model_name="arm-8b").public_model_name("/srv/models/x") == "arm-8b"
    assert Settings().public_model_name("deepseek-ai/DeepSeek-R1-Distill-Llama-8B") == (
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    )


def test_queue_depth_gauge(client) -> None:
    metrics = client.get("/metrics", anonymous=True).text
    assert "regime_w_generation_queue_depth 0.0" in metrics


# ---------------------------------------------------------------- the OpenAPI document (item 6)


def test_openapi_states_security_errors_limits_and_text_metrics(client) -> None:
    doc = client.get("/openapi.json", anonymous=True).json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "ErrorResponse" in doc["components"]["schemas"] and "HTTPValidationError" not in doc["components"]["schemas"]
    score = doc["paths"]["/v1/score"]["post"]
    assert score["security"] == [{"HTTPBearer": []}]
    assert set(score["responses"]) == {"200", "400", "401", "413", "422", "502", "503", "504"}
    assert score["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "Retry-After" in score["responses"]["503"]["headers"]
    assert "Retry-After" in score["responses"]["504"]["headers"]
    assert set(doc["paths"]["/v1/info"]["get"]["responses"]) == {"200", "400", "401", "503"}
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    schemas = doc["components"]["schemas"]
    assert schemas["ScoreRequest"]["properties"]["items"]["maxItems"] == 256
    assert schemas["ScoreItem"]["properties"]["trajectories"]["maxItems"] == 256
    assert schemas["ScoreItem"]["properties"]["trajectories"]["items"]["maxLength"] == 100_000
    assert schemas["ArmOutput"]["properties"]["arm"]["enum"] == ARMS


def test_item_limits_are_settings_up_to_the_wire_ceilings() -> None:
    from pydantic import ValidationError

    from shared_schemas.wire import MAX_ITEMS

    assert Settings(max_items=MAX_ITEMS).max_items == MAX_ITEMS
    with pytest.raises(ValidationError):
        Settings(max_items=MAX_ITEMS + 1)
