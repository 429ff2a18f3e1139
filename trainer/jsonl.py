"""The trainer's one JSONL module: read, durable append, atomic write.

Every stage reads and writes JSON Lines through these functions:

- ``iter_jsonl(path, tail=...)`` — ``(line number, object)`` for each non-blank line, with errors that
  name ``file:line``. ``tail`` says what to do with text after the last newline: ``"keep"`` (an input
  file whose last line simply has no newline), ``"skip"`` (an append-only file another process may
  be writing, or one a killed writer left torn), ``"truncate"`` (the writer resuming its own file:
  the torn tail is cut off the file itself).
- ``read_records(path, Model, tail=...)`` — the same, validated into a pydantic model.
- ``JsonlAppender`` — appends one whole line per record with a single ``write`` + ``fsync``; a kill
  leaves at most one torn last line, which ``tail="truncate"`` removes on resume.
- ``write_jsonl_atomic`` / ``write_json_atomic`` — a temporary file beside the target, fsynced, then
  ``os.replace``: readers see the old file or the new one, never half of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "Tail",
    "iter_jsonl",
    "read_records",
    "JsonlAppender",
    "write_jsonl_atomic",
    "write_json_atomic",
    "dumps_line",
]

Tail = Literal["keep", "skip", "truncate"]
_M = TypeVar("_M", bound=BaseModel)


def dumps_line(record: BaseModel | dict[str, Any]) -> bytes:
    """One JSON line (UTF-8, with its newline) of a model or a dict."""
    text = record.model_dump_json() if isinstance(record, BaseModel) else json.dumps(record, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def _complete_bytes(path: Path, tail: Tail) -> bytes:
    if tail == "truncate":
        with path.open("r+b") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        return data[:end]
    data = path.read_bytes()
    if tail == "skip":
        return data[: data.rfind(b"\n") + 1]
    return data


def iter_jsonl(path: str | Path, *, tail: Tail = "keep") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``path`` (see the module docstring for ``tail``)."""
    path = Path(path)
    data = _complete_bytes(path, tail)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise ValueError(f"{path}:{number}: not valid JSON ({reason})") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def read_records(path: str | Path, model: type[_M], *, tail: Tail = "keep") -> Iterator[_M]:
    """Each line of ``path`` validated as ``model``; a ``ValueError`` names ``file:line`` and the field."""
    for number, record in iter_jsonl(path, tail=tail):
        try:
            yield model.model_validate(record)
        except ValidationError as exc:
            raise ValueError(f"{path}:{number}: not a valid {model.__name__}: {exc}") from exc


class JsonlAppender:
    """Appends whole lines durably: one ``write`` of ``line + "\\n"``, then ``fsync``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: BaseModel | dict[str, Any]) -> None:
        view = memoryview(dumps_line(record))
        while view:  # os.write on a regular file writes everything; loop for the pathological case
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _replace_atomically(path: Path, data: Iterable[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            for chunk in data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power loss
    finally:
        os.close(dir_fd)
    return path


def write_jsonl_atomic(path: str | Path, records: Iterable[BaseModel | dict[str, Any]]) -> Path:
    """Write ``records`` as ``path`` all at once (temporary file, fsync, rename)."""
    return _replace_atomically(Path(path), (dumps_line(r) for r in records))


def write_json_atomic(path: str | Path, obj: BaseModel | dict[str, Any]) -> Path:
    """Write one JSON document (indented) as ``path`` all at once."""
    text = obj.model_dump_json(indent=2) if isinstance(obj, BaseModel) else json.dumps(obj, indent=2, default=str)
    return _replace_atomically(Path(path), [(text + "\n").encode("utf-8")])
