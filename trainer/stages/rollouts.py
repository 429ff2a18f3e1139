"""Stage ``rollouts``: sample N trajectories per question from base + SFT adapter and score them.

Each question gets ``num_samples`` completions; sample ``k`` uses seed ``hash(seed, question id, k)``
(:func:`trainer.generation.sample_seed`) and temperature ``temperatures[k % len]`` (default: all
``temperature``). Prompts of many questions go through one batched ``generate`` call; every
question's trajectories then go to the reward service as one ``ScoreItem`` (with their token counts),
and each scored question is appended to ``rollouts_file`` as one JSON line
(``trainer.records.RolloutRecord``).

Reward (``reward``, recipe key and flag): ``regime_w`` scores over HTTP (``label_free: true`` leaves the
gold out of the request even when the data set has it); the controls ``correctness`` (answer vs gold)
and ``majority`` (the vote among the question's own N samples) are computed here, with no service
(``trainer.reward_modes``). Every record names its reward, and ``<rollouts_file stem>.run.json``
(``trainer.records.RunInfo``) records the run: reward, scorer, inputs, summary.

Overlap (``scoring_in_flight``, default 2): a generated chunk is scored and appended on a background
thread (``trainer.pipeline.OrderedJobs``: in order, one chunk at a time) while the next chunk generates;
generation runs at most ``scoring_in_flight`` chunks ahead of the last chunk written (0: score each chunk
before generating the next, as before). With ``reward: regime_w`` and ``precompute_arms_ahead`` N > 0
(default 2) the service is asked (``POST /v1/arms/precompute``, ``trainer.pipeline.ArmPrefetcher``) to
generate the arms of the chunk about to be generated and of the N - 1 after it, so scoring finds them
cached; a failed request only switches that off. The summary's ``timing`` and ``arms_precompute`` say
how the time went.

Crash safety: a line is appended with a single write of ``line + "\\n"`` followed by flush + fsync.
On start the file is read, a torn last line (from a killed run) is cut off, and the ids already done
are skipped, so rerunning the same command after a crash finishes the set with every question
exactly once (a file made with another reward or other sampling settings is refused). Chunks are
appended in order; a killed run loses only the chunks generated and not yet written (their seeds make
them again on the rerun). A reward-service error stops the run with a clear message: lines already
written stay, and no chunk after the failed one is written.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainer.configs import DataArguments, ModelArguments, RewardServiceArguments
from trainer.errors import RewardInputError, StageError
from trainer.generation.engine_choice import DEFAULT_GENERATION_ENGINE, GENERATION_ENGINE_HELP, check_generation_engine
from trainer.jsonl import JsonlAppender, iter_jsonl, read_records, write_json_atomic
from trainer.records import RolloutRecord, RunInfo, TrajectoryRecord, reward_label_free
from trainer.reward_modes import GroupScores, ScoreGroup, Scorer, check_reward_mode, scorer_from_args

__all__ = [
    "RolloutArguments",
    "ARG_CLASSES",
    "RolloutsStopped",
    "recover_jsonl",
    "read_rollouts",
    "sampling_specs",
    "plan",
    "run",
]

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
    generation_engine: str = field(default=DEFAULT_GENERATION_ENGINE, metadata={"help": GENERATION_ENGINE_HELP})
    generation_backend: str | None = field(
        default=None, metadata={"help": "Removed: an error naming its generation_engine value when set."}
    )
    scoring_in_flight: int = field(
        default=2,
        metadata={
            "help": "Chunks generated and not yet scored + written while the next chunk generates (scoring "
            "runs on a background thread, in order); 0 = score each chunk before generating the next."
        },
    )
    precompute_arms_ahead: int = field(
        default=2,
        metadata={
            "help": "reward regime_w: ask the service to generate the arms of this many chunks of questions "
            "ahead, the one about to be generated included (POST /v1/arms/precompute); 0 = never."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})

    def __post_init__(self) -> None:
        if self.scoring_in_flight < 0 or self.precompute_arms_ahead < 0:
            raise ValueError("scoring_in_flight and precompute_arms_ahead must be >= 0")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.rollout_split not in SPLITS:
            raise ValueError(f"rollout_split must be one of {SPLITS}, got {self.rollout_split!r}")
        if self.max_new_tokens < 1 or self.generation_batch_size < 1:
            raise ValueError("max_new_tokens and generation_batch_size must be >= 1")
        check_generation_engine(self.generation_engine, removed_backend=self.generation_backend)
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
    """The records of a rollouts file, after cutting a torn last line (a killed append) off the file."""
    path = Path(path)
    if not path.exists():
        return []
    return [record for _, record in iter_jsonl(path, tail="truncate")]


def read_rollouts(path: str | Path, *, tail: Literal["skip", "truncate"] = "skip") -> list[RolloutRecord]:
    """The complete, validated records of a rollouts file (``tail``: see ``trainer.jsonl``)."""
    path = Path(path)
    if not path.exists():
        return []
    return list(read_records(path, RolloutRecord, tail=tail))


# ------------------------------------------------------------------------------------------ sampling


def sampling_specs(args: RolloutArguments, question_id: str) -> list[Any]:
    """The N ``SamplingSpec`` of one question: distinct seeds, temperatures cycled from the recipe."""
    from trainer.generation import SamplingSpec, sample_seed

    temps = args.temperatures or [args.temperature]
    return [
        SamplingSpec(
            temperature=float(temps[k % len(temps)]), top_p=args.top_p, seed=sample_seed(args.seed, question_id, k)
        )
        for k in range(args.num_samples)
    ]


def _select_problems(data_args: DataArguments, split: str) -> list[Any]:
    from trainer.data import load_test_problems, load_train_dev

    if split == "test":
        problems = load_test_problems(data_args)
        return problems[: data_args.max_eval_samples] if data_args.max_eval_samples else problems
    train, dev = load_train_dev(data_args)
    return train if split == "train" else dev


class _Sampler:
    """Generates a chunk of prompts with the engine ``generation_engine`` resolves to."""

    def __init__(self, model_args: ModelArguments, args: RolloutArguments) -> None:
        from trainer.generation import resolve_generation_engine
        from trainer.modeling import load_tokenizer

        self.args = args
        self.engine = resolve_generation_engine(args.generation_engine)
        self.tokenizer = load_tokenizer(model_args)
        self.vllm = None
        self.model = None
        if self.engine == "vllm":
            from trainer.generation import VLLMGenerator

            self.vllm = VLLMGenerator(model_args.model_name_or_path, enable_lora=model_args.adapter_path is not None)
            self.adapter_path = model_args.adapter_path
        else:
            from trainer.modeling import load_policy

            self.model = load_policy(model_args, trainable=False)

    def __call__(self, prompts: Sequence[str], specs: Sequence[Any]) -> list[Any]:
        from trainer.generation import generate_texts

        if self.vllm is not None:
            return self.vllm.generate(
                prompts, specs, max_new_tokens=self.args.max_new_tokens, adapter_path=self.adapter_path
            )
        return generate_texts(
            self.model,
            self.tokenizer,
            prompts,
            specs,
            max_new_tokens=self.args.max_new_tokens,
            batch_size=self.args.generation_batch_size,
            engine=self.engine,
        )


# ----------------------------------------------------------------------------------------- the stage


def plan(
    model_args: ModelArguments, data_args: DataArguments, reward_args: RewardServiceArguments, args: RolloutArguments
) -> dict[str, Any]:
    uses_service = reward_args.reward == "regime_w"
    return {
        "stage": "rollouts",
        "policy": {
            "base": model_args.model_name_or_path,
            "adapter_path": model_args.adapter_path,
            "quantization": model_args.quantization,
        },
        "problems": {
            "dataset": data_args.dataset,
            "split": args.rollout_split,
            "split_file": data_args.split_file,
            "max_train_samples": data_args.max_train_samples,
        },
        "sampling": {
            "num_samples": args.num_samples,
            "temperatures": args.temperatures or [args.temperature] * args.num_samples,
            "top_p": args.top_p,
            "seed": args.seed,
            "per_sample_seed": "hash(seed, question id, k)",
            "max_new_tokens": args.max_new_tokens,
        },
        "batching": {
            "generation_batch_size": args.generation_batch_size,
            "questions_per_chunk": args.questions_per_chunk,
            "engine": args.generation_engine,
            "scoring_in_flight": args.scoring_in_flight,
            "precompute_arms_ahead": args.precompute_arms_ahead if uses_service else 0,
        },
        "reward": {
            "mode": reward_args.reward,
            "label_free": reward_label_free(reward_args.reward, reward_args.label_free),
            "service": (
                {
                    "url": reward_args.reward_url,
                    "batch_items": reward_args.reward_batch_items,
                    "patience_s": reward_args.reward_patience_s,
                }
                if uses_service
                else None
            ),
        },
        "writes": [args.rollouts_file, RunInfo.path_for(args.rollouts_file)],
        "resume": "existing complete lines are kept; done ids are skipped; a torn last line is cut",
    }


def _check_existing(
    records: list[RolloutRecord], args: RolloutArguments, reward_args: RewardServiceArguments
) -> set[str]:
    """Ids already in the file; an error when they were made with another reward or other sampling
    settings than this run's."""
    label_free = reward_label_free(reward_args.reward, reward_args.label_free)
    done: set[str] = set()
    for r in records:
        if (r.reward_mode, r.label_free) != (reward_args.reward, label_free):
            raise ValueError(
                f"{args.rollouts_file} holds question {r.id!r} scored with reward {r.reward_mode!r} "
                f"(label_free={r.label_free}) but this run uses {reward_args.reward!r} (label_free={label_free}); "
                "use another rollouts_file or the same reward"
            )
        if len(r.trajectories) != args.num_samples:
            raise ValueError(
                f"{args.rollouts_file} holds question {r.id!r} with {len(r.trajectories)} trajectories but this "
                f"run samples num_samples={args.num_samples}; use another rollouts_file or the same settings"
            )
        want = [(s.seed, s.temperature) for s in sampling_specs(args, r.id)]
        have = [(t.seed, t.temperature) for t in r.trajectories]
        if have != want:
            raise ValueError(
                f"{args.rollouts_file} holds question {r.id!r} sampled with other seeds/temperatures than this "
                "run's (seed, temperature, temperatures); use another rollouts_file or the same settings"
            )
        done.add(r.id)
    return done


#: The per-trajectory reward fields a rollout record keeps of a scorer's ``TrajectoryScore``.
_SCORE_FIELDS = ("reward", "correctness", "s_end", "s_path", "s_cf", "s_wm", "length_penalty")


def _record(
    problem: Any,
    gens: Sequence[Any],
    specs: Sequence[Any],
    scores: GroupScores,
    *,
    scorer: dict[str, Any] | None,
    reward_mode: str,
    label_free: bool,
) -> RolloutRecord:
    from shared_schemas.answer import parse_answer

    trajectories = []
    for g, spec, score in zip(gens, specs, scores.scores, strict=True):
        parsed = parse_answer(g.text)  # the one source of final_answer / format_ok (trainer.records)
        trajectories.append(
            TrajectoryRecord(
                output=g.text,
                **{name: getattr(score, name) for name in _SCORE_FIELDS},
                final_answer=parsed.value,
                format_ok=parsed.format_ok,
                num_tokens=g.num_tokens,
                seed=spec.seed,
                temperature=spec.temperature,
            )
        )
    return RolloutRecord(
        id=problem.id,
        question=problem.question,
        gold_answer=problem.gold,
        consensus_answer=scores.consensus_answer,
        trajectories=trajectories,
        scorer=scorer,
        reward_mode=check_reward_mode(reward_mode),
        label_free=label_free,
    )


class _Writer:
    """Scores a generated chunk and appends its records, in chunk order (an ``OrderedJobs`` job)."""

    def __init__(
        self,
        out: JsonlAppender,
        jobs: Any,
        reward: Scorer,
        reward_args: RewardServiceArguments,
        summary: dict[str, Any],
        bar: Any,
        scorer: dict[str, Any] | None,
        *,
        total: int,
        rollouts_file: str,
    ) -> None:
        self.out, self.jobs, self.reward, self.bar = out, jobs, reward, bar
        self.reward_mode = reward_args.reward
        self.label_free = reward_label_free(reward_args.reward, reward_args.label_free)
        self.summary = summary
        self.scorer = scorer
        self.rewards: list[float] = []
        self.total = total
        self.rollouts_file = rollouts_file

    def finish(self, chunk: Sequence[Any], gens: Sequence[Sequence[Any]], specs: Sequence[Sequence[Any]]) -> None:
        from trainer.reward_client import RewardServiceError

        groups = [
            ScoreGroup(
                id=p.id,
                question=p.question,
                gold=p.gold,
                texts=[g.text for g in gen],
                num_tokens=[g.num_tokens for g in gen],
            )
            for p, gen in zip(chunk, gens, strict=True)
        ]
        try:
            scored = self.reward.score(groups)
        except RewardInputError as exc:  # e.g. reward correctness and a question without its gold
            raise RolloutsStopped(str(exc)) from exc
        except RewardServiceError as exc:
            saved = self.summary["already_done"] + self.summary["written"]
            raise RolloutsStopped(
                f"rollouts stopped: the reward service failed while scoring {[p.id for p in chunk]}: {exc}. "
                f"{saved} of {self.total} questions are saved in {self.rollouts_file}; rerun the same "
                "command to resume."
            ) from exc
        records = [
            _record(p, g, s, sc, scorer=self.reward.info, reward_mode=self.reward_mode, label_free=self.label_free)
            for p, g, s, sc in zip(chunk, gens, specs, scored, strict=True)
        ]

        def write() -> None:
            self.scorer = self.reward.info or self.scorer
            for record in records:
                self.out.append(record)
                self.summary["written"] += 1
                self.rewards.extend(t.reward for t in record.trajectories)
                self.bar.update(1)

        self.jobs.commit(write)


def _prefetcher(reward_args: RewardServiceArguments, args: RolloutArguments) -> Any:
    if reward_args.reward != "regime_w" or args.precompute_arms_ahead == 0:
        return None
    from trainer.pipeline import ArmPrefetcher
    from trainer.reward_client import RewardClient

    return ArmPrefetcher(RewardClient.from_args(reward_args))  # its own connections: it runs beside scoring


def run(
    model_args: ModelArguments, data_args: DataArguments, reward_args: RewardServiceArguments, args: RolloutArguments
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from trainer.pipeline import OrderedJobs
    from trainer.prompts import build_prompt

    problems = _select_problems(data_args, args.rollout_split)
    existing = read_rollouts(args.rollouts_file, tail="truncate")
    done = _check_existing(existing, args, reward_args)
    todo = [p for p in problems if p.id not in done]
    already = len(problems) - len(todo)
    label_free = reward_label_free(reward_args.reward, reward_args.label_free)
    summary: dict[str, Any] = {
        "stage": "rollouts",
        "rollouts_file": args.rollouts_file,
        "reward": reward_args.reward,
        "label_free": label_free,
        "questions": len(problems),
        "already_done": already,
        "written": 0,
    }
    scorer: dict[str, Any] | None = next((r.scorer for r in existing if r.scorer), None)
    if not todo:
        print(f"rollouts: all {len(problems)} questions already in {args.rollouts_file}; nothing to do")
        _write_run_info(args, reward_args, data_args, summary, scorer)
        return summary

    chunks = [todo[i : i + args.questions_per_chunk] for i in range(0, len(todo), args.questions_per_chunk)]
    reward = scorer_from_args(reward_args).connect()  # a bad URL or key file fails here, before any generation
    prefetch = None
    jobs = OrderedJobs(args.scoring_in_flight, name="rollouts-scoring")
    generation_s = 0.0
    loop_start = time.perf_counter()
    try:
        sampler = _Sampler(model_args, args)
        prefetch = _prefetcher(reward_args, args)
        requested = 0  # chunks whose arms were asked for
        bar = tqdm(
            total=len(problems),
            initial=already,
            unit="q",
            desc=f"rollouts ({reward_args.reward})",
            disable=not args.progress,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        loop_start = time.perf_counter()
        try:
            with JsonlAppender(args.rollouts_file) as out:
                writer = _Writer(
                    out,
                    jobs,
                    reward,
                    reward_args,
                    summary,
                    bar,
                    scorer,
                    total=len(problems),
                    rollouts_file=args.rollouts_file,
                )
                try:
                    for k, chunk in enumerate(chunks):
                        if prefetch is not None:
                            while requested < min(len(chunks), k + args.precompute_arms_ahead):
                                prefetch.request([p.question for p in chunks[requested]])
                                requested += 1
                        specs = [sampling_specs(args, p.id) for p in chunk]
                        prompts = [build_prompt(p.question, sampler.tokenizer) for p in chunk]
                        started = time.perf_counter()
                        flat = sampler(
                            [pr for pr in prompts for _ in range(args.num_samples)],
                            [s for per_q in specs for s in per_q],
                        )
                        generation_s += time.perf_counter() - started
                        gens = [flat[i * args.num_samples : (i + 1) * args.num_samples] for i in range(len(chunk))]
                        jobs.submit(functools.partial(writer.finish, chunk, gens, specs))
                    jobs.drain()
                finally:
                    jobs.stop()  # no append starts after this; the file closes next
            scorer = writer.scorer
        finally:
            bar.close()
    finally:
        jobs.stop()
        if prefetch is not None:
            prefetch.close()
        reward.close()
    rewards = writer.rewards
    summary["mean_reward"] = sum(rewards) / len(rewards) if rewards else None
    summary["timing"] = {
        "loop_s": round(time.perf_counter() - loop_start, 3),
        "generation_s": round(generation_s, 3),
        "scoring_s": round(jobs.busy_s, 3),
        "waited_on_scoring_s": round(jobs.waited_s, 3),
        "scoring_in_flight": args.scoring_in_flight,
        "max_scoring_in_flight": jobs.max_pending,
    }
    summary["arms_precompute"] = prefetch.stats() if prefetch is not None else None
    _write_run_info(args, reward_args, data_args, summary, scorer)
    print(
        f"rollouts: wrote {summary['written']} questions ({already} were already done) to {args.rollouts_file} "
        f"(reward {reward_args.reward}{', label-free' if label_free else ''})"
    )
    return summary


def _write_run_info(
    args: RolloutArguments,
    reward_args: RewardServiceArguments,
    data_args: DataArguments,
    summary: dict[str, Any],
    scorer: dict[str, Any] | None,
) -> None:
    info = RunInfo(
        stage="rollouts",
        reward_mode=reward_args.reward,  # type: ignore[arg-type]
        label_free=reward_label_free(reward_args.reward, reward_args.label_free),
        scorer=scorer,
        service_url=reward_args.reward_url if reward_args.reward == "regime_w" else None,
        inputs={"dataset": data_args.dataset, "split": args.rollout_split},
        outputs={"rollouts_file": args.rollouts_file},
        summary=summary,
    )
    summary["run_info"] = str(write_json_atomic(RunInfo.path_for(args.rollouts_file), info))
