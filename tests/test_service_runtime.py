"""The composition root: every setting reaches the part it configures, for the app and the CLIs alike."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from reward_service import cli
from reward_service.limits import OFFLINE_LIMITS
from reward_service.runtime import Runtime
from reward_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_takes_every_setting() -> None:
    settings = Settings(
        backend="provided",
        cache_path="none",
        generation_batch_window_ms=40,
        max_pending_questions=7,
        arm_batch_questions=3,
        generation_batch_rows=6,
        generation_timeout_s=9,
        seed=5,
        max_items=11,
        max_trajectories=12,
        max_text_chars=1234,
        cache_memory_items=17,
        cache_memory_bytes=1000,
        prepared_memo_items=19,
        prepared_memo_bytes=2000,
    )

    async def built() -> Runtime:
        runtime = await Runtime.start(settings)
        await runtime.close()
        return runtime

    runtime = asyncio.run(built())
    provider = runtime.provider
    assert (provider.batch_window_s, provider.max_pending, provider.max_batch_questions) == (0.04, 7, 3)
    assert (provider.timeout_s, provider.seed) == (9, 5)
    assert settings.backend_config().batch_size == 6  # rows decoded together: the hf backend's, not the provider's
    assert (runtime.scoring.limits.max_items, runtime.scoring.limits.max_trajectories) == (11, 12)
    assert runtime.scoring.limits.max_text_chars == 1234
    assert (runtime.cache.memory_items, runtime.cache.memory_bytes) == (17, 1000)
    assert (runtime.scoring.memo.max_items, runtime.scoring.memo.max_bytes) == (19, 2000)
    assert runtime.backend is None and not provider.can_generate
    assert runtime.info().backend == "provided" and runtime.info().limits["max_items"] == 11


def test_offline_cli_builds_through_the_runtime(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Settings] = []
    start = Runtime.start

    async def spy(settings: Settings, **kwargs: object) -> Runtime:
        seen.append(settings)
        assert kwargs["limits"] == OFFLINE_LIMITS
        return await start(settings, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Runtime, "start", spy)
    monkeypatch.setenv("REGIME_W_GENERATION_BATCH_WINDOW_MS", "25")
    monkeypatch.setenv("REGIME_W_MAX_PENDING_QUESTIONS", "3")
    assert cli.score_main([str(ROOT / "examples" / "batch.json"), "--backend", "provided", "--cache-path", "none"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) >= 5
    (settings,) = seen
    assert settings.generation_batch_window_ms == 25 and settings.max_pending_questions == 3


def test_the_batch_flags_reach_their_settings_and_the_retired_one_names_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("BACKEND", "CACHE_PATH", "ARM_BATCH_QUESTIONS", "GENERATION_BATCH_ROWS", "GENERATION_BATCH_SIZE"):
        monkeypatch.setenv(f"REGIME_W_{name}", "")  # the CLI writes its flags to the environment: undone after
        monkeypatch.delenv(f"REGIME_W_{name}")
    seen: list[Settings] = []
    start = Runtime.start

    async def spy(settings: Settings, **kwargs: object) -> Runtime:
        seen.append(settings)
        return await start(settings, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Runtime, "start", spy)
    batch = str(ROOT / "examples" / "batch.json")
    flags = ["--backend", "provided", "--cache-path", "none", "--arm-batch-questions", "5"]
    assert cli.score_main([batch, *flags, "--generation-batch-rows", "7"]) == 0
    (settings,) = seen
    assert (settings.arm_batch_questions, settings.generation_batch_rows) == (5, 7)
    capsys.readouterr()

    assert cli.score_main([batch, *flags, "--generation-batch-size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("regime-w-score: REGIME_W_GENERATION_BATCH_SIZE: ") and len(err.splitlines()) == 1, err
    assert "REGIME_W_ARM_BATCH_QUESTIONS" in err and "REGIME_W_GENERATION_BATCH_ROWS" in err, err
    assert len(seen) == 1  # refused before anything was built


def test_precompute_cli_honours_max_pending_questions(tiny_model_dir, tmp_path: Path, monkeypatch, capsys) -> None:
    """--chunk 3 with REGIME_W_MAX_PENDING_QUESTIONS=2: the setting holds offline too (exit 1, said why)."""
    data = tmp_path / "questions.txt"
    data.write_text("".join(f"What is {n} + 1?\n" for n in range(3)))
    monkeypatch.setenv("REGIME_W_MAX_PENDING_QUESTIONS", "2")
    code = cli.precompute_main(
        [
            str(data),
            "--chunk",
            "3",
            "--backend",
            "hf",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--cache-path",
            str(tmp_path / "arms.sqlite3"),
        ]
    )
    assert code == 1 and "overloaded" in capsys.readouterr().err


def test_generation_engine_reaches_the_hf_backend(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from reward_service.generation import create_backend

    assert Settings(backend="provided").generation_engine == "auto"
    monkeypatch.setenv("REGIME_W_GENERATION_ENGINE", "fast")
    settings = Settings(backend="hf", model=str(tiny_model_dir), device="cpu", cache_path="none")
    config = settings.backend_config()
    assert config.generation_engine == "fast"
    backend = create_backend(config)
    try:
        assert backend.generation_engine == "fast"  # type: ignore[attr-defined]
    finally:
        backend.close()
    # auto on the CPU keeps transformers generate (today's arms)
    auto = create_backend(
        Settings(backend="hf", model=str(tiny_model_dir), device="cpu", generation_engine="auto").backend_config()
    )
    try:
        assert auto.generation_engine == "hf"  # type: ignore[attr-defined]
    finally:
        auto.close()
    with pytest.raises(ValidationError, match="generation_engine"):
        Settings(backend="provided", generation_engine="vllm")
    # vllm is the vllm backend (the trainer's meaning): refused with another backend, and hf / fast with it
    with pytest.raises(ValidationError, match="REGIME_W_BACKEND=vllm"):
        Settings(backend="hf", model=str(tiny_model_dir), generation_engine="vllm")
    with pytest.raises(ValidationError, match="decodes with vLLM"):
        Settings(backend="vllm", model=str(tiny_model_dir), generation_engine="fast")
    assert Settings(backend="vllm", model=str(tiny_model_dir), generation_engine="vllm").generation_engine == "vllm"


def test_one_default_generation_engine() -> None:
    """GENERATION_ENGINE's default, the backend config's and the hf backend's are the one constant."""
    import inspect

    from reward_service.generation.base import DEFAULT_GENERATION_ENGINE, BackendConfig
    from reward_service.generation.hf import HFBackend

    hf_default = inspect.signature(HFBackend.__init__).parameters["generation_engine"].default
    assert DEFAULT_GENERATION_ENGINE == "auto"
    assert Settings.model_fields["generation_engine"].default == DEFAULT_GENERATION_ENGINE
    assert BackendConfig(kind="hf").generation_engine == hf_default == DEFAULT_GENERATION_ENGINE
