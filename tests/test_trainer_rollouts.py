"""Stage ``rollouts`` against the real reward service (backend hf, tiny model, loopback).

The central test kills a real ``regime-w-train rollouts`` subprocess with SIGKILL after its first
lines appear, restarts the same command, and checks that every question ends up in the file exactly
once, that nothing written before the kill changed, and that the result equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.limits import HANG_GUARD_S
from tests.support.servers import ServiceSpec
from trainer.configs import DataArguments, ModelArguments, RewardServiceArguments
from trainer.generation import SamplingSpec, generate_texts, sample_seed
from trainer.generation.tokens import to_generation
from trainer.jsonl import read_records
from trainer.records import RolloutRecord, RunInfo
from trainer.stages.rollouts import (
    RolloutArguments,
    RolloutsStopped,
    recover_jsonl,
    run,
    sampling_specs,
)

TRAJECTORY_KEYS = {
    "output",
    "reward",
    "correctness",
    "s_end",
    "s_path",
    "s_cf",
    "s_wm",
    "length_penalty",
    "final_answer",
    "format_ok",
    "num_tokens",
    "seed",
    "temperature",
}
NUM_QUESTIONS = 6
NUM_SAMPLES = 3


@pytest.fixture(scope="module")
def service_spec() -> ServiceSpec:
    """``live_service`` here: hf backend on the tiny model, short arms."""
    return ServiceSpec("hf", api_key=None)  # --insecure-no-auth


@pytest.fixture(scope="module")
def service(live_service):
    return live_service


def write_train(path: Path, n: int = 10) -> Path:
    rows = [
        {
            "question": f"Tom has {10 + i} apples and buys {i + 1} more. How many apples does he have?",
            "answer": f"{10 + i}+{i + 1}={11 + 2 * i}\n#### {11 + 2 * i}",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_recipe(workdir: Path, tiny_model_dir: Path, url: str, rollouts_file: str, **extra) -> Path:
    write_train(workdir / "train.jsonl")
    values = {
        "model_name_or_path": str(tiny_model_dir),
        "quantization": "none",
        "dataset": "train.jsonl",
        "split_file": "split.json",
        "dev_fraction": 0.2,
        "max_train_samples": NUM_QUESTIONS,
        "reward_url": url,
        "reward_max_retries": 0,
        "rollouts_file": rollouts_file,
        "num_samples": NUM_SAMPLES,
        "temperatures": [0.6, 0.9],
        "max_new_tokens": 24,
        "generation_batch_size": NUM_SAMPLES,  # one question per generate call: many small appends
        **extra,
    }
    recipe = workdir / "rollouts.yaml"
    recipe.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return recipe


def cli(recipe: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", "rollouts", "--config", str(recipe), *flags]


def complete_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


def check_file(path: Path, split_file: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "torn last line"
    records = [json.loads(line) for line in data.splitlines()]
    expected_ids = json.loads(split_file.read_text())["train_ids"][:NUM_QUESTIONS]
    assert sorted(r["id"] for r in records) == sorted(expected_ids), "every question exactly once"
    for r in records:
        assert {"id", "question", "gold_answer", "trajectories", "scorer"} <= set(r)
        assert r["scorer"]["name"] == "regime-w"
        assert len(r["trajectories"]) == NUM_SAMPLES
        for k, t in enumerate(r["trajectories"]):
            assert set(t) == TRAJECTORY_KEYS
            assert t["seed"] == sample_seed(42, r["id"], k)
            assert t["temperature"] == [0.6, 0.9][k % 2]
            assert t["num_tokens"] >= 1 and isinstance(t["reward"], float)
            assert t["length_penalty"] == pytest.approx(t["num_tokens"] / 100)
    return records


def test_killed_run_resumes_with_every_question_once(service, tiny_model_dir, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model_dir, service.url, "data/rl_rollouts.jsonl")
    out = tmp_path / "data" / "rl_rollouts.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cli(recipe), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not complete_lines(out):
            if proc.poll() is not None:
                pytest.fail(
                    f"rollouts exited ({proc.returncode}) before writing: {proc.stderr.read().decode()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("no rollout line appeared in time")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = complete_lines(out)
    assert 1 <= len(before) < NUM_QUESTIONS, "the kill must land mid-run"
    # A kill in the middle of an append leaves an unfinished line: simulate that on top.
    with out.open("ab") as f:
        f.write(b'{"id": "gsm8k-train-999", "question": "unfini')

    resumed = subprocess.run(cli(recipe), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{") :])
    assert summary["already_done"] == len(before)
    assert summary["written"] == NUM_QUESTIONS - len(before)
    assert complete_lines(out)[: len(before)] == before, "lines written before the kill changed"
    records = check_file(out, tmp_path / "split.json")

    # Same command again: nothing to do, file untouched.
    again = subprocess.run(cli(recipe), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert [json.loads(x) for x in out.read_bytes().splitlines()] == records

    # An uninterrupted run gives the same trajectories: per-sample seeds, not run history, decide them.
    fresh = subprocess.run(
        cli(recipe, "--rollouts_file", "data/fresh.jsonl"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    fresh_records = {r["id"]: r for r in check_file(tmp_path / "data" / "fresh.jsonl", tmp_path / "split.json")}
    for r in records:
        assert [t["output"] for t in r["trajectories"]] == [t["output"] for t in fresh_records[r["id"]]["trajectories"]]
        assert [t["reward"] for t in r["trajectories"]] == [t["reward"] for t in fresh_records[r["id"]]["trajectories"]]


def test_service_failure_stops_clearly_and_keeps_lines(service, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_train(tmp_path / "train.jsonl")
    model_args = ModelArguments(model_name_or_path=str(tiny_model_dir), quantization="none")
    args = RolloutArguments(
        rollouts_file="r.jsonl", num_samples=2, max_new_tokens=8, generation_batch_size=4, progress=False
    )
    first = run(
        model_args,
        DataArguments(dataset="train.jsonl", split_file="split.json", max_train_samples=2),
        RewardServiceArguments(reward_url=service.url),
        args,
    )
    assert first["written"] == 2
    kept = Path("r.jsonl").read_bytes()

    dead = RewardServiceArguments(reward_url="http://127.0.0.1:9", reward_max_retries=0, reward_timeout_s=5)
    with pytest.raises(RolloutsStopped, match=r"2 of 4 questions are saved in r.jsonl; rerun the same command"):
        run(model_args, DataArguments(dataset="train.jsonl", split_file="split.json", max_train_samples=4), dead, args)
    assert Path("r.jsonl").read_bytes() == kept


def test_resume_refuses_a_file_with_another_sample_count(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_train(tmp_path / "train.jsonl")
    five = [{"output": "x", "reward": 0.0}] * 5
    Path("r.jsonl").write_text(json.dumps({"id": "gsm8k-train-0", "question": "q", "trajectories": five}) + "\n")
    args = RolloutArguments(rollouts_file="r.jsonl", num_samples=2, progress=False)
    with pytest.raises(ValueError, match="num_samples=2"):
        run(
            ModelArguments(model_name_or_path=str(tiny_model_dir), quantization="none"),
            DataArguments(dataset="train.jsonl", split_file="split.json"),
            RewardServiceArguments(),
            args,
        )


def test_resume_refuses_a_file_with_other_seeds(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_train(tmp_path / "train.jsonl")
    args = RolloutArguments(rollouts_file="r.jsonl", num_samples=2, seed=1, progress=False)
    other = [
        {"output": "x", "reward": 0.0, "seed": s.seed, "temperature": s.temperature}
        for s in sampling_specs(RolloutArguments(num_samples=2, seed=2), "gsm8k-train-0")
    ]
    Path("r.jsonl").write_text(json.dumps({"id": "gsm8k-train-0", "question": "q", "trajectories": other}) + "\n")
    with pytest.raises(ValueError, match="other seeds/temperatures"):
        run(
            ModelArguments(model_name_or_path=str(tiny_model_dir), quantization="none"),
            DataArguments(dataset="train.jsonl", split_file="split.json"),
            RewardServiceArguments(),
            args,
        )


def test_hf_sampling_is_per_row_and_batch_independent(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    p1, p2 = "Question: How many clips?\nAnswer:", "Weng earns $12 an hour. How much in 50 minutes?"
    # seeds re-pinned (were 11, 12) when generate_texts moved to fastgen's sampler: seed 11 draws EOS for p2
    hot, hot2, greedy = SamplingSpec(1.0, 0.95, 13), SamplingSpec(1.0, 0.95, 14), SamplingSpec(0.0, 1.0, 0)
    batch = generate_texts(model, tok, [p1, p2, p1, p1], [hot, hot, hot2, greedy], max_new_tokens=12, batch_size=4)
    alone = generate_texts(model, tok, [p1], [hot], max_new_tokens=12, batch_size=1)
    assert batch[0] == alone[0], "a row's sample must not depend on its batch mates"
    assert batch[0].text != batch[2].text, "different seeds, different samples"
    assert batch[3] == generate_texts(model, tok, [p1], None, max_new_tokens=12)[0]  # temperature 0 = greedy
    assert all(g.num_tokens == 12 and not g.finished for g in batch)  # these rows never say EOS in 12 tokens
    # top_p so small that only the most likely token is left: sampling becomes greedy
    narrow = generate_texts(model, tok, [p1], [SamplingSpec(1.0, 1e-6, 5)], max_new_tokens=12)
    assert narrow[0].text == batch[3].text


def test_generation_cuts_at_eos():
    class Tok:
        pad_token_id, eos_token_id = 0, 2

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(str(i) for i in ids if not (skip_special_tokens and i in (0, 2)))

    g = to_generation([5, 6, 2, 0, 0], Tok(), [2])
    assert (g.text, g.num_tokens, g.finished) == ("5 6", 3, True)
    g = to_generation([5, 6, 7], Tok(), [2])
    assert (g.text, g.num_tokens, g.finished) == ("5 6 7", 3, False)


def test_recover_jsonl_cuts_torn_line(tmp_path):
    path = tmp_path / "r.jsonl"
    assert recover_jsonl(path) == []
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "tra')
    assert [r["id"] for r in recover_jsonl(path)] == ["a", "b"]
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'
    path.write_bytes(b'{"id": "a"')  # only a torn line
    assert recover_jsonl(path) == [] and path.read_bytes() == b""
    path.write_bytes(b'{"id": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"r.jsonl:2"):
        recover_jsonl(path)


def test_sampling_specs_distinct_seeds_and_temperatures():
    args = RolloutArguments(num_samples=8, temperatures=[0.6, 0.8, 1.0], top_p=0.9, seed=7)
    specs = sampling_specs(args, "gsm8k-train-3")
    assert len({s.seed for s in specs}) == 8
    assert [s.temperature for s in specs] == [0.6, 0.8, 1.0, 0.6, 0.8, 1.0, 0.6, 0.8]
    assert all(s.top_p == 0.9 for s in specs)
    assert specs == sampling_specs(args, "gsm8k-train-3")
    assert {s.seed for s in specs}.isdisjoint({s.seed for s in sampling_specs(args, "gsm8k-train-4")})
    assert [s.temperature for s in sampling_specs(RolloutArguments(num_samples=2), "x")] == [0.6, 0.6]


@pytest.mark.parametrize(
    "bad",
    [
        {"num_samples": 0},
        {"rollout_split": "val"},
        {"top_p": 0.0},
        {"temperatures": []},
        {"generation_backend": "tgi"},
        {"generation_backend": "transformers"},
        {"generation_engine": "merged_bf16"},
    ],
)
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        RolloutArguments(**bad)


def test_dry_run_loads_nothing(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, "http://127.0.0.1:9", "data/r.jsonl")
    proc = subprocess.run(
        cli(recipe, "--dry-run", "--num_samples", "4"), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    planned = json.loads(proc.stdout)
    assert planned["sampling"]["num_samples"] == 4
    assert planned["sampling"]["temperatures"] == [0.6, 0.9]
    assert planned["batching"]["questions_per_chunk"] == 1
    assert not (tmp_path / "data").exists() and not (tmp_path / "split.json").exists()


def test_cli_reports_a_dead_service_without_a_traceback(tiny_model_dir, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model_dir, "http://127.0.0.1:9", "r.jsonl", reward_timeout_s=5)
    proc = subprocess.run(
        cli(recipe),
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "regime-w-train rollouts:" in proc.stderr and "rerun the same command" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------- reward controls


def control_run(
    tmp_path: Path, tiny_model_dir: Path, reward_args: RewardServiceArguments, name: str
) -> tuple[dict, list]:
    write_train(tmp_path / "train.jsonl")
    args = RolloutArguments(
        rollouts_file=f"{name}.jsonl", num_samples=4, max_new_tokens=8, generation_batch_size=8, progress=False
    )
    summary = run(
        ModelArguments(model_name_or_path=str(tiny_model_dir), quantization="none"),
        DataArguments(dataset="train.jsonl", split_file="split.json", max_train_samples=3),
        reward_args,
        args,
    )
    return summary, list(read_records(f"{name}.jsonl", RolloutRecord))


@pytest.mark.parametrize("mode", ["correctness", "majority"])
def test_controls_score_without_a_service(tmp_path, tiny_model_dir, monkeypatch, mode):
    """Nothing listens at the reward URL: the controls never call it."""
    from shared_schemas.answer import answers_equal, extract_answer, gold_answer
    from trainer.reward_modes import majority_rewards

    monkeypatch.chdir(tmp_path)
    dead = RewardServiceArguments(reward_url="http://127.0.0.1:9", reward_max_retries=0, reward=mode)
    summary, records = control_run(tmp_path, tiny_model_dir, dead, mode)
    assert summary["written"] == 3 and summary["reward"] == mode
    for r in records:
        assert (r.reward_mode, r.label_free, r.scorer) == (mode, mode == "majority", None)
        texts = [t.output for t in r.trajectories]
        if mode == "correctness":
            want = [float(answers_equal(extract_answer(x), gold_answer(r.gold_answer))) for x in texts]
            assert [t.correctness for t in r.trajectories] == want
        else:
            want = majority_rewards(texts)
            assert all(t.correctness is None for t in r.trajectories)
        assert [t.reward for t in r.trajectories] == want
        assert all(t.s_wm is None and t.final_answer == extract_answer(t.output) for t in r.trajectories)
    info = RunInfo.model_validate_json(Path(f"{mode}.run.json").read_text())
    assert (info.stage, info.reward_mode, info.service_url, info.summary["written"]) == ("rollouts", mode, None, 3)
    # resuming the file with another reward is refused
    with pytest.raises(ValueError, match=f"scored with reward {mode!r}"):
        control_run(tmp_path, tiny_model_dir, RewardServiceArguments(reward_url="http://127.0.0.1:9"), mode)


def test_label_free_regime_w_leaves_the_gold_out(service, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary, records = control_run(
        tmp_path, tiny_model_dir, RewardServiceArguments(reward_url=service.url, label_free=True), "lf"
    )
    assert summary["written"] == 3 and summary["label_free"] is True
    for r in records:
        assert (r.reward_mode, r.label_free) == ("regime_w", True)
        assert r.gold_answer is not None  # kept in the record for analysis, never sent
        assert r.scorer is not None and r.scorer["name"] == "regime-w"
        # the service computes no correctness term when it got no gold
        assert all(t.correctness is None and t.s_wm is not None for t in r.trajectories)
    info = RunInfo.model_validate_json(Path("lf.run.json").read_text())
    assert (info.reward_mode, info.label_free, info.service_url) == ("regime_w", True, service.url)
    assert info.scorer == records[0].scorer
