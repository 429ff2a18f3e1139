"""Service settings: every knob from the environment (prefix ``REGIME_W_``) or CLI flags."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reward_service.generation.base import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_GENERATION_ENGINE,
    BackendConfig,
    GenerationEngine,
)
from shared_schemas.wire import MAX_ITEMS, MAX_TEXT_CHARS, MAX_TRAJECTORIES

BackendKind = Literal["provided", "hf", "openai", "vllm"]


#: seconds a request's generation deadline stays under a client's read timeout (room to score and answer)
GENERATION_TIMEOUT_MARGIN_S = 30.0
#: the longest wait between two tries to load the backend
BACKEND_LOAD_BACKOFF_MAX_S = 60.0
#: generation batches in flight at once when GENERATION_CONCURRENCY is not set, by backend: an
#: OpenAI-compatible server batches requests of its own (continuous batching), so batches of
#: different questions go out together and a hung call holds one slot; an in-process model (hf,
#: vllm) is one model on one device that batches within a call, so its calls run one at a time
DEFAULT_GENERATION_CONCURRENCY: dict[str, int] = {"openai": 4}
#: questions whose arm prompts go to the backend together, in one ``generate`` call (ARM_BATCH_QUESTIONS)
DEFAULT_ARM_BATCH_QUESTIONS = 32
#: the hf backend's prompt rows decoded together (GENERATION_BATCH_ROWS): transformers ``generate``
#: takes a call's prompts in chunks of this many rows, fastgen runs this many slots
DEFAULT_GENERATION_BATCH_ROWS = DEFAULT_BATCH_ROWS
#: settings that no longer exist -> what replaces them (a start with one of them set fails, naming these)
RETIRED_SETTINGS: dict[str, str] = {
    "generation_batch_size": "it meant two things and is now two settings: REGIME_W_ARM_BATCH_QUESTIONS "
    "(questions per generation batch) and REGIME_W_GENERATION_BATCH_ROWS (hf backend: prompt rows decoded "
    "together); set those instead",
}

#: what an API key must be (checked at start; a key file line holds one key, comments on their own lines)
KEY_MIN_CHARS = 16
KEY_MAX_CHARS = 512
KEY_RULES = (
    f"{KEY_MIN_CHARS} to {KEY_MAX_CHARS} characters, printable ASCII (no spaces, no ',' and no '#'); "
    "in a key file one key a line, comments on lines of their own starting with '#'"
)


def _check_key(key: str, where: str) -> None:
    problem = None
    if not key.isascii() or not key.isprintable():
        problem = "holds a character that is not printable ASCII"
    elif any(c in key for c in " \t#,"):
        problem = "holds a space, '#' or ','" + (" (an inline comment?)" if "#" in key else "")
    elif not KEY_MIN_CHARS <= len(key) <= KEY_MAX_CHARS:
        problem = f"is {len(key)} characters long"
    if problem is not None:
        raise ValueError(f"{where}: the API key {problem}; keys must be {KEY_RULES}")


def load_keys(api_keys: str | None, api_keys_file: Path | None) -> tuple[str, ...]:
    """Every API key of the env list ``api_keys`` (comma-separated) and the key file (one key a
    line, blank lines and lines starting with ``#`` ignored), each checked against ``KEY_RULES``.
    A key breaking a rule or an unreadable file is a ``ValueError`` naming where, never the key."""
    found: list[str] = []
    if api_keys:
        for n, key in enumerate((k.strip() for k in api_keys.split(",")), 1):
            if key:
                _check_key(key, f"REGIME_W_API_KEYS entry {n}")
                found.append(key)
    if api_keys_file is not None:
        try:
            text = api_keys_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read REGIME_W_API_KEYS_FILE {api_keys_file}: {exc}") from exc
        for n, line in enumerate(text.splitlines(), 1):
            key = line.strip()
            if key and not key.startswith("#"):
                _check_key(key, f"REGIME_W_API_KEYS_FILE {api_keys_file} line {n}")
                found.append(key)
    return tuple(dict.fromkeys(found))


#: fields whose values never appear in an error message
_SECRET_FIELDS = frozenset({"api_keys", "openai_api_key"})


def settings_error_line(exc: ValidationError) -> str:
    """One line for a settings ``ValidationError``: each bad field as its environment variable, what
    is wrong and the value given (never a secret's), e.g. ``REGIME_W_BACKEND_TIMEOUT_S: Input should
    be a finite number (got 'inf')``."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        shown = "" if field in _SECRET_FIELDS or "input" not in err else f" (got {err['input']!r:.80})"
        parts.append(f"REGIME_W_{field.upper()}: {err.get('msg', 'invalid')}{shown}")
    return "; ".join(parts)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, :: and every other name."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Configuration of one reward-service process.

    API keys come from ``REGIME_W_API_KEYS`` (comma-separated) and/or the file named by
    ``REGIME_W_API_KEYS_FILE`` (one key a line, ``#`` comment lines); each must follow
    ``KEY_RULES``. With no key the server refuses to start unless ``insecure_no_auth`` is set, and
    on a non-loopback host unless ``insecure_no_auth_public`` is set too.
    """

    model_config = SettingsConfigDict(env_prefix="REGIME_W_", extra="ignore", frozen=True)

    # --- auth
    api_keys: str | None = Field(default=None, repr=False)
    api_keys_file: Path | None = None
    insecure_no_auth: bool = False
    # a second, explicit opt-in: without keys on an address other than loopback (anyone who reaches it can score)
    insecure_no_auth_public: bool = False

    # --- model and generation
    backend: BackendKind = "provided"
    model: str | None = None
    model_name: str | None = None  # public name of the arm model in responses (default: see public_model_name)
    device: str = "auto"
    dtype: str = "auto"
    arm_batch_questions: int = Field(default=DEFAULT_ARM_BATCH_QUESTIONS, ge=1)
    generation_batch_rows: int = Field(default=DEFAULT_GENERATION_BATCH_ROWS, ge=1)
    # how the in-process backend decodes (the trainer's generation_engine values): backend hf takes
    # auto (fast on CUDA, hf elsewhere) | hf | fast; backend vllm is vLLM (auto | vllm)
    generation_engine: GenerationEngine = DEFAULT_GENERATION_ENGINE
    # how long a request waits on generation (504 + Retry-After after; the generation goes on). Kept
    # under the reward client's default read timeout (trainer: 120 s) by GENERATION_TIMEOUT_MARGIN_S,
    # so a client hears the 504 instead of giving up first; tests/test_service_faults.py checks it
    generation_timeout_s: float = Field(default=90.0, gt=0, allow_inf_nan=False)
    # deadline of one backend call (a hung backend); with GENERATION_TIMEOUT_S it must fit in the
    # clients' patience (check_startable): a hung call then ends, and its retry is answered, in time
    backend_timeout_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    # how long the service's clients keep retrying one request (the trainer's reward client: 600 s)
    client_patience_s: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    # generation batches in flight at once (None: DEFAULT_GENERATION_CONCURRENCY of the backend, else 1)
    generation_concurrency: int | None = Field(default=None, ge=1, le=256)
    generation_batch_window_ms: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    max_pending_questions: int = Field(default=4096, ge=1)
    seed: int = 0
    openai_base_url: str | None = None
    openai_api_key: str | None = Field(default=None, repr=False)
    # requests in flight to the OpenAI-compatible server, all generation batches together (each
    # batch gets its share: openai_max_concurrency // generation slots, at least 1)
    openai_max_concurrency: int = Field(default=64, ge=1)
    # start: building the backend and its first readiness probe are tried this many times, waiting
    # backend_load_backoff_s, then twice that ... (at most BACKEND_LOAD_BACKOFF_MAX_S) between tries
    backend_load_attempts: int = Field(default=6, ge=1)
    backend_load_backoff_s: float = Field(default=5.0, ge=0, allow_inf_nan=False)

    # --- scorer config and arm cache
    config_path: Path | None = None
    cache_path: str | None = ".cache/regime-w/arms.sqlite3"
    # the arm store as a URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (N replicas share one);
    # wins over cache_path when both are set (see cache_store_url)
    cache_url: str | None = None
    cache_password_file: Path | None = None  # the PostgreSQL password (a secret file), never in the URL
    cache_poll_s: float = Field(default=2.0, gt=0)  # how often a running service reads questions others stored
    # a replica's claim on questions it generates lasts this long unless renewed (every third of it);
    # a replica that died holding one is taken over after it
    cache_claim_lease_s: float = Field(default=30.0, gt=0)
    cache_memory_items: int = Field(default=8192, ge=0)  # generated arm sets kept in memory (LRU)
    cache_memory_bytes: int = Field(default=256 * 1024 * 1024, ge=0)  # and the characters of arm text they hold
    prepared_memo_items: int = Field(default=4096, ge=0)  # parsed arms of recent questions (LRU)
    prepared_memo_bytes: int = Field(default=256 * 1024 * 1024, ge=0)  # and the bytes they may hold (estimate)

    # --- limits
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # /v1/score's item and trajectory ceilings: the wire contract's MAX_ITEMS / MAX_TRAJECTORIES /
    # MAX_TEXT_CHARS are their upper bounds; the OpenAPI document states these values
    max_items: int = Field(default=256, ge=1, le=MAX_ITEMS)
    max_trajectories: int = Field(default=256, ge=1, le=MAX_TRAJECTORIES)
    max_text_chars: int = Field(default=100_000, ge=1, le=MAX_TEXT_CHARS)
    openrlhf_max_queries: int = Field(default=8192, ge=1, le=65_536)  # /get_reward queries per request

    # --- server
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: str = "info"
    # a connection must send a whole request head (request line and headers) this many seconds after
    # it opens or after its previous response; else it is closed (reward_service.server)
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)

    # --- retired (RETIRED_SETTINGS): read only to refuse a start that still sets one
    generation_batch_size: int | str | None = Field(default=None, repr=False, exclude=True)

    @field_validator(*RETIRED_SETTINGS, mode="before")
    @classmethod
    def _retired(cls, value: object, info: ValidationInfo) -> None:
        if value is not None:
            raise ValueError(f"no longer a setting: {RETIRED_SETTINGS[str(info.field_name)]}")
        return None

    @field_validator("generation_engine")
    @classmethod
    def _engine_fits_the_backend(cls, value: str, info: ValidationInfo) -> str:
        backend = info.data.get("backend")
        if value == "vllm" and backend != "vllm":
            raise ValueError(
                f"vllm is the vllm backend: set REGIME_W_BACKEND=vllm (backend {backend!r} does not run vLLM in process)"
            )
        if backend == "vllm" and value in ("hf", "fast"):
            raise ValueError(f"backend 'vllm' decodes with vLLM: use auto or vllm, not {value!r}")
        return value

    @field_validator("cache_path")
    @classmethod
    def _empty_cache_path_means_none(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in {"", "none", "off", "memory"}:
            return None
        return value

    @cached_property
    def keys(self) -> tuple[str, ...]:
        """Every configured API key (env list and key file), checked against ``KEY_RULES``.

        ``REGIME_W_API_KEYS`` is comma-separated; the key file holds one key a line, blank lines
        and lines starting with ``#`` ignored. A key breaking a rule is an error (``ValueError``)
        that names where it came from, never the key itself. Read once, at start; a running service
        reads the key file again on SIGHUP (``auth.KeyRing.reload``).
        """
        return load_keys(self.api_keys, self.api_keys_file)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.keys)

    def check_startable(self) -> None:
        """Raise ``ValueError`` when this configuration must not serve: a key breaking a rule, no key
        without ``--insecure-no-auth``, or no key on a non-loopback address without the second flag."""
        if not self.keys and not self.insecure_no_auth:
            raise ValueError(
                "no API key configured: set REGIME_W_API_KEYS or REGIME_W_API_KEYS_FILE, "
                "or start with --insecure-no-auth (loopback only)"
            )
        if not self.keys and not is_loopback(self.host) and not self.insecure_no_auth_public:
            raise ValueError(
                f"refusing to serve without API keys on {self.host!r}, which is not a loopback address: anyone "
                "who reaches it could score; configure keys, bind 127.0.0.1, or add --insecure-no-auth-public"
            )
        if self.backend == "openai" and not self.openai_base_url:
            raise ValueError("backend 'openai' needs REGIME_W_OPENAI_BASE_URL (e.g. http://vllm:8000/v1)")
        if self.backend in {"hf", "vllm"} and not self.model:
            raise ValueError(f"backend '{self.backend}' needs a model: REGIME_W_MODEL or --model")
        self.check_deadlines()

    def check_deadlines(self) -> None:
        """``ValueError`` unless one hung backend call and the generation after it fit in the clients'
        patience: ``BACKEND_TIMEOUT_S + GENERATION_TIMEOUT_S <= CLIENT_PATIENCE_S``. A request that
        meets a hung call waits for it to fail (503 + Retry-After), and its retry for a fresh
        generation; a longer backend deadline makes the client give up first (a trainer run ends)."""
        total = self.backend_timeout_s + self.generation_timeout_s
        if total > self.client_patience_s:
            raise ValueError(
                f"REGIME_W_BACKEND_TIMEOUT_S ({self.backend_timeout_s:g} s) + REGIME_W_GENERATION_TIMEOUT_S "
                f"({self.generation_timeout_s:g} s) exceed REGIME_W_CLIENT_PATIENCE_S ({self.client_patience_s:g} s): "
                "a hung arm-model call would outlast the clients' patience; lower BACKEND_TIMEOUT_S "
                "(or raise CLIENT_PATIENCE_S if every client waits longer)"
            )

    @property
    def generation_slots(self) -> int:
        """Generation batches in flight at once: ``GENERATION_CONCURRENCY``, else the backend's default."""
        if self.generation_concurrency is not None:
            return self.generation_concurrency
        return DEFAULT_GENERATION_CONCURRENCY.get(self.backend, 1)

    def cache_store_url(self) -> str | None:
        """The arm store: ``cache_url`` when set, else ``sqlite:///cache_path``, else None (memory only)."""
        from reward_service.store import resolve_cache_url

        return resolve_cache_url(self.cache_url, self.cache_path)

    def backend_config(self) -> BackendConfig:
        """The settings a generation backend is built from, as one object."""
        return BackendConfig(
            kind=self.backend,
            model=self.model,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.generation_batch_rows,
            generation_engine=self.generation_engine,
            timeout_s=self.backend_timeout_s,
            seed=self.seed,
            openai_base_url=self.openai_base_url,
            openai_api_key=self.openai_api_key,
            max_concurrency=self.openai_max_concurrency,
            concurrent_calls=self.generation_slots,
        )

    def load_retry_delay(self, failed_attempt: int) -> float:
        """Seconds to wait after the ``failed_attempt``-th (1-based) failed backend load."""
        return min(self.backend_load_backoff_s * 2 ** (failed_attempt - 1), BACKEND_LOAD_BACKOFF_MAX_S)

    def public_model_name(self, model_id: str) -> str:
        """The arm model as responses name it: ``model_name`` when set, else the model id, except
        that a local path is cut to its last component (no path of the host leaves the service)."""
        if self.model_name:
            return self.model_name
        if model_id.startswith(("/", "~", ".")) or "\\" in model_id or Path(model_id).expanduser().exists():
            return Path(model_id.rstrip("/\\")).name or "local-model"
        return model_id
