"""The trainer's one exception tree: everything it raises on purpose derives from ``TrainerBaseException``.

::

    TrainerBaseException (BaseException)     the root; catch it to catch everything below
    ├── TrainerError (RuntimeError)          every ordinary error: the CLI prints it and exits 1
    │   ├── StageError                       a stage stopped early (message: why, what to do)
    │   ├── RewardInputError (+ ValueError)  a sample a reward cannot score as given
    │   │   └── trainer.integrations.core.IntegrationError   ... as a framework handed it over
    │   └── trainer.reward_client.RewardServiceError          the service gave no scores
    │       └── connection / timeout / HTTP status / protocol kinds
    └── RewardFailed                         NOT an Exception: raised only by the framework reward
                                             files, past handlers that would swallow an Exception

The root is a ``BaseException`` only so that ``RewardFailed`` can be in the tree: ``TrainerError`` is a
``RuntimeError`` (so an ``Exception``), and ``except Exception`` sees every error but ``RewardFailed``.
"""

from __future__ import annotations

__all__ = ["TrainerBaseException", "TrainerError", "StageError", "RewardInputError", "RewardFailed"]


class TrainerBaseException(BaseException):
    """The root of everything the trainer raises on purpose: ``TrainerError`` and ``RewardFailed``."""


class TrainerError(TrainerBaseException, RuntimeError):
    """Base of every ordinary error the trainer raises on purpose; the message says what failed and what to do."""


class StageError(TrainerError):
    """A stage stopped early; the message says why and what to do (artifacts already written stay valid)."""


class RewardInputError(TrainerError, ValueError):
    """A sample a reward cannot score as given (e.g. reward ``correctness`` and no gold answer); the
    message names the sample and what to add or change. A ``ValueError`` too, as bad input is."""


class RewardFailed(TrainerBaseException):
    """A reward that could not be computed, raised by the framework reward files (OpenRLHF, verl) where
    the framework would swallow an ``Exception``. It is deliberately NOT an ``Exception``:

    - OpenRLHF 0.11.2, ``openrlhf/utils/agent.py``: ``SingleTurnAgentExecutor.execute`` calls the reward
      function (in a thread, ``asyncio.to_thread``) inside ``except Exception as e: logger.info(...)``,
      so an ``Exception`` is logged at INFO and the sample keeps ``reward=None``: the run crashes later,
      elsewhere, or trains on the other samples;
    - verl 0.9.1, ``verl/experimental/reward_loop/reward_manager/limited.py``: ``RateLimitedRewardManager``
      wraps ``compute_score`` in ``except Exception as e:`` and scores the sample 0.0
      (``reward_extra_info["error"]``): an outage becomes a reward of zero that the step trains on.
      (verl's ``naive``, ``dapo`` and ``gdpo`` managers catch nothing: any error fails the step.)

    A ``BaseException`` that is neither ``KeyboardInterrupt`` nor ``SystemExit`` passes those handlers
    and still travels like an error through threads and coroutines (``concurrent.futures`` and
    asyncio's ``Task`` store any ``BaseException`` on the future, then re-raise it in the awaiting
    code), so the rollout or step fails at once, with this message and the original error as
    ``__cause__``. TRL 1.16's ``GRPOTrainer._calculate_rewards`` catches nothing around reward
    functions, so the TRL rewards (``trainer.rewards``) raise ordinary ``TrainerError`` subclasses.
    """
