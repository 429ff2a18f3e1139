"""HTTP client of the Regime W reward service (DESIGN §1, §5): sync and async, pooled, batched, retried.

Modules, one job each:

- :mod:`~trainer.reward_client.errors` — ``RewardServiceError`` (a ``trainer.errors.TrainerError``)
  and its kinds: connection, timeout, HTTP status, protocol;
- :mod:`~trainer.reward_client.settings` — ``ClientSettings`` (frozen): ``from_env()`` and
  ``from_args(RewardServiceArguments)``, the one mapping of a recipe to client settings, and the
  one source of the client's defaults (``DEFAULT_TIMEOUT_S``, ``DEFAULT_BATCH_ITEMS``, ...);
- :mod:`~trainer.reward_client.retry` — the retry policy both clients share: backoff with full
  jitter within a patience budget (default 10 minutes) over connection errors, 429, 503, 504;
- :mod:`~trainer.reward_client.responses` — reading the service's answers (typed bodies, error
  bodies, ``Retry-After``, per-batch checks, merging batches);
- :mod:`~trainer.reward_client.clients` — ``RewardClient`` and ``AsyncRewardClient``.
"""

from trainer.reward_client.clients import AsyncRewardClient, RewardClient
from trainer.reward_client.errors import (
    RewardServiceConnectionError,
    RewardServiceError,
    RewardServiceHTTPError,
    RewardServiceProtocolError,
    RewardServiceTimeout,
)
from trainer.reward_client.responses import PrecomputeResult, parse_retry_after, split_batches
from trainer.reward_client.retry import RETRY_STATUSES, backoff_delay
from trainer.reward_client.settings import (
    API_KEY_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_ITEMS,
    DEFAULT_PATIENCE_S,
    DEFAULT_TIMEOUT_S,
    URL_ENV,
    ClientSettings,
    resolve_api_key,
    resolve_base_url,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_PATIENCE_S",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_BATCH_ITEMS",
    "URL_ENV",
    "API_KEY_ENV",
    "RETRY_STATUSES",
    "ClientSettings",
    "RewardServiceError",
    "RewardServiceConnectionError",
    "RewardServiceTimeout",
    "RewardServiceHTTPError",
    "RewardServiceProtocolError",
    "RewardClient",
    "AsyncRewardClient",
    "resolve_base_url",
    "resolve_api_key",
    "parse_retry_after",
    "backoff_delay",
    "split_batches",
    "PrecomputeResult",
]
