"""GSM8K and GSM8K-Platinum loading, and the seeded train/dev split that every stage shares.

A *source* is either a Hugging Face hub dataset name (loaded with ``datasets.load_dataset``) or a
local GSM8K-format JSONL file (one ``{"question": ..., "answer": ...}`` object per line). Problem ids
are ``<prefix>-<split>-<index>`` (``gsm8k-train-17``): the source split and the row index, so ids are
stable across runs and machines. The train/dev split is drawn once with ``split_seed`` and saved as
id lists in ``split_file``; later stages read that file, so all of them see the same dev set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_schemas.answer import gold_answer
from trainer.configs import DataArguments
from trainer.jsonl import iter_jsonl

__all__ = [
    "Problem",
    "SplitFileError",
    "is_local_source",
    "load_problems",
    "load_platinum",
    "load_test_problems",
    "train_dev_split",
    "load_train_dev",
]

_LOCAL_SUFFIXES = (".jsonl", ".json")
SPLIT_FILE_VERSION = 1


@dataclass
class Problem:
    """One math word problem: its stable id, the question, the reference solution and gold answer."""

    id: str
    question: str
    solution: str
    gold: str | None
    cleaning_status: str | None = None


class SplitFileError(ValueError):
    """The saved split file does not match the data or the split settings it is used with."""


def is_local_source(source: str) -> bool:
    """True when ``source`` names a local file (a ``.jsonl``/``.json`` path or an existing file)."""
    path = Path(source)
    return path.suffix in _LOCAL_SUFFIXES or path.is_file()


def _rows(source: str, *, config: str, split: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """(where, row) pairs of a local JSONL file or a hub dataset split."""
    if is_local_source(source):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {source}")
        return ((f"{path}:{lineno}", record) for lineno, record in iter_jsonl(path))
    import datasets

    try:
        ds = datasets.load_dataset(source, config, split=split)
    except Exception as exc:  # the datasets library raises many types; say what we tried
        raise RuntimeError(
            f"could not load dataset {source!r} (config {config!r}, split {split!r}): {exc}. "
            "Offline? Pass a local GSM8K-format JSONL path instead."
        ) from exc
    return ((f"{source}[{split}][{i}]", row) for i, row in enumerate(ds))


def load_problems(
    source: str, *, config: str = "main", split: str = "train", id_prefix: str = "gsm8k"
) -> list[Problem]:
    """Load GSM8K-format problems (``question``, ``answer``[, ``cleaning_status``]) from ``source``.

    ``source`` is a hub dataset name or a local JSONL path. Ids are ``{id_prefix}-{split}-{index}``
    where ``index`` counts the rows (non-blank lines) of the source from 0.
    """
    problems: list[Problem] = []
    for index, (where, row) in enumerate(_rows(source, config=config, split=split)):
        missing = [key for key in ("question", "answer") if not isinstance(row.get(key), str)]
        if missing:
            raise ValueError(f"{where}: missing or non-string field(s) {missing}; expected GSM8K format")
        status = row.get("cleaning_status")
        problems.append(
            Problem(
                id=f"{id_prefix}-{split}-{index}",
                question=row["question"].strip(),
                solution=row["answer"],
                gold=gold_answer(row["answer"]),
                cleaning_status=str(status) if status is not None else None,
            )
        )
    if not problems:
        raise ValueError(f"no problems found in {source!r} (split {split!r})")
    return problems


def load_platinum(source: str, *, config: str = "main", split: str = "test") -> list[Problem]:
    """GSM8K-Platinum problems, without the rows its cleaning marked ``rejected`` (official rules)."""
    problems = load_problems(source, config=config, split=split, id_prefix="platinum")
    return [p for p in problems if (p.cleaning_status or "").strip().lower() != "rejected"]


def load_test_problems(data_args: DataArguments) -> list[Problem]:
    """The GSM8K test set: ``test_dataset`` when set, else the hub dataset's ``test`` split."""
    source = data_args.test_dataset or data_args.dataset
    if data_args.test_dataset is None and is_local_source(source):
        raise ValueError("dataset is a local file, so the test set must be named too: set test_dataset to a JSONL path")
    return load_problems(source, config=data_args.dataset_config, split="test")


def _draw_split(ids: list[str], dev_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(len(order) * dev_fraction))
    if n_dev >= len(order):
        raise ValueError(f"cannot hold out {n_dev} of {len(order)} problems as dev (dev_fraction={dev_fraction})")
    dev = set(order[:n_dev])
    # Keep the data's own order inside each part: readable files, stable batches.
    return [i for i in ids if i not in dev], [i for i in ids if i in dev]


def _read_split_file(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SplitFileError(f"split file {path} is not valid JSON: {exc.msg}") from exc
    if not isinstance(saved, dict) or not {"train_ids", "dev_ids"} <= saved.keys():
        raise SplitFileError(f"split file {path} must hold 'train_ids' and 'dev_ids' lists")
    return saved


def train_dev_split(problems: list[Problem], data_args: DataArguments) -> tuple[list[Problem], list[Problem]]:
    """The seeded train/dev split of ``problems``; saved to ``split_file`` first, reused after.

    Raises ``SplitFileError`` when an existing split file does not cover exactly these problems or
    was drawn with another seed or dev fraction (delete it, or point ``split_file`` elsewhere).
    """
    by_id = {p.id: p for p in problems}
    if len(by_id) != len(problems):
        raise ValueError("problem ids are not unique; cannot split")
    path = Path(data_args.split_file)
    if path.exists():
        saved = _read_split_file(path)
        for key, want in (("split_seed", data_args.split_seed), ("dev_fraction", data_args.dev_fraction)):
            if key in saved and saved[key] != want:
                raise SplitFileError(
                    f"split file {path} was drawn with {key}={saved[key]!r} but this run asks for "
                    f"{key}={want!r}; delete the file or set split_file to another path"
                )
        train_ids, dev_ids = list(saved["train_ids"]), list(saved["dev_ids"])
        saved_ids = set(train_ids) | set(dev_ids)
        if saved_ids != by_id.keys() or len(saved_ids) != len(train_ids) + len(dev_ids):
            unknown = sorted(saved_ids - by_id.keys())[:3]
            missing = sorted(by_id.keys() - saved_ids)[:3]
            raise SplitFileError(
                f"split file {path} does not match the data ({len(by_id)} problems from "
                f"{data_args.dataset!r}; file has {len(train_ids)} train + {len(dev_ids)} dev ids; "
                f"ids not in data e.g. {unknown}, ids not in file e.g. {missing}); delete the file "
                "or set split_file to the one made for this data"
            )
    else:
        train_ids, dev_ids = _draw_split(list(by_id), data_args.dev_fraction, data_args.split_seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "version": SPLIT_FILE_VERSION,
            "dataset": data_args.dataset,
            "split_seed": data_args.split_seed,
            "dev_fraction": data_args.dev_fraction,
            "num_train": len(train_ids),
            "num_dev": len(dev_ids),
            "train_ids": train_ids,
            "dev_ids": dev_ids,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    return [by_id[i] for i in train_ids], [by_id[i] for i in dev_ids]


def load_train_dev(data_args: DataArguments) -> tuple[list[Problem], list[Problem]]:
    """Load the GSM8K train file, split it, and apply ``max_train_samples``/``max_eval_samples``."""
    problems = load_problems(data_args.dataset, config=data_args.dataset_config, split="train")
    train, dev = train_dev_split(problems, data_args)
    if data_args.max_train_samples is not None:
        train = train[: data_args.max_train_samples]
    if data_args.max_eval_samples is not None:
        dev = dev[: data_args.max_eval_samples]
    return train, dev
