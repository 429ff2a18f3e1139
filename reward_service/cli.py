"""Console scripts: ``regime-w-serve`` (the HTTP service) and ``regime-w-score`` (offline scoring)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:  # the heavy imports stay lazy: --help must not load the service
    from reward_service.settings import Settings
    from shared_schemas.wire import ScoreRequest, ScoreResponse

# flag name -> settings field (the environment variable is REGIME_W_<FIELD>)
_SHARED_FLAGS: dict[str, tuple[str, type, str]] = {
    "--backend": ("backend", str, "provided | hf | openai | vllm"),
    "--model": ("model", str, "model path or hub id of the arm model (hf, vllm; the served name for openai)"),
    "--device": ("device", str, "hf backend: auto | cpu | cuda | cuda:N"),
    "--dtype": ("dtype", str, "hf backend: auto | float32 | bfloat16 | float16"),
    "--openai-base-url": ("openai_base_url", str, "OpenAI-compatible server, e.g. http://vllm:8000/v1"),
    "--config": ("config_path", str, "private Regime W config file (default: the packaged one)"),
    "--cache-path": ("cache_path", str, "SQLite arm cache file ('none': memory only)"),
    "--cache-url": ("cache_url", str, "arm store: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (wins)"),
    "--seed": ("seed", int, "base seed of arm sampling"),
    "--arm-batch-questions": ("arm_batch_questions", int, "questions whose arms go to the backend in one call"),
    "--generation-batch-rows": ("generation_batch_rows", int, "hf backend: prompt rows decoded together"),
    # retired: passed on, so the start fails with the settings' message naming the two flags above
    "--generation-batch-size": ("generation_batch_size", str, argparse.SUPPRESS),
    "--generation-engine": (
        "generation_engine",
        str,
        "backend hf: auto (fastgen on CUDA) | hf | fast; backend vllm: auto | vllm",
    ),
}


def _add_shared(parser: argparse.ArgumentParser) -> None:
    for flag, (_, typ, help_) in _SHARED_FLAGS.items():
        parser.add_argument(flag, type=typ, default=None, help=help_)


def _apply_flags(args: argparse.Namespace, extra: dict[str, str | None]) -> None:
    """Flags win over the environment: write them to REGIME_W_* (uvicorn workers read the env)."""
    for flag, (field, _, _) in _SHARED_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            os.environ[f"REGIME_W_{field.upper()}"] = str(value)
    for field, value in extra.items():
        if value is not None:
            os.environ[f"REGIME_W_{field.upper()}"] = str(value)


def _check_config(prog: str, settings: Settings) -> bool:
    """Load the scorer config ``settings`` names; False (after one line on stderr) when it cannot be
    read or is not a valid config. Every console script checks it before it builds anything."""
    from reward_service.regime_w.config import load_config

    try:
        load_config(settings.config_path)
    except ValueError as exc:  # ConfigError: names the file and what is wrong with it
        print(f"{prog}: {' '.join(str(exc).split())}", file=sys.stderr)
        return False
    return True


def serve_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="regime-w-serve",
        description="Serve the private Regime W reward service (settings: REGIME_W_* env vars; flags win).",
    )
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=None, help="uvicorn worker processes (default 1)")
    parser.add_argument("--log-level", default=None, help="debug | info | warning | error")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without API keys (refused otherwise when no key is configured); loopback only",
    )
    parser.add_argument(
        "--insecure-no-auth-public",
        action="store_true",
        help="with --insecure-no-auth: allow it on a non-loopback --host too (anyone who reaches it can score)",
    )
    _add_shared(parser)
    args = parser.parse_args(argv)
    _apply_flags(
        args,
        {
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            "log_level": args.log_level,
            "insecure_no_auth": "true" if args.insecure_no_auth else None,
            "insecure_no_auth_public": "true" if args.insecure_no_auth_public else None,
        },
    )

    from reward_service.settings import Settings, settings_error_line

    try:
        settings = Settings()
        settings.check_startable()
    except ValidationError as exc:  # a setting of the wrong type or range (inf, nan, 0 ...): one line
        print(f"regime-w-serve: {settings_error_line(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"regime-w-serve: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if not _check_config("regime-w-serve", settings):
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.auth_enabled:
        logging.getLogger("reward_service").warning(
            "serving WITHOUT authentication (--insecure-no-auth): anyone who reaches %s:%d can score",
            settings.host,
            settings.port,
        )
    import uvicorn

    from reward_service.server import http_protocol

    if settings.workers > 1:  # each worker builds the app from the environment; see create_app_from_env
        uvicorn.run(
            "reward_service.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            timeout_graceful_shutdown=10,
            http=http_protocol(settings.header_timeout_s),  # type: ignore[arg-type]
        )
        return 0
    return _serve_one(settings)


def _serve_one(settings: Settings) -> int:
    """One process: the app in this process, so a backend that never loads stops the server and
    exits 1 with one line on stderr (the retries and their reasons are in the log)."""
    import uvicorn

    from reward_service.app import create_app
    from reward_service.server import http_protocol

    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def stop(reason: str) -> None:
        fatal.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=stop)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            timeout_graceful_shutdown=10,
            http=http_protocol(settings.header_timeout_s),  # type: ignore[arg-type]
        )
    )
    server.run()
    if fatal:
        print(f"regime-w-serve: {fatal[0]}", file=sys.stderr)
        return 1
    return 0 if server.started else 1


def _read_batch(path: Path) -> ScoreRequest:
    from shared_schemas.wire import ScoreItem, ScoreRequest

    text = path.read_text(encoding="utf-8") if str(path) != "-" else sys.stdin.read()
    if path.suffix == ".jsonl":
        items = [ScoreItem.model_validate_json(line) for line in text.splitlines() if line.strip()]
        return ScoreRequest(items=items)
    return ScoreRequest.model_validate_json(text)


def score_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="regime-w-score",
        description="Score a batch offline, without HTTP: a ScoreRequest JSON file, or JSONL of one ScoreItem "
        "a line; prints the ScoreResponse JSON.",
    )
    parser.add_argument("batch", type=Path, help="BATCH.json (a ScoreRequest) or BATCH.jsonl (ScoreItems); - for stdin")
    parser.add_argument("--summary", action="store_true", help="print a short table instead of the JSON")
    parser.add_argument("--no-details", action="store_true", help="return rewards only (return_details=false)")
    _add_shared(parser)
    args = parser.parse_args(argv)
    _apply_flags(args, {})

    from reward_service.errors import ServiceError
    from reward_service.settings import Settings, settings_error_line

    try:
        request = _read_batch(args.batch)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"regime-w-score: cannot read {args.batch}: {exc}", file=sys.stderr)
        return 2
    if args.no_details:
        request.return_details = False
    from reward_service.generation import GenerationError

    try:
        settings = Settings(insecure_no_auth=True)
    except ValidationError as exc:  # a setting of the wrong type or range, or a retired one: one line
        print(f"regime-w-score: {settings_error_line(exc)}", file=sys.stderr)
        return 2
    if not _check_config("regime-w-score", settings):
        return 2
    try:
        response = asyncio.run(_score_offline(settings, request))
    except ServiceError as exc:
        print(f"regime-w-score: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except GenerationError as exc:  # the arm model could not be loaded or reached
        print(f"regime-w-score: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if args.summary:
        print(f"{'id':<24} {'consensus':>10} {'answer':>10} {'reward':>8} {'s_wm':>6} {'correct':>7}")
        for r in response.results:
            for s in r.scores:
                s_wm = f"{s.s_wm:.3f}" if s.s_wm is not None else "-"
                corr = "-" if s.correctness is None else f"{s.correctness:.0f}"
                print(
                    f"{r.id[:24]:<24} {r.consensus_answer!s:>10} {s.final_answer!s:>10} "
                    f"{s.reward:>8.4f} {s_wm:>6} {corr:>7}"
                )
    else:
        print(json.dumps(response.model_dump(mode="json"), indent=2))
    return 0


async def _score_offline(settings: Settings, request: ScoreRequest) -> ScoreResponse:
    from reward_service.limits import OFFLINE_LIMITS
    from reward_service.runtime import Runtime

    async with Runtime.running(settings, limits=OFFLINE_LIMITS) as runtime:
        return await runtime.scoring.score(request)


def _read_questions(path: Path, field: str) -> list[str]:
    """Questions of a GSM8K-format JSONL file (``{"question": ..., "answer": ...}`` a line) or a text file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        return [line.strip() for line in text.splitlines() if line.strip()]
    questions = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise ValueError(f"{path}:{n}: no string field {field!r}")
        questions.append(row[field])
    return questions


def precompute_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="regime-w-precompute",
        description="Generate the arms of every question of a data set into the persistent arm cache, ahead of "
        "training, so a training run never waits on generation for a question it has seen. (A running service "
        "does the same through POST /v1/arms/precompute.)",
    )
    parser.add_argument(
        "data", type=Path, help="GSM8K-format JSONL (question field) or a text file, one question a line"
    )
    parser.add_argument("--field", default="question", help="JSONL field holding the question")
    parser.add_argument(
        "--chunk", type=int, default=64, help="questions handed to the provider at a time (progress steps)"
    )
    _add_shared(parser)
    args = parser.parse_args(argv)
    _apply_flags(args, {})

    from tqdm import tqdm

    from reward_service.settings import Settings, settings_error_line

    try:
        questions = _read_questions(args.data, args.field)
        settings = Settings(insecure_no_auth=True)
        if settings.backend == "provided" or settings.cache_store_url() is None:
            raise ValueError(
                "precompute needs a generating backend (--backend hf|openai|vllm) and a --cache-path or --cache-url"
            )
    except ValidationError as exc:  # a setting of the wrong type or range, or a retired one: one line
        print(f"regime-w-precompute: {settings_error_line(exc)}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"regime-w-precompute: {exc}", file=sys.stderr)
        return 2
    if not _check_config("regime-w-precompute", settings):
        return 2

    async def fill() -> dict[str, int]:
        from reward_service.runtime import Runtime

        totals = {"questions": 0, "generated": 0, "already_cached": 0}
        async with Runtime.running(settings) as runtime:
            unique = list(dict.fromkeys(questions))
            with tqdm(total=len(unique), unit="q", desc="precompute arms") as bar:
                for lo in range(0, len(unique), args.chunk):
                    got = await runtime.provider.precompute(unique[lo : lo + args.chunk])
                    for k in totals:
                        totals[k] += got[k]
                    bar.update(got["questions"])
        return totals

    from reward_service.errors import ServiceError

    try:
        totals = asyncio.run(fill())
    except ServiceError as exc:  # e.g. overloaded: --chunk above REGIME_W_MAX_PENDING_QUESTIONS
        print(f"regime-w-precompute: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    from reward_service.store import redact_url

    store_url = redact_url(settings.cache_store_url() or "")
    print(json.dumps({**totals, "cache_path": settings.cache_path, "cache_url": store_url}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve_main())
