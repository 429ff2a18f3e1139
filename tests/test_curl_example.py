"""``examples/curl.sh`` against a server that answers 504 / 503 with ``Retry-After`` (issue 22 item 6):
a one-request-at-a-time arm server (llama.cpp behind the ``openai`` backend) makes the service's
generation deadline pass on new questions, and the script gave up on the first 504. It now asks
again after ``Retry-After``, within ``REGIME_W_RETRIES``. The server is the loopback test server
(tests/support/flaky_server.py), scripted per request; it checks the bearer key it is given."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.flaky_server import FlakyServer, free_port
from tests.support.limits import HANG_GUARD_S

CURL_SH = Path(__file__).resolve().parents[1] / "examples" / "curl.sh"
KEY = "curl-example-key-0123456789"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="examples/curl.sh needs curl")


@pytest.fixture
def srv(srv: FlakyServer) -> FlakyServer:
    """The shared flaky server (tests/support/flaky_server.py), asking for this module's key."""
    srv.configure(api_key=KEY, default="ok", script=[])
    return srv


def run_curl(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "REGIME_W_URL": url, "REGIME_W_API_KEY": KEY, **env}
    return subprocess.run(
        ["bash", str(CURL_SH)], env=full, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False
    )


def test_a_504_with_retry_after_is_asked_again_after_it(srv: FlakyServer) -> None:
    srv.configure(script=[{"status": 504, "code": "generation_timeout", "retry_after": 2}, "ok"])
    done = run_curl(srv.url)
    assert done.returncode == 0, done.stderr
    assert '"results"' in done.stdout and "HTTP 504; retry 1/5 in 2 s" in done.stderr
    stats = srv.stats()
    assert stats["actions"] == ["504", "ok"]
    assert stats["arrivals"][1] - stats["arrivals"][0] >= 2.0  # it waited the Retry-After (a lower bound)
    assert stats["authorization"] == [f"Bearer {KEY}"] * 2


def test_503_without_retry_after_backs_off_then_succeeds(srv: FlakyServer) -> None:
    srv.configure(script=[{"status": 503, "code": "overloaded"}, {"status": 503, "code": "overloaded"}, "ok"])
    done = run_curl(srv.url)
    assert done.returncode == 0, done.stderr
    assert "retry 1/5 in 1 s" in done.stderr and "retry 2/5 in 2 s" in done.stderr
    assert srv.stats()["actions"] == ["503", "503", "ok"]


def test_the_retries_are_bounded(srv: FlakyServer) -> None:
    srv.configure(default={"status": 504, "code": "generation_timeout", "retry_after": 0})
    done = run_curl(srv.url, REGIME_W_RETRIES="2")
    assert done.returncode == 22
    assert "giving up after 2 retries" in done.stderr and "generation_timeout" in done.stdout
    assert srv.stats()["actions"] == ["504", "504", "504"]


def test_a_final_error_is_not_retried(srv: FlakyServer) -> None:
    done = run_curl(srv.url, REGIME_W_API_KEY="a-wrong-key-0123456789")
    assert done.returncode == 22 and "HTTP 401" in done.stderr
    assert srv.stats()["actions"] == ["401"]


def test_a_refused_connection_moves_on_to_the_next_url(srv: FlakyServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = run_curl(f"{dead},{srv.url}")
    assert done.returncode == 0, done.stderr
    assert "connection failed (curl exit 7)" in done.stderr and srv.stats()["actions"] == ["ok"]


def test_the_key_is_not_on_the_command_line() -> None:
    text = CURL_SH.read_text()
    assert "--header @-" in text and '<<<"Authorization: Bearer ${REGIME_W_API_KEY}"' in text
    assert '--header "Authorization' not in text and '-H "Authorization' not in text
