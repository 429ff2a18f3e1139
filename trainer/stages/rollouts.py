"""Stage ``rollouts``: sample N trajectories per question from base + SFT adapter and score them.

Each question gets ``num_samples`` completions; sample ``k`` uses seed ``hash(seed, question id, k)``
(:func:`trainer.generation.sample_seed`) and temperature ``temperatures[k % len]`` (default: all
``temperature``). Prompts of many questions go through one batched ``generate`` call; every
question's trajectories then go to the reward service as one ``ScoreItem`` (with their token counts),
and each scored question is appended to ``rollouts_file`` as one JSON line.

Crash safety: a line is appended with a single write of ``line + "\\n"`` followed by flush + fsync.
On start the file is read, a torn last line (from a killed run) is cut off, and the ids already done
are skipped, so rerunning the same command after a crash finishes the set with every question
exactly once. A reward-service error stops the run with a clear message; lines already written stay.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.configs import DataArguments, ModelArguments, RewardServiceArguments
from trainer.errors import StageError

__all__ = [
    "RolloutArguments",
    "ARG_CLASSES",
    "RolloutsStopped",
    "JsonlAppender",
    "recover_jsonl",
    "sampling_specs",
    "plan",
    "run",
]

BACKENDS = ("auto", "transformers", "vllm")
SPLITS = ("train", "dev", "test")


@dataclass
class RolloutArguments:
    rollouts_file: str = field(
        default="data/rl_rollouts.jsonl", metadata={"help": "JSONL the scored rollouts are appended to."}
    )
    rollout_split: str = field(
        default="train", metadata={"help": "Which problems to roll out: 'train' | 'dev' (of the saved split) | 'test'."}
    )
    num_samples: int = field(default=8, metadata={"help": "Trajectories per question (N)."})
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature (0 = greedy)."})
    temperatures: list[float] | None = field(
        default=None,
        metadata={"help": "Optional per-sample temperatures, cycled over k (overrides temperature)."},
    )
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling top-p."})
    seed: int = field(default=42, metadata={"help": "Base seed; sample k of question q uses hash(seed, q, k)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget per trajectory."})
    generation_batch_size: int = field(
        default=64, metadata={"help": "Sequences per generate call (questions per chunk = this // N)."}
    )
    generation_backend: str = field(
        default="auto", metadata={"help": "'auto' (vLLM when installed with a GPU) | 'transformers' | 'vllm'."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.rollout_split not in SPLITS:
            raise ValueError(f"rollout_split must be one of {SPLITS}, got {self.rollout_split!r}")
        if self.generation_backend not in BACKENDS:
            raise ValueError(f"generation_backend must be one of {BACKENDS}, got {self.generation_backend!r}")
        if self.max_new_tokens < 1 or self.generation_batch_size < 1:
            raise ValueError("max_new_tokens and generation_batch_size must be >= 1")
        if self.temperatures is not None and not self.temperatures:
            raise ValueError("temperatures, when given, must list at least one value")
        for t in [self.temperature, *(self.temperatures or [])]:
            if t < 0:
                raise ValueError(f"temperatures must be >= 0, got {t}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def questions_per_chunk(self) -> int:
        return max(1, self.generation_batch_size // self.num_samples)


ARG_CLASSES: tuple[type, ...] = (ModelArguments, DataArguments, RewardServiceArguments, RolloutArguments)


class RolloutsStopped(StageError):
    """The run stopped early (reward service failure); what was written before stays valid."""


# ------------------------------------------------------------------------------------ the JSONL file


def recover_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL file, after cutting a torn last line off the file itself.

    A line is complete when it ends with ``\\n``. Anything after the last newline is the remainder of
    an interrupted append and is truncated away. A complete line that is not JSON is an error.
    """
    path = Path(path)
    if not path.exists():
        return []
    with path.open("r+b") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}:{number} is a complete line but not valid JSON ({exc.msg}); "
                "the file was edited or corrupted: fix or remove that line"
            ) from exc
    return records


class JsonlAppender:
    """Appends whole lines durably: one write of ``line + "\\n"``, then flush and fsync."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # os.write on a regular file writes everything; loop for the pathological case
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ sampling


def sampling_specs(args: RolloutArguments, question_id: str) -> list[Any]:
    """The N ``SamplingSpec`` of one question: distinct seeds, temperatures cycled from the recipe."""
    from trainer.generation import SamplingSpec, sample_seed

    temps = args.temperatures or [args.temperature]
    return [
        SamplingSpec(temperature=float(temps[k % len(temps)]), top_p=args.top_p,
                     seed=sample_seed(args.seed, question_id, k))
        for k in range(args.num_samples)
    ]


def _select_problems(data_args: DataArguments, split: str) -> list[Any]:
    from trainer.data import load_test_problems, load_train_dev

    if split == "test":
        problems = load_test_problems(data_args)
        return problems[: data_args.max_eval_samples] if data_args.max_eval_samples else problems
    train, dev = load_train_dev(data_args)
    return train if split == "train" else dev


def _use_vllm(args: RolloutArguments) -> bool:
    from trainer.generation import vllm_available

    if args.generation_backend == "vllm":
        if not vllm_available():
            raise RuntimeError("generation_backend='vllm' but vLLM is not installed or no GPU is present")
        return True
    return args.generation_backend == "auto" and vllm_available()


class _Sampler:
    """Generates a chunk of prompts with either backend."""

    def __init__(self, model_args: ModelArguments, args: RolloutArguments) -> None:
        from trainer.modeling import load_tokenizer

        self.args = args
        self.tokenizer = load_tokenizer(model_args)
        self.vllm = None
        self.model = None
        if _use_vllm(args):
            from trainer.generation import VLLMGenerator

            self.vllm = VLLMGenerator(model_args.model_name_or_path, enable_lora=model_args.adapter_path is not None)
            self.adapter_path = model_args.adapter_path
        else:
            from trainer.modeling import load_policy

            self.model = load_policy(model_args, trainable=False)

    def __call__(self, prompts: Sequence[str], specs: Sequence[Any]) -> list[Any]:
        from trainer.generation import generate_texts

        if self.vllm is not None:
            return self.vllm.generate(prompts, specs, max_new_tokens=self.args.max_new_tokens,
                                      adapter_path=self.adapter_path)
        return generate_texts(
            self.model, self.tokenizer, prompts, specs,
            max_new_tokens=self.args.max_new_tokens, batch_size=self.args.generation_batch_size,
        )


# ----------------------------------------------------------------------------------------- the stage


def plan(model_args: ModelArguments, data_args: DataArguments, reward_args: RewardServiceArguments,
         args: RolloutArguments) -> dict[str, Any]:
    return {
        "stage": "rollouts",
        "policy": {"base": model_args.model_name_or_path, "adapter_path": model_args.adapter_path,
                   "quantization": model_args.quantization},
        "problems": {"dataset": data_args.dataset, "split": args.rollout_split,
                     "split_file": data_args.split_file, "max_train_samples": data_args.max_train_samples},
        "sampling": {"num_samples": args.num_samples,
                     "temperatures": args.temperatures or [args.temperature] * args.num_samples,
                     "top_p": args.top_p, "seed": args.seed, "per_sample_seed": "hash(seed, question id, k)",
                     "max_new_tokens": args.max_new_tokens},
        "batching": {"generation_batch_size": args.generation_batch_size,
                     "questions_per_chunk": args.questions_per_chunk, "backend": args.generation_backend},
        "reward": {"url": reward_args.reward_url, "batch_items": reward_args.reward_batch_items},
        "writes": args.rollouts_file,
        "resume": "existing complete lines are kept; done ids are skipped; a torn last line is cut",
    }


def _check_existing(records: list[dict[str, Any]], args: RolloutArguments) -> set[str]:
    """Ids already in the file; an error when they were sampled with other settings than this run's."""
    done: set[str] = set()
    for r in records:
        qid = str(r.get("id"))
        trajectories = r.get("trajectories") or []
        if len(trajectories) != args.num_samples:
            raise ValueError(
                f"{args.rollouts_file} holds question {qid!r} with {len(trajectories)} trajectories but this "
                f"run samples num_samples={args.num_samples}; use another rollouts_file or the same settings"
            )
        want = [(s.seed, s.temperature) for s in sampling_specs(args, qid)]
        have = [(t.get("seed"), t.get("temperature")) for t in trajectories]
        if have != want:
            raise ValueError(
                f"{args.rollouts_file} holds question {qid!r} sampled with other seeds/temperatures than this "
                "run's (seed, temperature, temperatures); use another rollouts_file or the same settings"
            )
        done.add(qid)
    return done


def _score_chunk(client: Any, chunk: Sequence[Any], generations: Sequence[Any]) -> Any:
    from shared_schemas.wire import ScoreItem

    items = [
        ScoreItem(
            id=p.id,
            question=p.question,
            gold_answer=p.gold,
            trajectories=[g.text for g in gens],
            num_tokens=[g.num_tokens for g in gens],
        )
        for p, gens in zip(chunk, generations, strict=True)
    ]
    return client.score(items, return_details=True)


def _record(problem: Any, gens: Sequence[Any], specs: Sequence[Any], result: Any, scorer: dict[str, Any]) -> dict[str, Any]:
    from shared_schemas.answer import parse_answer

    if len(result.scores) != len(gens):
        raise ValueError(
            f"reward service returned {len(result.scores)} scores for {problem.id!r} but {len(gens)} "
            "trajectories were sent"
        )
    trajectories = []
    for g, spec, s in zip(gens, specs, result.scores, strict=True):
        parsed = parse_answer(g.text)
        trajectories.append({
            "output": g.text,
            "reward": s.reward,
            "correctness": s.correctness,
            "s_end": s.s_end,
            "s_path": s.s_path,
            "s_cf": s.s_cf,
            "s_wm": s.s_wm,
            "length_penalty": s.length_penalty,
            "final_answer": parsed.value,
            "format_ok": parsed.format_ok,
            "num_tokens": g.num_tokens,
            "seed": spec.seed,
            "temperature": spec.temperature,
        })
    return {
        "id": problem.id,
        "question": problem.question,
        "gold_answer": problem.gold,
        "consensus_answer": result.consensus_answer,
        "trajectories": trajectories,
        "scorer": scorer,
    }


def run(model_args: ModelArguments, data_args: DataArguments, reward_args: RewardServiceArguments,
        args: RolloutArguments) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from trainer.prompts import build_prompt
    from trainer.reward_client import RewardClient, RewardServiceError

    problems = _select_problems(data_args, args.rollout_split)
    done = _check_existing(recover_jsonl(args.rollouts_file), args)
    todo = [p for p in problems if p.id not in done]
    already = len(problems) - len(todo)
    summary: dict[str, Any] = {"stage": "rollouts", "rollouts_file": args.rollouts_file,
                               "questions": len(problems), "already_done": already, "written": 0}
    if not todo:
        print(f"rollouts: all {len(problems)} questions already in {args.rollouts_file}; nothing to do")
        return summary

    client = RewardClient.from_args(reward_args)
    sampler = _Sampler(model_args, args)
    rewards: list[float] = []
    bar = tqdm(total=len(problems), initial=already, unit="q", desc="rollouts",
               disable=not args.progress, dynamic_ncols=True, file=sys.stderr)
    try:
        with JsonlAppender(args.rollouts_file) as out:
            for start in range(0, len(todo), args.questions_per_chunk):
                chunk = todo[start : start + args.questions_per_chunk]
                specs = [sampling_specs(args, p.id) for p in chunk]
                prompts = [build_prompt(p.question, sampler.tokenizer) for p in chunk]
                flat = sampler([pr for pr in prompts for _ in range(args.num_samples)],
                               [s for per_q in specs for s in per_q])
                gens = [flat[i * args.num_samples : (i + 1) * args.num_samples] for i in range(len(chunk))]
                try:
                    response = _score_chunk(client, chunk, gens)
                except RewardServiceError as exc:
                    raise RolloutsStopped(
                        f"rollouts stopped: the reward service failed while scoring "
                        f"{[p.id for p in chunk]}: {exc}. {already + summary['written']} of "
                        f"{len(problems)} questions are saved in {args.rollouts_file}; rerun the same "
                        "command to resume."
                    ) from exc
                scorer = response.scorer.model_dump()
                by_id = {r.id: r for r in response.results}
                for p, g, s in zip(chunk, gens, specs, strict=True):
                    if p.id not in by_id:
                        raise RolloutsStopped(f"reward service response has no result for {p.id!r}")
                    record = _record(p, g, s, by_id[p.id], scorer)
                    out.append(record)
                    summary["written"] += 1
                    rewards.extend(t["reward"] for t in record["trajectories"])
                    bar.update(1)
    finally:
        bar.close()
        client.close()
    summary["mean_reward"] = sum(rewards) / len(rewards) if rewards else None
    print(f"rollouts: wrote {summary['written']} questions ({already} were already done) to {args.rollouts_file}")
    return summary
