"""The test harness's port choice: a CI run once lost a service start to "[Errno 98] address already in use"
because the port came from the kernel's ephemeral range, where any outgoing connection may take it."""

from __future__ import annotations

import socket

import httpx

from tests.support import servers


def test_ports_are_below_the_ephemeral_range_and_never_handed_out_twice():
    low, _ = servers._ephemeral_range()
    ports = [servers.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(servers._PORT_FLOOR <= p < low for p in ports)


def test_two_workers_draw_from_disjoint_slices(monkeypatch):
    drawn = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        drawn[worker] = {servers.free_port() for _ in range(50)}
    assert max(drawn["gw0"]) < min(drawn["gw1"])


def test_a_port_someone_listens_on_is_skipped(monkeypatch):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", servers.free_port()))
    holder.listen()
    taken = holder.getsockname()[1]
    servers._handed_out.discard(taken)  # only the listener now says "taken"
    try:
        assert not servers._bindable(taken)
        real_randrange = servers._rng.randrange
        offsets = iter([taken - _slice_start()] * 2)  # the draw lands on the taken port twice, then draws freely
        monkeypatch.setattr(servers._rng, "randrange", lambda width: next(offsets, None) or real_randrange(width))
        port = servers.free_port()
        assert port != taken and servers._bindable(port)
    finally:
        holder.close()


def test_a_service_start_that_loses_its_port_is_retried_on_another(monkeypatch):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", servers.free_port()))
    holder.listen()
    taken = holder.getsockname()[1]
    real_free_port = servers.free_port
    handed = iter([taken])  # the first start gets a port another process took after the choice
    monkeypatch.setattr(servers, "free_port", lambda: next(handed, None) or real_free_port())
    env = {"REGIME_W_CACHE_PATH": "none"}
    try:
        with servers.running_service("--backend", "provided", "--insecure-no-auth", env=env) as server:
            assert not server.url.endswith(f":{taken}")
            assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
    finally:
        holder.close()


def _slice_start() -> int:
    low, _ = servers._ephemeral_range()
    return servers._PORT_FLOOR + servers._worker_index() * ((low - servers._PORT_FLOOR) // servers._WORKER_SLICES)


def test_the_toy_loops_service_start_that_loses_its_port_is_retried(monkeypatch, tmp_path):
    from experiments import toy_loop

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", servers.free_port()))
    holder.listen()
    taken = holder.getsockname()[1]
    handed = iter([taken])
    monkeypatch.setattr(toy_loop, "free_port", lambda: next(handed, None) or servers.free_port())
    said: list[str] = []
    flags = ("--backend", "provided", "--cache-path", "none")
    try:
        with toy_loop.reward_service(*flags, log_path=tmp_path / "service.log", say=said.append) as (url, _key):
            assert not url.endswith(f":{taken}")
            assert httpx.get(url + "/readyz", timeout=30).status_code == 200
    finally:
        holder.close()
    assert any(f"port {taken} was taken" in line for line in said)
