"""``trainer.jsonl`` (the one JSONL module) and ``trainer.records`` (the typed stage artifacts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer.jsonl import JsonlAppender, iter_jsonl, read_records, write_json_atomic, write_jsonl_atomic
from trainer.records import EvalPrediction, PreferenceRecord, RolloutRecord, RunInfo, reward_label_free

ROOT = Path(__file__).resolve().parents[1]


def test_tail_policies(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": 3}')  # blank line skipped; last line has no newline
    assert [(n, r["a"]) for n, r in iter_jsonl(path)] == [(1, 1), (3, 2), (4, 3)]  # keep: an input file
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": 3')  # a writer killed mid-line
    with pytest.raises(ValueError, match=r"x.jsonl:4: not valid JSON"):
        list(iter_jsonl(path))
    assert [r["a"] for _, r in iter_jsonl(path, tail="skip")] == [1, 2]  # skip: a reader of an append log
    assert path.read_bytes().endswith(b'{"a": 3')  # ... leaves it in place
    assert [r["a"] for _, r in iter_jsonl(path, tail="truncate")] == [1, 2]
    assert path.read_bytes() == b'{"a": 1}\n\n{"a": 2}\n'  # truncate: the writer cuts it off the file


@pytest.mark.parametrize(
    "line,error",
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"\xff"', "not valid JSON"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: bytes, error: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n' + line + b"\n")
    with pytest.raises(ValueError, match=rf"x.jsonl:2: {error}"):
        list(iter_jsonl(path))


def test_read_records_validates_and_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    good = {"id": "a", "question": "q", "better": "b", "worse": "w", "better_reward": 1.0, "worse_reward": 0.5}
    bad = {**good, "better_reward": 0.0}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    records = read_records(path, PreferenceRecord)
    first = next(records)
    assert first.margin == 0.5 and first.reward_mode is None and first.reward_name == "unrecorded"
    with pytest.raises(ValueError, match=r"(?s)p.jsonl:2: not a valid PreferenceRecord.*below worse_reward"):
        next(records)


def test_appender_writes_whole_lines_and_a_killed_writer_leaves_at_most_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.jsonl"
    with JsonlAppender(path) as out:
        out.append({"id": "a", "text": "ünïcode"})
        out.append(
            EvalPrediction(
                model="m", dataset="d", id="b", gold="1", prediction=None, correct=False, format_ok=False, output="x"
            )
        )
    assert [r["id"] for _, r in iter_jsonl(path)] == ["a", "b"]
    assert "ünïcode" in path.read_text(encoding="utf-8")
    # a writer killed mid-line: the next writer's truncate-read drops only that line
    with path.open("ab") as f:
        f.write(b'{"id": "c", "tex')
    assert [r["id"] for _, r in iter_jsonl(path, tail="truncate")] == ["a", "b"]
    with JsonlAppender(path) as out:
        out.append({"id": "c"})
    assert [r["id"] for _, r in iter_jsonl(path)] == ["a", "b", "c"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    write_jsonl_atomic(path, [{"n": 1}, {"n": 2}])
    assert [r["n"] for _, r in iter_jsonl(path)] == [1, 2]

    def failing() -> Iterator[dict[str, int]]:
        yield {"n": 3}
        raise RuntimeError("the producer died")

    with pytest.raises(RuntimeError, match="producer died"):
        write_jsonl_atomic(path, failing())
    assert [r["n"] for _, r in iter_jsonl(path)] == [1, 2]  # readers never see half a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]  # no temporary file left
    info = RunInfo(stage="prefs", reward_mode="majority", label_free=True, summary={"pairs_written": 3})
    write_json_atomic(tmp_path / "p.run.json", info)
    assert RunInfo.model_validate_json((tmp_path / "p.run.json").read_text()) == info


def test_a_killed_atomic_writer_leaves_the_old_file(tmp_path: Path) -> None:
    """A real process killed while it writes the replacement: the target still holds the old records."""
    path = tmp_path / "p.jsonl"
    write_jsonl_atomic(path, [{"n": 0}])
    code = (
        "import os, signal, sys\n"
        "from trainer.jsonl import write_jsonl_atomic\n"
        "def rows():\n"
        "    for n in range(1000):\n"
        "        if n == 500: os.kill(os.getpid(), signal.SIGKILL)\n"
        "        yield {'n': n}\n"
        f"write_jsonl_atomic({str(path)!r}, rows())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False
    )
    assert proc.returncode == -9
    assert [r["n"] for _, r in iter_jsonl(path)] == [0]


def test_rollout_records_from_before_the_reward_controls_read_as_regime_w_with_gold() -> None:
    legacy = {
        "id": "q",
        "question": "?",
        "gold_answer": "5",
        "consensus_answer": None,
        "scorer": {"name": "x"},
        "trajectories": [
            {
                "output": "#### 5",
                "reward": 1.0,
                "correctness": 1.0,
                "s_end": 0.5,
                "s_path": 0.5,
                "s_cf": 0.5,
                "s_wm": 0.5,
                "length_penalty": 0.01,
                "final_answer": "5",
                "format_ok": True,
                "num_tokens": 3,
                "seed": 1,
                "temperature": 0.6,
            }
        ],
    }
    record = RolloutRecord.model_validate(legacy)
    assert (record.reward_mode, record.label_free) == ("regime_w", False)
    with pytest.raises(ValueError, match="extra"):
        RolloutRecord.model_validate({**legacy, "typo_field": 1})
    with pytest.raises(ValueError):
        RolloutRecord.model_validate({**legacy, "reward_mode": "vibes"})


def test_reward_label_free_and_run_info_paths() -> None:
    assert [
        reward_label_free(m, lf)
        for m, lf in [("regime_w", False), ("regime_w", True), ("correctness", True), ("majority", False)]
    ] == [False, True, False, True]
    assert RunInfo.path_for("data/rl_rollouts.jsonl") == "data/rl_rollouts.run.json"
    assert RunInfo.path_for("prefs") == "prefs.run.json"
    with pytest.raises(ValueError, match="not better_reward - worse_reward"):
        PreferenceRecord(question="q", better="b", worse="w", better_reward=1.0, worse_reward=0.0, margin=0.3)
