"""How well ``shared_schemas.answer`` reads answers: the labeled corpus and real chat-model output.

1. **Corpus** (``tests/data/answer_corpus.jsonl``, made by ``scripts/make_answer_corpus.py``): the
   share of completions whose verdict (answer == gold) equals the label, for ``parse_answer`` and
   for math-verify (``verify(parse("$gold$"), parse(completion))``, default extraction configs), per
   class; and how many box contents the fast path could not read (the case for a math-verify fallback).
2. **reward_dev** (``zeroeval_gsm8k_dev.jsonl``: 8,580 real solutions with the grader's
   ``graded_answer``): the share where ``parse_answer`` gives the graded answer (value agreement),
   the share with the same verdict against the gold (verdict agreement), and each disagreement put
   in a class, with who of the two matches the gold.
3. **Speed**: parses per second on the corpus (uncached), math-verify's, the 200k-char pathological
   inputs of ``tests/test_answer_format.py``, and (``--score-workload``) CPU µs per parse on the
   texts of ``bench/score_inprocess.py``, current and baseline alternating, best of 21.

``--baseline-rev REV`` measures ``shared_schemas/answer.py`` of that git revision too (before/after).

    python bench/answer_agreement.py --reward-dev ../shared/data/reward_dev/zeroeval_gsm8k_dev.jsonl \\
        --baseline-rev 3db42f2 --score-workload --out bench/results/answer_agreement.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared_schemas import answer as answer_module  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "answer_corpus.jsonl"
T = TypeVar("T")

# The first JSON "answer" field and its raw value (how the reward_dev grader reads a text).
_FIRST_JSON_ANSWER = re.compile(r'"answer"\s*:\s*("(?:[^"\\\n]|\\.)*"|[^,}\n]*)', re.IGNORECASE)
_JSON_KEY = re.compile(r'"answer"\s*:', re.IGNORECASE)
_RAW_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def progress(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the trainer extra; without it, no bar
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False)


def load_module_at(rev: str) -> ModuleType:
    """``shared_schemas/answer.py`` as of git revision ``rev`` (it imports only its own package)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:shared_schemas/answer.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"answer_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"answer_{rev}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --- corpus -----------------------------------------------------------------------------------


@dataclass
class Tally:
    right: Counter[str]
    total: Counter[str]

    @classmethod
    def new(cls) -> Tally:
        return cls(Counter(), Counter())

    def add(self, cls_name: str, ok: bool) -> None:
        self.total[cls_name] += 1
        self.right[cls_name] += ok

    def summary(self) -> dict[str, Any]:
        n, ok = sum(self.total.values()), sum(self.right.values())
        return {
            "rows": n,
            "agree": ok,
            "rate": ok / n if n else None,
            "disagree_by_class": {
                c: self.total[c] - self.right[c] for c in sorted(self.total) if self.right[c] < self.total[c]
            },
        }


def corpus_verdicts(mod: ModuleType, rows: list[dict[str, Any]]) -> Tally:
    tally = Tally.new()
    for row in rows:
        verdict = mod.answers_equal(mod.parse_answer(row["completion"]).value, mod.gold_answer(row["gold"]))
        tally.add(row["class"], verdict == row["label"])
    return tally


def math_verify_verdicts(rows: list[dict[str, Any]]) -> tuple[Tally, float, str]:
    from importlib.metadata import version

    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    tally = Tally.new()
    start = time.perf_counter()
    for row in progress(rows, len(rows), "math-verify"):
        gold = math_verify.parse(f"${row['gold'].removeprefix('#### ')}$")
        verdict = bool(math_verify.verify(gold, math_verify.parse(row["completion"])))
        tally.add(row["class"], verdict == row["label"])
    return tally, time.perf_counter() - start, version("math-verify")


def unreadable_boxes(texts: Iterable[str]) -> int:
    """Boxes holding a digit whose contents the fast path cannot read (a math-verify fallback's work)."""
    count = 0
    for text in texts:
        if "box" not in text:
            continue
        candidates: list[Any] = []
        answer_module._box_candidates(text, candidates)
        for _, kind, start, end in candidates:
            raw = text[start:end]
            if re.search(r"\d", raw) and answer_module._read(text, kind, start, end) is None:
                count += 1
    return count


# --- reward_dev -------------------------------------------------------------------------------


def grader_class(text: str, parsed: Any, mod: ModuleType) -> str:
    """Why ``parse_answer`` and ``graded_answer`` differ on ``text`` (the grader reads the first JSON
    ``"answer"`` field, taking the last number in it; else the last number of the text)."""
    first = _FIRST_JSON_ANSWER.search(text)
    if first is None:
        return "no JSON answer field: last number differs (truncated text, '$30,00')"
    later = len(_JSON_KEY.findall(text)) > 1 or parsed.source not in ("json",)
    first_value = mod.answers_equal(parsed.value, mod._read(text, "json", first.start(1), -1))
    if later and not first_value:
        return "a later answer marker (second JSON block, 'the correct answer is') overrides the first JSON answer"
    if len(_RAW_NUMBER.findall(first.group(1).replace(",", ""))) > 1:
        return "the answer field holds several numbers or an expression (grader: its last number)"
    return "the answer field holds one number, read differently ('.416', units)"


def reward_dev(mod: ModuleType, path: Path, classify: bool, examples: int = 3) -> dict[str, Any]:
    n = value_agree = verdict_agree = 0
    classes: Counter[str] = Counter()
    who: dict[str, Counter[str]] = {}
    shown: dict[str, list[dict[str, Any]]] = {}
    rows = read_jsonl(path)
    for qi, row in enumerate(progress(rows, len(rows), path.name)):
        gold = repr(row["gold"])
        for si, sample in enumerate(row["samples"]):
            n += 1
            parsed = mod.parse_answer(sample["text"])
            graded = None if sample["graded_answer"] is None else repr(sample["graded_answer"])
            same = (parsed.value is None and graded is None) or mod.answers_equal(parsed.value, graded)
            value_agree += same
            ours_right, graded_right = mod.answers_equal(parsed.value, gold), mod.answers_equal(graded, gold)
            verdict_agree += ours_right == graded_right
            if same:
                continue
            c = grader_class(sample["text"], parsed, mod) if classify else "(not classified)"
            classes[c] += 1
            key = "ours_right" if ours_right else "graded_right" if graded_right else "both_wrong"
            who.setdefault(c, Counter())[key] += 1
            if len(shown.setdefault(c, [])) < examples:
                shown[c].append(
                    {
                        "question": qi,
                        "sample": si,
                        "gold": gold,
                        "graded_answer": graded,
                        "parse_answer": parsed.value,
                        "source": parsed.source,
                    }
                )
    return {
        "solutions": n,
        "value_agree": value_agree,
        "value_agreement": value_agree / n,
        "verdict_agree": verdict_agree,
        "verdict_agreement": verdict_agree / n,
        "disagreements": {c: {"count": classes[c], **who[c], "examples": shown[c]} for c, _ in classes.most_common()},
    }


# --- speed ------------------------------------------------------------------------------------


def parse_speed(mod: ModuleType, texts: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        if hasattr(mod, "_parse_cached"):
            mod._parse_cached.cache_clear()
        start = time.perf_counter()
        for text in texts:
            mod.parse_answer(text)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def score_workload_texts() -> list[str]:
    """The trajectories and arm texts of ``bench/score_inprocess.py``'s default (seed-0) workload."""
    sys.path.insert(0, str(ROOT / "bench"))
    from score_inprocess import build_workload

    w = build_workload(100, 100, 0, None)
    return [t for ts in w.trajectories for t in ts] + [a.text for arms in w.arms for a in arms]


def parse_micros(modules: dict[str, ModuleType], texts: list[str], repeats: int) -> dict[str, float]:
    """CPU µs per parse of each module on ``texts``, the modules alternating (best of ``repeats``: noise only adds)."""
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(repeats):
        for name, mod in modules.items():
            mod._parse_cached.cache_clear()
            start = time.process_time()
            for text in texts:
                mod.parse_answer(text)
            times[name].append(time.process_time() - start)
    return {name: round(min(t) / len(texts) * 1e6, 2) for name, t in times.items()}


def pathological_timings() -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_answer_format import PATHOLOGICAL

    out = {}
    for name, (text, _) in sorted(PATHOLOGICAL.items()):
        start = time.perf_counter()
        answer_module.parse_answer(text)
        out[name] = round(time.perf_counter() - start, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--reward-dev", type=Path, default=None, help="zeroeval_gsm8k_dev.jsonl (skipped if not given)")
    ap.add_argument("--baseline-rev", default=None, help="also measure shared_schemas/answer.py of this git revision")
    ap.add_argument("--no-math-verify", action="store_true", help="skip math-verify (not installed: skipped anyway)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--score-workload", action="store_true", help="also time parsing on bench/score_inprocess.py's workload"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    rows = read_jsonl(args.corpus)
    texts = [r["completion"] for r in rows]
    modules: dict[str, ModuleType] = {"current": answer_module}
    if args.baseline_rev:
        modules[f"baseline {args.baseline_rev}"] = load_module_at(args.baseline_rev)
    result: dict[str, Any] = {
        "corpus": str(args.corpus.relative_to(ROOT)) if args.corpus.is_relative_to(ROOT) else args.corpus.name,
        "corpus_rows": len(rows),
    }
    for name, mod in modules.items():
        part: dict[str, Any] = {"corpus": corpus_verdicts(mod, rows).summary()}
        part["corpus_parses_per_s"] = round(parse_speed(mod, texts, args.repeats))
        if args.reward_dev is not None:
            part["reward_dev"] = reward_dev(mod, args.reward_dev, classify=mod is answer_module)
        result[name] = part
    result["current"]["unreadable_boxes_corpus"] = unreadable_boxes(texts)
    if args.reward_dev is not None:
        dev_texts = [s["text"] for r in read_jsonl(args.reward_dev) for s in r["samples"]]
        result["current"]["unreadable_boxes_reward_dev"] = unreadable_boxes(dev_texts)
    if not args.no_math_verify and importlib.util.find_spec("math_verify") is not None:
        tally, seconds, mv_version = math_verify_verdicts(rows)
        result["math_verify"] = {
            "version": mv_version,
            "corpus": tally.summary(),
            "corpus_parses_per_s": round(len(rows) / seconds, 1),
        }
    if args.score_workload:
        result["score_workload_parse_cpu_us"] = parse_micros(modules, score_workload_texts(), 21)
    result["pathological_200k_seconds"] = pathological_timings()
    result["python"] = platform.python_version()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
