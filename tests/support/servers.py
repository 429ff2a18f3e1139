"""Start real servers as subprocesses on free loopback ports, and wait for them.

``running_service(...)`` starts ``regime-w-serve`` (the real CLI, under uvicorn) and yields its
base URL once ``/readyz`` answers 200; the process is stopped (SIGTERM, then SIGKILL) on exit and
its log is attached to any failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

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


def wait_until_ready(server: ServerProcess, path: str = "/readyz", timeout: float = 180.0) -> None:
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
    argv: Sequence[str], port: int, *, env: dict[str, str] | None = None, ready_path: str = "/readyz",
    timeout: float = 180.0, cwd: str | os.PathLike[str] | None = None,
) -> Iterator[ServerProcess]:
    log_file = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
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
    *flags: str, env: dict[str, str] | None = None, timeout: float = 180.0,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[ServerProcess]:
    """``regime-w-serve FLAGS --port <free>`` as a subprocess; yields once /readyz is 200."""
    port = free_port()
    argv = [sys.executable, "-m", "reward_service.cli", "--host", "127.0.0.1", "--port", str(port), *flags]
    with running_process(argv, port, env=env, timeout=timeout, cwd=cwd) as server:
        yield server
