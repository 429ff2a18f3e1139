"""The arm store contract, run over both stores: SQLite (a file) and PostgreSQL (the real server,
a fresh database per test). Plus what only one of them has: PostgreSQL unreachable, a broken
pooled connection, an old SQLite file, and ``regime-w-cache`` copying a SQLite cache into
PostgreSQL and checking it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reward_service.arm_cache import ArmCache
from reward_service.cache_cli import main as cache_main
from reward_service.errors import StoreUnavailable
from reward_service.regime_w.scorer import ArmText
from reward_service.store import (
    ArmRow,
    ArmStore,
    PostgresArmStore,
    SqliteArmStore,
    cache_key,
    open_store,
    resolve_cache_url,
)
from tests.support.limits import HANG_GUARD_S
from tests.support.postgres import fresh_database

M, F = "model-a", "fp-1"
Q1 = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
Q2 = "Weng earns $12 an hour for babysitting. Yesterday she did 50 minutes. How much did she earn?"


def arms_of(tag: str) -> tuple[ArmText, ...]:
    return (ArmText(arm="cot_greedy", text=f"{tag} so the answer is 72"), ArmText(arm="reflect", text=f"{tag} é 72"))


def row(question: str, tag: str = "x") -> ArmRow:
    return ArmRow(cache_key(M, F, question), M, F, arms_of(tag), question)


class Opener:
    """Opens stores on one location: a second ``open()`` is another process's view of the same data."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[ArmStore] = []

    def open(self) -> ArmStore:
        store = open_store(self.url)
        assert store is not None
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "sqlite":
        opener = Opener(f"sqlite:///{tmp_path / 'arms.sqlite3'}")
        yield opener
        opener.close()
        return
    with fresh_database() as url:
        opener = Opener(url)
        yield opener
        opener.close()


def test_put_then_get_the_same_payload_and_question(stores: Opener) -> None:
    store = stores.open()
    assert store.get(cache_key(M, F, Q1)) is None
    store.put([row(Q1, "one"), row(Q2, "two")])
    assert store.get(cache_key(M, F, Q1)) == arms_of("one")
    other = stores.open()  # another process sees the committed rows
    got = other.get_many([cache_key(M, F, Q1), cache_key(M, F, Q2), "missing"])
    assert got == {cache_key(M, F, Q1): arms_of("one"), cache_key(M, F, Q2): arms_of("two")}
    assert sorted(other.questions(M, F)) == sorted([Q1, Q2])
    assert other.questions(M, "other-fingerprint") == []


def test_arms_and_their_question_are_written_in_one_transaction(stores: Opener) -> None:
    """Issue 22 item 5: a failure between the arms row and its question row leaves neither."""
    store = stores.open()
    bad = ArmRow(cache_key(M, F, Q2), M, F, arms_of("b"), object())  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - each driver names its own adaptation error
        store.put([row(Q1), bad])
    assert store.get(cache_key(M, F, Q1)) is None
    assert store.get(cache_key(M, F, Q2)) is None
    assert store.questions(M, F) == []
    store.put([row(Q1)])  # the store still works after the rolled-back write
    assert store.questions(M, F) == [Q1]


def test_questions_since_reports_what_other_processes_wrote(stores: Opener) -> None:
    reader, writer = stores.open(), stores.open()
    cursor = reader.question_cursor()
    assert reader.questions_since(M, F, cursor) == ([], cursor)
    writer.put([row(Q1)])
    new, cursor2 = reader.questions_since(M, F, cursor)
    assert new == [Q1] and cursor2 > cursor
    writer.put([ArmRow(cache_key(M, "other", Q2), M, "other", arms_of("o"), Q2)])  # another config
    writer.put_questions([(cache_key(M, F, "not this question"), M, F, "a question whose key does not match")])
    new, cursor3 = reader.questions_since(M, F, cursor2)
    assert new == [] and cursor3 > cursor2
    writer.put([row(Q2)])
    assert reader.questions_since(M, F, cursor3)[0] == [Q2]


def test_claims_lease_heartbeat_release_and_takeover(stores: Opener) -> None:
    a, b = stores.open(), stores.open()
    k1, k2 = cache_key(M, F, Q1), cache_key(M, F, Q2)
    assert sorted(a.claim([k1, k2, k1], "A", 30)) == sorted([k1, k2])
    assert b.claim([k1, k2], "B", 30) == []  # held by a live owner
    assert sorted(a.claim([k1, k2], "A", 30)) == sorted([k1, k2])  # its own claims
    a.put([row(Q1)])  # writing the arms drops the claim, and nobody claims a key that has arms
    assert b.claim([k1], "B", 30) == []
    a.release([k2], "A")
    assert b.claim([k2], "B", 30) == [k2]
    assert a.claim([k2], "A", 30) == []
    b.heartbeat([k2], "B", -1)  # B's lease ran out (B died: no heartbeat came)
    assert a.claim([k2], "A", 0.5) == [k2]
    a.heartbeat([k2], "A", 30)  # renewed past its first lease
    time.sleep(0.7)
    assert b.claim([k2], "B", 30) == []
    b.release([k2], "B")  # releasing another owner's claim does nothing
    assert b.claim([k2], "B", 30) == []


def test_concurrent_claims_give_each_key_to_exactly_one_owner(stores: Opener) -> None:
    keys = [cache_key(M, F, f"question number {i} with enough text") for i in range(60)]
    owners = [f"replica-{i}" for i in range(6)]
    views = {o: stores.open() for o in owners}
    got: dict[str, list[str]] = {}
    barrier = threading.Barrier(len(owners))

    def worker(owner: str) -> None:
        barrier.wait(timeout=HANG_GUARD_S)
        mine: list[str] = []
        for lo in range(0, len(keys), 7):
            mine += views[owner].claim(keys[lo : lo + 7][::-1] if owner.endswith(("1", "3")) else keys, owner, 30)
        got[owner] = mine

    threads = [threading.Thread(target=worker, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    claimed = [k for o in owners for k in set(got[o])]
    assert sorted(claimed) == sorted(keys)  # every key once, by one owner


def test_rows_and_orphans_list_the_store(stores: Opener) -> None:
    store = stores.open()
    store.put([row(Q1, "one"), ArmRow(cache_key(M, F, Q2), M, F, arms_of("two"), None, created=123.0)])
    store.put_questions([(cache_key(M, F, "orphan question text here"), M, F, "orphan question text here")])
    rows = {r.key: r for r in store.rows(batch=1)}
    assert set(rows) == {cache_key(M, F, Q1), cache_key(M, F, Q2)}
    assert rows[cache_key(M, F, Q1)].question == Q1
    assert rows[cache_key(M, F, Q2)].question is None and rows[cache_key(M, F, Q2)].created == 123.0
    assert json.loads(rows[cache_key(M, F, Q1)].payload) == [[a.arm, a.text] for a in arms_of("one")]
    assert store.orphan_questions() == 1


def test_memory_layer_in_front_of_either_store(stores: Opener) -> None:
    cache = ArmCache(stores.open(), memory_items=10)
    layer = cache.store.name if cache.store is not None else ""
    cache.put_arms([row(Q1)])
    assert cache.get(cache_key(M, F, Q1)) == (arms_of("x"), "memory")
    fresh = ArmCache(stores.open(), memory_items=10)
    assert fresh.get(cache_key(M, F, Q1)) == (arms_of("x"), layer)
    assert fresh.get(cache_key(M, F, Q1)) == (arms_of("x"), "memory")
    assert fresh.get_many([cache_key(M, F, Q1), "nope"]) == {cache_key(M, F, Q1): (arms_of("x"), "memory")}


def test_resolve_cache_url_rules() -> None:
    assert resolve_cache_url(None, ".cache/a.sqlite3") == "sqlite:///.cache/a.sqlite3"
    assert resolve_cache_url("postgresql://u@h:5432/d", ".cache/a.sqlite3") == "postgresql://u@h:5432/d"
    assert resolve_cache_url("none", ".cache/a.sqlite3") is None
    assert resolve_cache_url(None, None) is None
    with pytest.raises(ValueError, match="unknown arm cache URL scheme"):
        open_store("mysql://u:secret@h/d")
    try:
        open_store("mysql://u:secret@h/d")
    except ValueError as exc:
        assert "secret" not in str(exc)


def test_sqlite_store_opens_an_old_file_and_refuses_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE arms (key TEXT PRIMARY KEY, model TEXT NOT NULL, fingerprint TEXT NOT NULL, "
        "created REAL NOT NULL, payload TEXT NOT NULL)"
    )
    db.execute("INSERT INTO arms VALUES (?, ?, ?, ?, ?)", (cache_key(M, F, Q1), M, F, 1.0, '[["a", "t"]]'))
    db.commit()
    db.close()
    store = SqliteArmStore(path)
    assert store.get(cache_key(M, F, Q1)) == (ArmText(arm="a", text="t"),)
    assert store.claim([cache_key(M, F, Q2)], "A", 30) == [cache_key(M, F, Q2)]
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="schema version 99"):
        SqliteArmStore(path)


def test_postgres_unreachable_is_store_unavailable_without_the_password() -> None:
    from reward_service.store import PostgresOptions

    with pytest.raises(StoreUnavailable) as err:
        PostgresArmStore("postgresql://postgres:hunter2-secret@127.0.0.1:1/test", PostgresOptions(open_timeout_s=2))
    assert "hunter2" not in err.value.message and "127.0.0.1:1" in err.value.message
    assert err.value.headers["Retry-After"]


def test_postgres_refuses_a_newer_schema_and_survives_killed_connections() -> None:
    import psycopg

    with fresh_database() as url:
        store = PostgresArmStore(url)
        store.put([row(Q1)])
        # the server drops every pooled connection (as a restart does): the store retries once on a new one
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert store.get(cache_key(M, F, Q1)) == arms_of("x")
        # a query error is StoreUnavailable whose message holds nothing of the database's text
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("ALTER TABLE arms RENAME TO arms_gone")
        with pytest.raises(StoreUnavailable) as err:
            store.get(cache_key(M, F, Q1))
        assert "arms" not in err.value.message and "relation" not in err.value.message
        store.close()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("ALTER TABLE arms_gone RENAME TO arms")
            admin.execute("UPDATE arm_store_meta SET version = 99")
        with pytest.raises(ValueError, match="schema version 99"):
            PostgresArmStore(url)


def test_regime_w_cache_copies_sqlite_into_postgres_and_checks_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "arms.sqlite3"
    sqlite_store = SqliteArmStore(src)
    sqlite_store.put([row(Q1, "one"), row(Q2, "two")])
    sqlite_store.put([ArmRow(cache_key(M, F, "no text kept"), M, F, arms_of("old"), None, created=5.0)])
    sqlite_store.close()
    with fresh_database() as url:
        assert cache_main(["copy", f"sqlite:///{src}", url]) == 0
        copied = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert copied["copied"] == 3 and copied["with_question"] == 2
        assert cache_main(["copy", str(src), url]) == 0  # again: idempotent
        pg = PostgresArmStore(url)
        assert pg.get(cache_key(M, F, Q1)) == arms_of("one")
        assert sorted(pg.questions(M, F)) == sorted([Q1, Q2])
        src_rows = {(r.key, r.payload, r.created) for r in SqliteArmStore(src).rows()}
        assert {(r.key, r.payload, r.created) for r in pg.rows()} == src_rows  # same keys, same payloads
        assert cache_main(["check", url]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report == {
            "rows": 3,
            "verified": 2,
            "without_question": 1,
            "bad_payload": 0,
            "key_mismatch": 0,
            "orphan_questions": 0,
            "ok": True,
        }
        # a torn payload and a question filed under the wrong key are found
        import psycopg

        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("UPDATE arms SET payload = '[[\"a\", ' WHERE key = %s", (cache_key(M, F, Q1),))
            admin.execute("UPDATE arm_questions SET question = 'edited' WHERE key = %s", (cache_key(M, F, Q2),))
        assert cache_main(["check", url]) == 1
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["bad_payload"] == 1 and report["key_mismatch"] == 1 and report["ok"] is False
        pg.close()
