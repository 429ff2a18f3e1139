"""The full offline loop on the toy world, every step through the REAL command-line tools.

    python scripts/toy_loop.py --workdir runs/toy-loop [--seed 0] [--quick]
    python -m experiments.toy_loop --workdir runs/toy-loop        # the same

An experiment driver, not part of the published trainer: it runs from a checkout of the repository (it
starts ``reward_service`` as a subprocess and reads the toy recipes and the toy scorer config from the
checkout; it never imports ``reward_service``).

1. ``regime-w-train toy-base``  (cached: a second run with the same settings returns at once)
2. ``regime-w-train sft``
3. ``regime-w-serve --backend hf --model <toy base> --config toy_config.toml`` on a free loopback
   port with a fresh API key; while it is up: ``rollouts`` -> ``prefs`` -> ``dpo`` -> ``grpo``
   (the service generates the 8 arms live with the toy base and scores over HTTP)
4. ``regime-w-train eval`` of base / sft / rl-dpo / rl-grpo, and the accuracy table.

Every artifact goes under ``workdir`` (the recipes' paths are overridden on the command line), the
service is stopped at the end also on failure, and ``run_toy_loop`` returns the accuracy table and
the wall time of every step (also written to ``workdir/toy_loop.json``). Tests, ``scripts/demo.py`` and
``scripts/toy_loop.py`` (a thin wrapper) import this module.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import httpx

from trainer.jsonl import iter_jsonl, read_records
from trainer.records import EvalPrediction, RolloutRecord
from trainer.toy.base import MARKER_FILE
from trainer.toy.determinism import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "toy"
TOY_CONFIG = ROOT / "reward_service" / "regime_w" / "toy_config.toml"
#: The recipe's toy base, built once on the pinned kernels (``scripts/toy_base_asset.py``): the loop starts
#: from it (its cache key must match the settings and kernels, else the stage trains a new base).
SHIPPED_BASE = ROOT / "assets" / "toy_base"
STAGES = ("sft", "rollouts", "prefs", "dpo", "grpo", "eval")
MODELS = ("base", "sft", "rl-dpo", "rl-grpo")

#: Overrides of the ``--quick`` loop (the learning tests): the dev split only (no held-out test file)
#: and no accuracy pass at base-build time; everything else as the recipes say.
QUICK_OVERRIDES: dict[str, list[str]] = {
    "toy-base": ["--eval_samples", "0"],
    "eval": ["--eval_datasets", "gsm8k_dev"],
}


NOTES_MARKER = "<!-- notes: kept when the page is regenerated -->"


#: service starts tried when the port chosen for it is taken before it binds ("address already in use")
BIND_ATTEMPTS = 3


class LoopError(RuntimeError):
    """A step of the loop failed; the message names the step, its command and the log to read."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def reward_service(
    *flags: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 1800.0,
    say: Callable[[str], None] = print,
    api_key: str | None = None,
) -> Iterator[tuple[str, str]]:
    """Start ``regime-w-serve FLAGS`` on a free loopback port with ``api_key`` (default: a fresh key);
    yield (url, key); stop it (SIGTERM, then SIGKILL) on exit, also when the body raises. ``env`` is
    the whole environment of the service (default: this process's). ``ready_timeout_s`` is a hang guard
    (a service that exits fails at once): a loaded 2-core machine may take minutes to load a model."""
    key = api_key or "toy-" + secrets.token_hex(16)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, BIND_ATTEMPTS + 1):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "reward_service.cli", "--host", "127.0.0.1", "--port", str(port), *flags]
        say("$ REGIME_W_API_KEYS=<fresh key> regime-w-serve " + " ".join(cmd[3:]))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**(env or os.environ), "REGIME_W_API_KEYS": key},
            )
        try:
            if not _wait_ready(proc, url, log_path, ready_timeout_s, last_attempt=attempt == BIND_ATTEMPTS):
                say(f"port {port} was taken before the service bound it; again on another port")
                continue
            say(f"reward service ready at {url} (log: {log_path})")
            yield url, key
            return
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            say(f"reward service stopped (exit {proc.returncode})")


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float, *, last_attempt: bool
) -> bool:
    """Poll ``url``/readyz until 200 (True). A service that exits fails with its log, except one that lost its
    port between ``free_port`` and its bind (another process's outgoing connection may take a port the kernel
    has just handed out): False, unless this was the ``last_attempt``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            if not last_attempt and "address already in use" in _tail(log_path):
                return False
            raise LoopError(
                f"the reward service exited ({proc.returncode}) before it was ready; log: {log_path}\n{_tail(log_path)}"
            )
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise LoopError(f"the reward service was not ready in {timeout_s:.0f} s; log: {log_path}")
        time.sleep(0.3)


def seed_from_shipped(base: Path) -> bool:
    """Copy ``SHIPPED_BASE`` into an empty ``base`` folder; True when copied."""
    if (base / MARKER_FILE).exists() or not (SHIPPED_BASE / MARKER_FILE).exists():
        return False
    shutil.copytree(SHIPPED_BASE, base, dirs_exist_ok=True)
    return True


def run_parallel(tasks: Sequence[Callable[[], Any]], jobs: int) -> None:
    """Run ``tasks`` (each a chain of subprocesses) ``jobs`` at a time, in order; the first failure is raised
    once every started task has ended."""
    if jobs <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(task) for task in tasks]
        errors = [f.exception() for f in futures]
    for err in errors:
        if err is not None:
            raise err


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _last_json(stdout: str) -> dict[str, Any]:
    """The JSON summary regime-w-train prints last (indented, starting with a '{' line)."""
    lines = stdout.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] == "{":
            try:
                found = json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                break
            return found if isinstance(found, dict) else {}
    return {}


class Paths:
    """Where every artifact of one loop goes (all under ``workdir``)."""

    def __init__(self, workdir: Path, base_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.data = workdir / "data" / "toy"
        self.base = base_dir or workdir / "checkpoints" / "toy_base"
        self.split = self.data / "split.json"
        self.sft = workdir / "checkpoints" / "lora_sft"
        self.rollouts = workdir / "data" / "rl_rollouts.jsonl"
        self.prefs = workdir / "data" / "preferences.jsonl"
        self.dpo = workdir / "checkpoints" / "lora_rl"
        self.grpo = workdir / "checkpoints" / "lora_grpo"
        self.eval = workdir / "results" / "toy-eval"
        self.logs = workdir / "logs"


def stage_flags(stage: str, p: Paths, seed: int) -> list[str]:
    """The recipe path overrides that put a stage's inputs and outputs under the workdir."""
    data = [
        "--dataset",
        str(p.data / "train.jsonl"),
        "--test_dataset",
        str(p.data / "test.jsonl"),
        "--split_file",
        str(p.split),
    ]
    base = ["--model_name_or_path", str(p.base)]
    if stage == "toy-base":
        return ["--toy_data_dir", str(p.data), "--toy_base_dir", str(p.base)]
    if stage == "sft":
        return [*base, *data, "--output_dir", str(p.sft), "--seed", str(seed)]
    if stage == "rollouts":
        return [*base, *data, "--adapter_path", str(p.sft), "--rollouts_file", str(p.rollouts), "--seed", str(seed)]
    if stage == "prefs":
        return ["--rollouts_file", str(p.rollouts), "--preferences_file", str(p.prefs)]
    if stage == "dpo":
        return [
            *base,
            "--adapter_path",
            str(p.sft),
            "--preferences_file",
            str(p.prefs),
            "--output_dir",
            str(p.dpo),
            "--seed",
            str(seed),
        ]
    if stage == "grpo":
        return [*base, *data, "--adapter_path", str(p.sft), "--output_dir", str(p.grpo), "--seed", str(seed)]
    if stage == "eval":
        models = ["base", f"sft={p.sft}", f"rl-dpo={p.dpo}", f"rl-grpo={p.grpo}"]
        return [
            *base,
            *data,
            "--platinum",
            str(p.data / "dev.jsonl"),
            "--eval_output_dir",
            str(p.eval),
            "--eval_models",
            *models,
        ]
    raise ValueError(f"unknown stage {stage!r}")


class Runner:
    """Runs ``regime-w-train STAGE`` subprocesses, logs them, and times them."""

    def __init__(self, paths: Paths, *, threads: int, verbose: bool, say: Callable[[str], None]) -> None:
        self.paths = paths
        self.threads = threads
        self.verbose = verbose
        self.say = say
        self.timings: dict[str, float] = {}
        self.summaries: dict[str, dict[str, Any]] = {}

    def stage(self, stage: str, flags: Sequence[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
        recipe = RECIPES / ("toy_base.yaml" if stage == "toy-base" else f"{stage}.yaml")
        cmd = [sys.executable, "-m", "trainer.cli", stage, "--config", str(recipe), *flags]
        self.say("$ regime-w-train " + " ".join(_short(a) for a in cmd[3:]))
        log_path = self.paths.logs / f"{stage}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log:
            err: TextIO | int = sys.stderr if self.verbose else log
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=subprocess_env(self.threads, env),
                check=False,
            )
            log.write(proc.stdout)
        self.timings[stage] = round(time.monotonic() - started, 1)
        if proc.returncode != 0:
            raise LoopError(
                f"step {stage!r} failed (exit {proc.returncode}) after {self.timings[stage]} s: "
                f"{' '.join(cmd[3:])}\nlog: {log_path}\n{_tail(log_path)}"
            )
        summary = _last_json(proc.stdout)
        self.summaries[stage] = summary
        self.say(f"  {stage} done in {self.timings[stage]:.0f} s")
        return summary


def _short(arg: str) -> str:
    """Paths under the repository are printed relative to it."""
    try:
        return str(Path(arg).relative_to(ROOT)) if arg.startswith(str(ROOT)) else arg
    except ValueError:
        return arg


def accuracy_table(results_json: Path) -> dict[str, dict[str, dict[str, float | int]]]:
    """{dataset: {model: {accuracy, correct, n}}} from the eval stage's results.json."""
    data = json.loads(results_json.read_text(encoding="utf-8"))
    table: dict[str, dict[str, dict[str, float | int]]] = {}
    for cell in data["results"]:
        table.setdefault(cell["dataset"], {})[cell["model"]] = {
            "accuracy": round(float(cell["accuracy"]), 4),
            "correct": int(cell["correct"]),
            "n": int(cell["n"]),
        }
    return table


def format_table(table: dict[str, dict[str, dict[str, float | int]]]) -> str:
    models = [m for m in MODELS if any(m in row for row in table.values())]
    head = f"{'dataset':<18}" + "".join(f"{m:>10}" for m in models)
    lines = [head, "-" * len(head)]
    for dataset, row in table.items():
        n = next(iter(row.values()))["n"]
        lines.append(
            f"{dataset + f' ({n})':<18}"
            + "".join(f"{100 * float(row[m]['accuracy']):>9.1f}%" if m in row else f"{'-':>10}" for m in models)
        )
    return "\n".join(lines)


def run_toy_loop(
    workdir: Path | str,
    *,
    seed: int = 0,
    quick: bool = False,
    threads: int = 1,
    base_dir: Path | str | None = None,
    overrides: Mapping[str, Sequence[str]] | None = None,
    verbose: bool = True,
    on_service: Callable[[str, str, Paths], None] | None = None,
    before_stop: Callable[[str, str, Paths], Any] | None = None,
    say: Callable[[str], None] | None = None,
    only: Sequence[str] | None = None,
    jobs: int = 1,
    shipped_base: bool = True,
    more_rl: Callable[[str, str, Paths], Sequence[Callable[[], Any]]] | None = None,
    beside_eval: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Run the whole loop under ``workdir``; return the accuracy table, timings and step summaries.

    ``seed`` is the training seed of sft / rollouts / dpo / grpo (the toy base keeps its recipe seed
    so it is cached across seeds); ``quick`` applies ``QUICK_OVERRIDES``; ``overrides`` adds
    ``--flag value`` lists per stage (they win); ``base_dir`` shares one cached toy base between
    workdirs; ``on_service(url, key, paths)`` runs once the service is up (the demo curl-scores there),
    ``before_stop(url, key, paths)`` after GRPO while it is still up (its return value is kept as
    ``result["before_stop"]``). ``only`` runs just those stages (the others' artifacts must already
    be in ``workdir``: for experiments on one stage). ``jobs`` 2 runs DPO and GRPO side by side (each
    from the SFT adapter, each its own process of ``threads`` threads; only GRPO calls the service), which
    gives the same adapters as one after the other on a machine with two free cores. ``shipped_base``
    starts an empty base folder from ``SHIPPED_BASE`` (the toy-base stage keeps it when its cache key
    matches these settings, else trains over it); False trains the base here.

    ``more_rl(url, key, paths)``, once prefs are written, returns more training runs from the SFT adapter (each
    a callable running its subprocesses, e.g. ``experiments.ablation.grpo_control_runs``' tasks): they share
    the pool of ``jobs`` with DPO and GRPO, the longest first (GRPO, then these, then the short DPO), so on two
    cores three GRPO runs and DPO take two rounds, not three. ``beside_eval()`` runs after the service has
    stopped, beside the eval stage in the same pool (e.g. the evaluation of those runs); its return value is
    ``result["beside_eval"]``.
    """
    say = say or (lambda text: print(text, flush=True))
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    paths = Paths(workdir, Path(base_dir).resolve() if base_dir else None)
    runner = Runner(paths, threads=threads, verbose=verbose, say=say)
    extra: dict[str, list[str]] = {k: list(v) for k, v in (QUICK_OVERRIDES if quick else {}).items()}
    for stage, stage_flags_extra in (overrides or {}).items():
        extra[stage] = [*extra.get(stage, []), *stage_flags_extra]

    todo = set(only or STAGES)
    unknown = todo - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")

    def flags(stage: str) -> list[str]:
        return [*stage_flags(stage, paths, seed), *extra.get(stage, [])]

    started = time.monotonic()
    if shipped_base and seed_from_shipped(paths.base):
        say(f"--- toy base: the shipped one ({_short(str(SHIPPED_BASE))}), used when its settings match")
    say(f"--- toy base (cached under {_short(str(paths.base))})")
    base = runner.stage("toy-base", [*flags("toy-base"), "--base_num_threads", str(threads)])
    say(
        f"  toy base: {'cached' if base.get('cached') else 'trained'}; "
        f"dev accuracy at build time: {base.get('dev_accuracy', 'not measured')}"
    )
    if "sft" in todo:
        say("--- SFT")
        runner.stage("sft", flags("sft"))
    say("--- reward service on the toy base (arms generated live by the toy model)")
    service_flags = (
        "--backend",
        "hf",
        "--model",
        str(paths.base),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--config",
        str(TOY_CONFIG),
        "--cache-path",
        str(workdir / "arm_cache.sqlite"),
        "--seed",
        str(seed),
    )
    with reward_service(
        *service_flags, log_path=paths.logs / "reward-service.log", env=subprocess_env(threads), say=say
    ) as (url, key):
        if on_service is not None:
            on_service(url, key, paths)
        service_env = {"REGIME_W_URL": url, "REGIME_W_API_KEY": key}

        def run(stage: str) -> None:
            say(f"--- {stage}")
            if stage == "rollouts":
                paths.rollouts.unlink(missing_ok=True)  # the stage resumes a file it finds; this run starts fresh
            extra_flags = ["--reward_url", url] if stage in ("rollouts", "grpo") else []
            runner.stage(stage, [*flags(stage), *extra_flags], env=service_env)

        for stage in ("rollouts", "prefs"):
            if stage in todo:
                run(stage)
        # DPO, GRPO and ``more_rl``'s runs all start from the SFT adapter: independent, so they may run side by
        # side; the longest first (a pool of ``jobs`` takes them in this order)
        rl_runs: list[Callable[[], Any]] = [functools.partial(run, "grpo")] if "grpo" in todo else []
        rl_runs += list(more_rl(url, key, paths)) if more_rl is not None else []
        rl_runs += [functools.partial(run, "dpo")] if "dpo" in todo else []
        run_parallel(rl_runs, jobs)
        hook_result = before_stop(url, key, paths) if before_stop is not None else None
    beside: dict[str, Any] = {}
    after_stop: list[Callable[[], Any]] = []
    if "eval" in todo:

        def evaluate() -> None:
            say("--- eval: base / sft / rl-dpo / rl-grpo")
            runner.stage("eval", flags("eval"))

        after_stop.append(evaluate)
    if beside_eval is not None:
        after_stop.append(lambda: beside.update(result=beside_eval()))
    run_parallel(after_stop, jobs)
    table = accuracy_table(paths.eval / "results.json")
    styles = style_report(paths.eval / "predictions.jsonl", paths.data / "train.jsonl")
    result = {
        "workdir": str(workdir),
        "seed": seed,
        "quick": quick,
        "threads": threads,
        "jobs": jobs,
        "table": table,
        "styles": styles,
        "timings_s": runner.timings,
        "total_s": round(time.monotonic() - started, 1),
        "base": {k: base.get(k) for k in ("cached", "dev_accuracy", "train_steps", "train_seconds")},
        "rollouts": _pick(runner.summaries.get("rollouts", {}), "questions", "trajectories", "written", "skipped"),
        "prefs": runner.summaries.get("prefs", {}),
        "dpo": _pick(runner.summaries.get("dpo", {}), "num_pairs", "global_step", "train_loss", "first_logged_loss"),
        "grpo": _pick(runner.summaries.get("grpo", {}), "global_step", "train_loss", "reward_per_step"),
        "chart": str(paths.eval / "accuracy.png"),
        "before_stop": hook_result,
        "beside_eval": beside.get("result"),
    }
    (workdir / "toy_loop.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    say("\n" + format_table(table))
    say("\n" + format_styles(styles))
    say(
        f"\nloop finished in {result['total_s']:.0f} s: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in runner.timings.items())
    )
    return result


_EQUATION = re.compile(r"([-+*/()0-9]+) = ?[0-9]")
_OPERATOR = re.compile(r"(?<=[0-9)])[-+*/](?=[0-9(])")


def count_steps(solution: str) -> int:
    """Arithmetic operations in a solution's equations (calculator annotations ignored): the number
    of steps of a toy problem whether its solution is written one line per step or folded."""
    text = re.sub(r"<<[^>]*>>", "", solution.split("####")[0])
    return sum(len(_OPERATOR.findall(expr)) for expr in _EQUATION.findall(text))


def style_report(predictions: Path, train_jsonl: Path, dataset: str = "gsm8k_dev") -> dict[str, dict[str, Any]]:
    """How each model writes its greedy answers to the MULTI-step problems of ``dataset``: the share
    written as one folded expression (at most one ``expr = value``) and the accuracy of each style.
    (The toy world's ``one_line`` annotator style; docs/toy-world.md.)"""
    golds = [str(row["answer"]) for _, row in iter_jsonl(train_jsonl)]
    out: dict[str, dict[str, Any]] = {}
    for row in read_records(predictions, EvalPrediction):
        if row.dataset != dataset or not row.id.startswith("gsm8k-train-"):
            continue
        if count_steps(golds[int(row.id.rsplit("-", 1)[1])]) < 2:
            continue
        folded = len(_EQUATION.findall(row.output.split("####")[0])) <= 1
        cell = out.setdefault(row.model, {"multi_step": 0, "folded": 0, "folded_correct": 0, "stepwise_correct": 0})
        cell["multi_step"] += 1
        cell["folded"] += folded
        cell["folded_correct" if folded else "stepwise_correct"] += row.correct
    for cell in out.values():
        stepwise = cell["multi_step"] - cell["folded"]
        cell["folded_share"] = round(cell["folded"] / max(1, cell["multi_step"]), 4)
        cell["folded_accuracy"] = round(cell["folded_correct"] / cell["folded"], 4) if cell["folded"] else None
        cell["stepwise_accuracy"] = round(cell["stepwise_correct"] / stepwise, 4) if stepwise else None
    return out


def format_styles(styles: dict[str, dict[str, Any]]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = ["multi-step dev problems: share answered in ONE folded line (accuracy folded / one line per step)"]
    for model in [m for m in MODELS if m in styles]:
        c = styles[model]
        lines.append(
            f"  {model:<8} {pct(c['folded_share']):>6} of {c['multi_step']}   "
            f"({pct(c['folded_accuracy'])} / {pct(c['stepwise_accuracy'])})"
        )
    return "\n".join(lines)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count one half."""
    pos = [x for x, y in zip(scores, labels, strict=True) if y]
    neg = [x for x, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        raise ValueError(f"AUROC needs both classes, got {len(pos)} positive and {len(neg)} negative")
    ranked = sorted(scores)
    # mid-ranks (1-based) handle ties
    first: dict[float, int] = {}
    count: dict[float, int] = {}
    for i, x in enumerate(ranked):
        first.setdefault(x, i + 1)
        count[x] = count.get(x, 0) + 1
    rank_sum = sum(first[x] + (count[x] - 1) / 2 for x in pos)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def label_free_auroc(url: str, key: str, paths: Paths, *, max_questions: int = 200) -> dict[str, Any]:
    """Re-score the toy rollouts WITHOUT ``gold_answer`` (label-free) and measure how well ``s_wm``
    separates correct from wrong trajectories (correctness from the gold, checked here with
    ``shared_schemas.answer``): pooled AUROC over every trajectory."""
    from shared_schemas.answer import answers_equal, parse_answer
    from shared_schemas.wire import ScoreItem
    from trainer.reward_client import RewardClient

    rows = list(read_records(paths.rollouts, RolloutRecord, tail="skip"))[:max_questions]
    items = [ScoreItem(id=r.id, question=r.question, trajectories=[t.output for t in r.trajectories]) for r in rows]
    with RewardClient(url, key, timeout_s=600.0) as client:
        response = client.score(items, return_details=True)
    by_id = {res.id: res for res in response.results}
    s_wm: list[float] = []
    correct: list[bool] = []
    for r in rows:
        for t, score in zip(r.trajectories, by_id[r.id].scores, strict=True):
            if score.correctness is not None:
                raise LoopError("label-free scoring returned a correctness term: gold_answer leaked")
            if score.s_wm is None:
                raise LoopError("the service returned no s_wm although details were asked for")
            s_wm.append(score.s_wm)
            correct.append(answers_equal(parse_answer(t.output).value, r.gold_answer))
    return {
        "auroc_s_wm": round(auroc(s_wm, correct), 4),
        "trajectories": len(s_wm),
        "correct": sum(correct),
        "questions": len(rows),
    }


def write_results_page(result: dict[str, Any], page: Path, *, command: str, notes: str = "") -> Path:
    """``page`` (markdown: the accuracy table, timings, the command) and the eval chart beside it
    (same name, ``.png``). Hand-written text after a ``NOTES_MARKER`` line of an existing page is kept."""
    import shutil

    chart = page.with_suffix(".png")
    page.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result["chart"], chart)
    table = result["table"]
    models = [m for m in MODELS if any(m in row for row in table.values())]
    lines = ["| dataset | " + " | ".join(models) + " |", "| --- |" + " ---: |" * len(models)]
    for dataset, row in table.items():
        lines.append(
            f"| {dataset} | "
            + " | ".join(f"{100 * float(row[m]['accuracy']):.1f}% ({row[m]['correct']}/{row[m]['n']})" for m in models)
            + " |"
        )
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in result["timings_s"].items())
    text = (
        f"# Toy world results\n\nGreedy accuracy (one generation per question, `trainer.prompts.build_prompt`, "
        f"answers checked by `shared_schemas.answer`) of the toy base, SFT, DPO (`rl-dpo`) and GRPO "
        f"(`rl-grpo`), training seed {result['seed']}.\n\n"
        + "\n".join(lines)
        + f"\n\n![accuracy]({chart.name})\n\nWall time {result['total_s']:.0f} s ({timings}); "
        f"{result['threads']} torch thread(s) per process.\n\nReproduce (table and chart):\n\n```bash\n{command}\n```\n"
        + (f"\n{notes.strip()}\n" if notes.strip() else "")
    )
    if page.is_file():
        old = page.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            text += "\n" + NOTES_MARKER + old.split(NOTES_MARKER, 1)[1]
    page.write_text(text, encoding="utf-8")
    return page


def _pick(summary: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: summary[k] for k in keys if k in summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "toy-loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the learning tests' settings")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1: deterministic)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="2: DPO and GRPO side by side (same results; needs 2 free cores)"
    )
    parser.add_argument("--base-dir", type=Path, default=None, help="a shared toy base directory (cached)")
    parser.add_argument(
        "--rebuild-base",
        action="store_true",
        help="train the toy base here instead of starting from the shipped one (assets/toy_base)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=STAGES,
        default=None,
        help="run only these stages (experiments; the others' artifacts must exist)",
    )
    parser.add_argument(
        "--results-page",
        type=Path,
        default=None,
        help="also write this markdown page (table + timings + command) and the chart beside it",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE:--flag=value",
        help="extra flag for one stage, e.g. grpo:--max_steps=40 (repeatable; a value with spaces "
        "becomes several arguments: 'dpo:--loss_type=sigmoid sft')",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, list[str]] = {}
    for item in args.set:
        stage, _, flag = item.partition(":")
        name, _, value = flag.partition("=")
        if not stage or not name.startswith("--"):
            parser.error(f"--set {item!r}: expected STAGE:--flag=value")
        overrides.setdefault(stage, []).extend([name, *value.split()] if value else [name])
    try:
        result = run_toy_loop(
            args.workdir,
            seed=args.seed,
            quick=args.quick,
            threads=args.threads,
            base_dir=args.base_dir,
            overrides=overrides,
            only=args.only,
            jobs=args.jobs,
            shipped_base=not args.rebuild_base,
        )
    except LoopError as exc:
        print(f"toy loop failed: {exc}", file=sys.stderr)
        return 1
    if args.results_page is not None:
        command = "python scripts/toy_loop.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
        print(f"wrote {write_results_page(result, args.results_page, command=command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
