"""Operating the service (issue 22 item 5): settings checked at start, keys rotated with SIGHUP, and
connections that never send a whole request head closed after the header-read timeout.

- a timeout of ``inf``, ``nan``, 0 or below is refused at start: one line naming the variable, exit 2
  (before: ``GENERATION_TIMEOUT_S=inf`` answered 500 with a full queue, ``BACKEND_TIMEOUT_S=inf``
  failed the backend load six times); so is a backend deadline that, with the generation deadline,
  outlasts the clients' patience (the old default 900 s);
- SIGHUP reloads ``API_KEYS_FILE`` (before: it ended the process): new keys accepted, removed keys
  refused; a bad file keeps the keys in use and logs one line without a key;
- half-open connections (half a request line) are closed once ``HEADER_TIMEOUT_S`` has passed, not
  before, while a normal request is served meanwhile (real sockets against ``regime-w-serve``).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reward_service.settings import Settings
from tests.support.limits import wait_for
from tests.support.servers import ServerProcess, free_port, running_service
from trainer.reward_client.settings import DEFAULT_PATIENCE_S

#: hang guards: far above any honest run time of what they wait for
GUARD_S = 120.0
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- settings checked at start


def serve_with(**env: str) -> tuple[int, str]:
    """``regime-w-serve`` with ``REGIME_W_<name>=value`` for each of ``env``: its exit status and stderr.
    A configuration that is accepted starts a server, which the hang guard ends (a failure)."""
    full = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "REGIME_W_INSECURE_NO_AUTH": "true",
        "REGIME_W_BACKEND": "provided",
        "REGIME_W_CACHE_PATH": "none",
        **{f"REGIME_W_{name}": value for name, value in env.items()},
    }
    argv = [sys.executable, "-c", "from reward_service.cli import serve_main; raise SystemExit(serve_main())"]
    try:
        done = subprocess.run(
            [*argv, "--port", str(free_port())], env=full, capture_output=True, text=True, timeout=60, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the service started with {env} (still serving after the 60 s hang guard)")
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GENERATION_TIMEOUT_S", "inf"),
        ("GENERATION_TIMEOUT_S", "nan"),
        ("GENERATION_TIMEOUT_S", "0"),
        ("BACKEND_TIMEOUT_S", "inf"),
        ("BACKEND_TIMEOUT_S", "-5"),
        ("CLIENT_PATIENCE_S", "inf"),
        ("GENERATION_BATCH_WINDOW_MS", "inf"),
        ("BACKEND_LOAD_BACKOFF_S", "nan"),
        ("HEADER_TIMEOUT_S", "inf"),
        ("HEADER_TIMEOUT_S", "0"),
        ("GENERATION_CONCURRENCY", "0"),
    ],
)
def test_a_timeout_that_is_not_finite_and_positive_refuses_the_start(name: str, value: str) -> None:
    code, err = serve_with(**{name: value})
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"regime-w-serve: REGIME_W_{name}: ") and repr(value) in lines[0], lines[0]


def test_a_backend_deadline_past_the_clients_patience_refuses_the_start() -> None:
    code, err = serve_with(BACKEND_TIMEOUT_S="900")  # the old default
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "REGIME_W_BACKEND_TIMEOUT_S (900 s) + REGIME_W_GENERATION_TIMEOUT_S (90 s) exceed" in lines[0], lines[0]
    assert "REGIME_W_CLIENT_PATIENCE_S (600 s)" in lines[0]


def test_the_retired_generation_batch_size_refuses_the_start_naming_its_successors() -> None:
    """GENERATION_BATCH_SIZE meant questions per batch and (hf) rows decoded together: it is two settings now."""
    code, err = serve_with(GENERATION_BATCH_SIZE="32")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("regime-w-serve: REGIME_W_GENERATION_BATCH_SIZE: "), lines[0]
    assert "REGIME_W_ARM_BATCH_QUESTIONS" in lines[0] and "REGIME_W_GENERATION_BATCH_ROWS" in lines[0], lines[0]


def test_the_default_deadlines_fit_in_the_reward_clients_patience() -> None:
    assert Settings.model_fields["client_patience_s"].default == DEFAULT_PATIENCE_S
    settings = Settings(insecure_no_auth=True)
    settings.check_deadlines()  # raises when they do not
    assert settings.backend_timeout_s + settings.generation_timeout_s <= DEFAULT_PATIENCE_S
    assert settings.backend_timeout_s >= settings.generation_timeout_s  # a batch may outlive a request's wait


# ----------------------------------------------------------------- keys rotated with SIGHUP

KEY_A = "rotation-key-a-0123456789"
KEY_B = "rotation-key-b-0123456789"
SHORT = "k3y-x9"  # breaks the 16-character rule


def status_with(server: ServerProcess, key: str) -> int:
    return httpx.get(server.url + "/v1/info", headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code


def test_sighup_reloads_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# rotation test\n{KEY_A}\n")
    env = {"REGIME_W_API_KEYS_FILE": str(key_file), "REGIME_W_BACKEND": "provided", "REGIME_W_CACHE_PATH": "none"}
    with running_service(env=env, timeout=GUARD_S) as server:
        assert status_with(server, KEY_A) == 200 and status_with(server, KEY_B) == 401

        key_file.write_text(f"{KEY_B}\n")  # rotate: B in, A out
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: status_with(server, KEY_B) == 200, "the new key accepted after SIGHUP")
        assert status_with(server, KEY_A) == 401
        assert server.proc.poll() is None

        for bad in (f"{KEY_A} # inline comment\n", f"{SHORT}\n", "# every key removed\n"):
            key_file.write_text(bad)
            lines_before = server.log().count("API keys not reloaded")
            server.proc.send_signal(signal.SIGHUP)
            wait_for(lambda n=lines_before: server.log().count("API keys not reloaded") > n, "the refusal logged")
            assert server.proc.poll() is None
            assert status_with(server, KEY_B) == 200 and status_with(server, KEY_A) == 401  # the keys in use stay
        log = server.log()
    refusals = [line for line in log.splitlines() if "API keys not reloaded" in line]
    assert len(refusals) == 3, refusals
    assert all("the 1 key(s) in use are kept" in line for line in refusals), refusals
    assert "line 1" in refusals[0] and "holds no key" in refusals[2]
    assert KEY_A not in log and KEY_B not in log and SHORT not in log


# ----------------------------------------------------------------- header-read timeout

HEADER_TIMEOUT_S = 2.0
HALF_OPEN = 50


def test_half_open_connections_are_closed_after_the_header_timeout_and_others_are_served() -> None:
    env = {
        "REGIME_W_INSECURE_NO_AUTH": "true",
        "REGIME_W_BACKEND": "provided",
        "REGIME_W_CACHE_PATH": "none",
        "REGIME_W_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    }
    with running_service("--insecure-no-auth", env=env, timeout=GUARD_S) as server:
        port = int(server.url.rsplit(":", 1)[1])
        selector = selectors.DefaultSelector()
        opened: dict[socket.socket, float] = {}
        for _ in range(HALF_OPEN):
            sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
            sock.sendall(b"GET /healthz HT")  # half a request line, then nothing
            opened[sock] = time.monotonic()
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        # a normal request meanwhile, on a connection of its own
        assert httpx.get(server.url + "/healthz", timeout=GUARD_S).status_code == 200
        closed_after: list[float] = []
        received = dict.fromkeys(opened, b"")
        guard = time.monotonic() + GUARD_S
        while selector.get_map() and time.monotonic() < guard:
            for key, _ in selector.select(timeout=1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    while chunk := sock.recv(4096):
                        received[sock] += chunk
                except BlockingIOError:
                    continue  # more to come: the close is still ahead
                except ConnectionResetError:
                    pass
                closed_after.append(time.monotonic() - opened[sock])
                selector.unregister(sock)
                sock.close()
        answers = list(received.values())
        left = len(selector.get_map())
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        assert left == 0, f"{left} of {HALF_OPEN} half-open connections still open after the {GUARD_S:.0f} s guard"
        assert min(closed_after) >= HEADER_TIMEOUT_S - 0.05, min(closed_after)  # not before the timeout
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:3]
        assert httpx.get(server.url + "/healthz", timeout=GUARD_S).status_code == 200
