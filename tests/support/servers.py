"""Start real servers as subprocesses on free loopback ports, and wait for them.

``running_service(...)`` starts ``regime-w-serve`` (the real CLI, under uvicorn) and yields its
base URL once ``/readyz`` answers 200; the process is stopped (SIGTERM, then SIGKILL) on exit and
its log is attached to any failure.

``live_service`` is THE fixture of a running service (module scope): it starts what the module's
``service_spec`` fixture asks for (default: backend ``hf`` on the tiny model, short arms, an API
key, a cache file). A module changes it by defining its own ``service_spec`` fixture, and runs
against several backends by giving that fixture ``params``::

    @pytest.fixture(scope="module", params=[ServiceSpec("provided"), ServiceSpec("hf")], ids=str)
    def service_spec(request): return request.param
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.limits import HANG_GUARD_S
from tests.support.service_config import small_service_config

DEFAULT_KEY = "live-service-key-0123456789"


_PORT_FLOOR = 20000  # below the kernel's ephemeral range; above the well-known and most registered services
_WORKER_SLICES = 16  # one slice of the port range per xdist worker (gw0..gw15)
_handed_out: set[int] = set()
_rng = random.Random()  # its own generator: a test that seeds `random` must not make two workers agree


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = worker.removeprefix("gw")
    return int(digits) % _WORKER_SLICES if digits.isdigit() else 0


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test is about to start (or for "nothing listens").

    Why not ``bind(("127.0.0.1", 0))``: the kernel picks that port from its ephemeral range, the same range
    it hands every OUTGOING connection its source port from, so between this function returning and the
    server binding, any client connect on the machine (another worker's httpx, Ray, PostgreSQL) may take it
    ("[Errno 98] address already in use", seen in CI). Ports here come from below the ephemeral range,
    where no outgoing connection lands; each xdist worker draws from its own slice, so two workers never
    hand out the same port; and a port is handed out once per process."""
    low, _ = _ephemeral_range()
    if low - _PORT_FLOOR < 4 * _WORKER_SLICES:  # an unusual kernel setting leaves no room: the kernel's pick
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    width = (low - _PORT_FLOOR) // _WORKER_SLICES
    start = _PORT_FLOOR + _worker_index() * width
    for _ in range(4 * width):
        port = start + _rng.randrange(width)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {start}..{start + width - 1}")


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self.api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization`` for this service's key (empty when it runs without auth)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return self.proc.returncode


def wait_until_ready(server: ServerProcess, path: str = "/readyz", timeout: float = HANG_GUARD_S) -> None:
    """Poll ``path`` until it answers 200; a server that exits first fails at once. ``timeout`` is a hang
    guard, never less than ``HANG_GUARD_S``: a busy 2-core machine may take minutes to start a service."""
    timeout = max(timeout, HANG_GUARD_S)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode} before ready:\n{server.log()[-4000:]}")
        try:
            r = httpx.get(server.url + path, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready after {timeout:.0f}s ({last}):\n{server.log()[-4000:]}")


@contextlib.contextmanager
def running_process(
    argv: Sequence[str],
    port: int,
    *,
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
    timeout: float = HANG_GUARD_S,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[ServerProcess]:
    log_file = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)  # noqa: SIM115 - closed below
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(list(argv), stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", Path(log_file.name))
    try:
        wait_until_ready(server, ready_path, timeout)
        yield server
    finally:
        server.stop()
        log_file.close()


@contextlib.contextmanager
def running_service(
    *flags: str,
    env: dict[str, str] | None = None,
    timeout: float = HANG_GUARD_S,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[ServerProcess]:
    """``regime-w-serve FLAGS --port <free>`` as a subprocess; yields once /readyz is 200. A start that lost
    its port to another process between ``free_port`` and the bind is retried on a new port (twice at most)."""
    for attempt in range(3):
        port = free_port()
        argv = [sys.executable, "-m", "reward_service.cli", "--host", "127.0.0.1", "--port", str(port), *flags]
        with contextlib.ExitStack() as stack:
            try:
                server = stack.enter_context(running_process(argv, port, env=env, timeout=timeout, cwd=cwd))
            except RuntimeError as exc:
                if attempt < 2 and "address already in use" in str(exc):
                    continue
                raise
            yield server
            return


@dataclass(frozen=True)
class ServiceSpec:
    """What ``live_service`` starts. ``api_key=None`` serves with ``--insecure-no-auth``."""

    backend: str = "hf"  # "hf" (the tiny model, on the CPU) or "provided" (no model)
    api_key: str | None = DEFAULT_KEY
    max_tokens: int = 12  # every arm's max_tokens in the service's config copy (tiny-model arms are quick)
    env: Mapping[str, str] = field(default_factory=dict)  # more REGIME_W_* settings

    def __str__(self) -> str:
        return self.backend


def service_env(spec: ServiceSpec, tmp: Path, model_dir: Path | None = None) -> dict[str, str]:
    """The ``REGIME_W_*`` environment of ``spec``: files (config copy, cache) under ``tmp``."""
    env = {
        "REGIME_W_BACKEND": spec.backend,
        "REGIME_W_CONFIG_PATH": str(small_service_config(tmp, max_tokens=spec.max_tokens)),
        "REGIME_W_CACHE_PATH": str(tmp / "arms.sqlite3"),
    }
    if spec.backend == "hf":
        if model_dir is None:
            raise ValueError("backend 'hf' needs the tiny model's directory")
        env.update({"REGIME_W_MODEL": str(model_dir), "REGIME_W_DEVICE": "cpu"})
    if spec.api_key is not None:
        env["REGIME_W_API_KEYS"] = spec.api_key
    return {**env, **spec.env}


@contextlib.contextmanager
def start_live_service(
    spec: ServiceSpec, tmp: Path, model_dir: Path | None = None, *, timeout: float = HANG_GUARD_S
) -> Iterator[ServerProcess]:
    """``regime-w-serve`` as ``spec`` says, ready; ``.api_key`` / ``.headers`` name its key."""
    flags = () if spec.api_key is not None else ("--insecure-no-auth",)
    with running_service(*flags, env=service_env(spec, tmp, model_dir), timeout=timeout) as server:
        server.api_key = spec.api_key
        yield server


@pytest.fixture(scope="module")
def service_spec() -> ServiceSpec:
    """The default spec of ``live_service``; override it in a module (see the module docstring)."""
    return ServiceSpec()


@pytest.fixture(scope="module")
def live_service(
    service_spec: ServiceSpec, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A running ``regime-w-serve`` as ``service_spec`` says (one per module and spec)."""
    model_dir = request.getfixturevalue("tiny_model_dir") if service_spec.backend == "hf" else None
    tmp = tmp_path_factory.mktemp(f"live-{service_spec.backend}")
    with start_live_service(service_spec, tmp, model_dir) as server:
        yield server
