"""trainer.data: GSM8K/Platinum loading from local JSONL and the saved, seeded train/dev split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.configs import DataArguments
from trainer.data import (
    Problem,
    SplitFileError,
    load_platinum,
    load_problems,
    load_test_problems,
    load_train_dev,
    train_dev_split,
)

GSM8K_LINES = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
        "clips altogether in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
        "babysitting. How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned "
        "0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "James writes a 3-page letter to 2 different friends twice a week.  How many pages "
        "does he write a year?",
        "answer": "He writes each friend 3*2=<<3*2=6>>6 pages a week\nSo he writes 6*2=<<6*2=12>>12 "
        "pages every week\nThat means he writes 12*52=<<12*52=624>>624 pages a year\n#### 624",
    },
    {
        "question": "Albert buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a "
        "small pizza has 8 slices. If he eats it all, how many pieces does he eat that day?",
        "answer": "He eats 32 from the largest pizzas because 2 x 16 = <<2*16=32>>32\nHe eats 16 from "
        "the small pizza because 2 x 8 = <<2*8=16>>16\nHe eats 48 pieces because 32 + 16 = "
        "<<32+16=48>>48\n#### 48",
    },
    {
        "question": "Tina makes $18.00 an hour. If she works 8 hours a day for 5 days, how much money does she make?",
        "answer": "She makes 8*18 = $<<8*18=144>>144 a day\nIn 5 days she makes 144*5 = $<<144*5=720>>720\n#### 720",
    },
]


def _write_jsonl(path: Path, rows: list[dict], *, blank_lines: bool = False) -> Path:
    lines = [json.dumps(r) for r in rows]
    text = ("\n\n" if blank_lines else "\n").join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def _many(n: int) -> list[dict]:
    """n GSM8K-format rows (the realistic lines with distinct numbers appended)."""
    rows = []
    for i in range(n):
        base = GSM8K_LINES[i % len(GSM8K_LINES)]
        rows.append({"question": f"{base['question']} (case {i})", "answer": base["answer"]})
    return rows


def test_load_problems_from_local_jsonl(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "train.jsonl", GSM8K_LINES, blank_lines=True)
    problems = load_problems(str(path), split="train")
    assert [p.id for p in problems] == [f"gsm8k-train-{i}" for i in range(5)]
    assert [p.gold for p in problems] == ["72", "10", "624", "48", "720"]
    first = problems[0]
    assert first.question.startswith("Natalia sold clips")
    assert first.solution.endswith("#### 72")
    assert first.cleaning_status is None
    assert load_problems(str(path), split="test")[3].id == "gsm8k-test-3"


def test_load_problems_reports_bad_rows_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GSM8K_LINES[0]) + "\n" + json.dumps({"question": "q only"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2.*'answer'"):
        load_problems(str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "x", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl:2: not valid JSON"):
        load_problems(str(broken))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_problems(str(tmp_path / "missing.jsonl"))


def test_platinum_drops_rejected_rows(tmp_path: Path) -> None:
    statuses = ["consensus", "rejected", "revised", "REJECTED", "consensus"]
    rows = [dict(r, cleaning_status=s) for r, s in zip(GSM8K_LINES, statuses, strict=True)]
    path = _write_jsonl(tmp_path / "platinum.jsonl", rows)
    problems = load_platinum(str(path))
    assert [p.id for p in problems] == ["platinum-test-0", "platinum-test-2", "platinum-test-4"]
    assert [p.cleaning_status for p in problems] == ["consensus", "revised", "consensus"]
    assert [p.gold for p in problems] == ["72", "624", "720"]


def test_split_is_seeded_reproducible_and_disjoint(tmp_path: Path) -> None:
    problems = load_problems(str(_write_jsonl(tmp_path / "train.jsonl", _many(50))))
    args_a = DataArguments(dataset="x.jsonl", split_file=str(tmp_path / "a.json"), split_seed=7)
    args_b = DataArguments(dataset="x.jsonl", split_file=str(tmp_path / "b.json"), split_seed=7)
    args_c = DataArguments(dataset="x.jsonl", split_file=str(tmp_path / "c.json"), split_seed=8)
    train_a, dev_a = train_dev_split(problems, args_a)
    _, dev_b = train_dev_split(problems, args_b)
    _, dev_c = train_dev_split(problems, args_c)
    assert len(dev_a) == 10 and len(train_a) == 40
    assert {p.id for p in train_a}.isdisjoint({p.id for p in dev_a})
    assert [p.id for p in dev_a] == [p.id for p in dev_b]
    assert [p.id for p in dev_a] != [p.id for p in dev_c]
    # Not simply the tail of the file: the split is shuffled.
    assert [p.id for p in dev_a] != [p.id for p in problems[-10:]]


def test_split_file_is_saved_then_reused(tmp_path: Path) -> None:
    problems = load_problems(str(_write_jsonl(tmp_path / "train.jsonl", _many(30))))
    split_file = tmp_path / "nested" / "split.json"
    args = DataArguments(dataset="x.jsonl", split_file=str(split_file), split_seed=3)
    train, dev = train_dev_split(problems, args)
    saved = json.loads(split_file.read_text())
    assert saved["train_ids"] == [p.id for p in train]
    assert saved["dev_ids"] == [p.id for p in dev]
    assert saved["split_seed"] == 3 and saved["dev_fraction"] == 0.2

    # A hand-edited (but consistent) file wins over re-drawing: the file is the source of truth.
    moved = saved["train_ids"][0]
    saved["train_ids"].remove(moved)
    saved["dev_ids"].append(moved)
    split_file.write_text(json.dumps(saved))
    train2, dev2 = train_dev_split(problems, args)
    assert moved in {p.id for p in dev2}
    assert len(train2) == len(train) - 1


def test_split_file_that_disagrees_with_the_data_is_an_error(tmp_path: Path) -> None:
    problems = load_problems(str(_write_jsonl(tmp_path / "train.jsonl", _many(30))))
    split_file = tmp_path / "split.json"
    args = DataArguments(dataset="x.jsonl", split_file=str(split_file))
    train_dev_split(problems, args)
    with pytest.raises(SplitFileError, match="does not match the data"):
        train_dev_split(problems[:20], args)
    with pytest.raises(SplitFileError, match="split_seed=42.*split_seed=5"):
        train_dev_split(problems, DataArguments(dataset="x.jsonl", split_file=str(split_file), split_seed=5))
    split_file.write_text("{oops")
    with pytest.raises(SplitFileError, match="not valid JSON"):
        train_dev_split(problems, args)


def test_load_train_dev_applies_caps(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "train.jsonl", _many(40))
    args = DataArguments(
        dataset=str(path),
        split_file=str(tmp_path / "split.json"),
        max_train_samples=5,
        max_eval_samples=3,
    )
    train, dev = load_train_dev(args)
    assert len(train) == 5 and len(dev) == 3
    assert all(isinstance(p, Problem) and p.gold is not None for p in train + dev)


def test_test_set_from_local_file(tmp_path: Path) -> None:
    train = _write_jsonl(tmp_path / "train.jsonl", GSM8K_LINES)
    test = _write_jsonl(tmp_path / "test.jsonl", GSM8K_LINES[:2])
    problems = load_test_problems(DataArguments(dataset=str(train), test_dataset=str(test)))
    assert [p.id for p in problems] == ["gsm8k-test-0", "gsm8k-test-1"]
    with pytest.raises(ValueError, match="test_dataset"):
        load_test_problems(DataArguments(dataset=str(train)))


def test_data_arguments_validate() -> None:
    with pytest.raises(ValueError, match="dev_fraction"):
        DataArguments(dev_fraction=1.5)
    with pytest.raises(ValueError, match="max_train_samples"):
        DataArguments(max_train_samples=0)
