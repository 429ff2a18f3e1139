"""``regime-w-cache``: move an arm cache between stores and check a store's integrity.

    regime-w-cache copy SOURCE_URL DEST_URL     # e.g. sqlite:///.cache/regime-w/arms.sqlite3 postgresql://...
    regime-w-cache check URL

``copy`` reads every arms row of the source with its question (when the source kept it) and writes
them to the destination in batches, each batch's arms and questions in one transaction: same keys,
same payloads, same creation times. It is idempotent (run it again after a crash) and may run while
services use either store. A row whose payload does not parse is skipped and counted, never copied.

``check`` reads every row: its payload must parse as ``[[arm, text], ...]``; when its question is
known, the key must be ``cache_key(model, fingerprint, question)``; question rows without arms are
counted. It prints one JSON line and exits 1 when anything is wrong.

Both print one JSON line on stdout; a store that cannot be opened is one line on stderr and exit 2.
URLs are printed with their password removed. ``--password-file`` reads a PostgreSQL password from
a file (both URLs, when both are PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reward_service.errors import ServiceError
from reward_service.store import (
    ArmRow,
    ArmStore,
    PostgresOptions,
    StoredRow,
    cache_key,
    decode_payload,
    open_store,
    redact_url,
)

#: rows per destination transaction
COPY_BATCH = 500


def _open(url: str, password_file: Path | None) -> ArmStore:
    store = open_store(url, PostgresOptions(password_file=password_file))
    if store is None:
        raise ValueError(f"{url!r} names no persistent store")
    return store


def copy(source: ArmStore, dest: ArmStore, batch: int = COPY_BATCH) -> dict[str, int]:
    """Copy every parseable row of ``source`` into ``dest``; counts."""
    counts = {"copied": 0, "with_question": 0, "bad_payload": 0}
    pending: list[ArmRow] = []
    for stored in source.rows():
        try:
            arms = decode_payload(stored.payload)
        except ValueError:
            counts["bad_payload"] += 1
            continue
        question = stored.question
        if question is not None and cache_key(stored.model, stored.fingerprint, question) != stored.key:
            question = None  # a question filed under the wrong key is not copied as this key's question
        pending.append(ArmRow(stored.key, stored.model, stored.fingerprint, arms, question, stored.created))
        counts["copied"] += 1
        counts["with_question"] += question is not None
        if len(pending) >= batch:
            dest.put(pending)
            pending = []
    if pending:
        dest.put(pending)
    return counts


def _row_problem(stored: StoredRow) -> str | None:
    try:
        decode_payload(stored.payload)
    except ValueError:
        return "bad_payload"
    if stored.question is not None and cache_key(stored.model, stored.fingerprint, stored.question) != stored.key:
        return "key_mismatch"
    return None


def check(store: ArmStore) -> dict[str, int | bool]:
    """Integrity counts of ``store`` (module docstring)."""
    counts = {"rows": 0, "verified": 0, "without_question": 0, "bad_payload": 0, "key_mismatch": 0}
    for stored in store.rows():
        counts["rows"] += 1
        problem = _row_problem(stored)
        if problem is not None:
            counts[problem] += 1
        elif stored.question is None:
            counts["without_question"] += 1
        else:
            counts["verified"] += 1
    orphans = store.orphan_questions()
    return {**counts, "orphan_questions": orphans, "ok": not (counts["bad_payload"] or counts["key_mismatch"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="regime-w-cache", description="Copy an arm cache into another store, or check a store's integrity."
    )
    parser.add_argument("--password-file", type=Path, default=None, help="file holding the PostgreSQL password")
    sub = parser.add_subparsers(dest="command", required=True)
    p_copy = sub.add_parser("copy", help="copy every row of SOURCE into DEST (idempotent)")
    p_copy.add_argument("source", help="sqlite:///PATH, a plain path, or postgresql://USER@HOST:PORT/DB")
    p_copy.add_argument("dest", help="the store to fill (its schema is created when missing)")
    p_check = sub.add_parser("check", help="check every row: payloads parse, keys match their question")
    p_check.add_argument("url")
    args = parser.parse_args(argv)

    opened: list[ArmStore] = []
    try:
        try:
            if args.command == "copy":
                source = _open(args.source, args.password_file)
                opened.append(source)
                dest = _open(args.dest, args.password_file)
                opened.append(dest)
            else:
                store = _open(args.url, args.password_file)
                opened.append(store)
        except (ValueError, ServiceError) as exc:
            message = exc.message if isinstance(exc, ServiceError) else str(exc)
            print(f"regime-w-cache: {message}", file=sys.stderr)
            return 2
        try:
            if args.command == "copy":
                result: dict[str, object] = {
                    "source": redact_url(source.where),
                    "dest": redact_url(dest.where),
                    **copy(source, dest),
                }
                print(json.dumps(result))
                return 0
            report = check(store)
            print(json.dumps(report))
            return 0 if report["ok"] else 1
        except ServiceError as exc:
            print(f"regime-w-cache: {exc.message}", file=sys.stderr)
            return 1
    finally:
        for s in opened:
            s.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
