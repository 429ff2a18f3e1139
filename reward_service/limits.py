"""A deployment's request limits: the numbers, read from the settings in one place, and the one check
of a request against them.

The wire contract (``shared_schemas.wire``) states ceilings that every service honours (``MAX_ITEMS``,
``MAX_TEXT_CHARS`` ...): a body over them fails validation. A deployment sets its own limits, at most
those ceilings, in its settings (``MAX_BODY_BYTES``, ``MAX_ITEMS``, ``MAX_TRAJECTORIES``,
``MAX_TEXT_CHARS``, ``OPENRLHF_MAX_QUERIES``). ``Limits.from_settings`` is the only place that reads
them; the body-limit middleware, the OpenAPI document, ``GET /v1/info``, ``/get_reward``'s planning and
``check_request`` all take them from a ``Limits``. ``check_request`` is the only check of a
``ScoreRequest`` or ``PrecomputeRequest`` against them: a 422 naming the first field over a limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from reward_service.errors import InvalidRequest
from shared_schemas.wire import MAX_QUESTION_CHARS, PrecomputeRequest, ScoreRequest

if TYPE_CHECKING:
    from reward_service.settings import Settings


@dataclass(frozen=True)
class Limits:
    """The limits one deployment enforces on a request."""

    max_body_bytes: int
    max_items: int  # /v1/score items per request (and per /get_reward scoring chunk)
    max_trajectories: int  # trajectories per item
    max_text_chars: int  # a trajectory, an arm text, a question (a question also within MAX_QUESTION_CHARS)
    openrlhf_max_queries: int  # /get_reward queries per request

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_items=settings.max_items,
            max_trajectories=settings.max_trajectories,
            max_text_chars=settings.max_text_chars,
            openrlhf_max_queries=settings.openrlhf_max_queries,
        )

    @property
    def max_question_chars(self) -> int:
        """The longest question: the text limit, within the wire contract's question ceiling."""
        return min(MAX_QUESTION_CHARS, self.max_text_chars)

    def public(self) -> dict[str, int]:
        """The limits ``GET /v1/info`` states."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_items": self.max_items,
            "max_trajectories": self.max_trajectories,
            "max_text_chars": self.max_text_chars,
        }


#: limits of offline scoring (``regime-w-score``): the input file is the limit, not an HTTP deployment's
OFFLINE_LIMITS = Limits(
    max_body_bytes=10**9, max_items=10**9, max_trajectories=10**9, max_text_chars=10**9, openrlhf_max_queries=10**9
)


def check_request(request: ScoreRequest | PrecomputeRequest, limits: Limits) -> None:
    """``InvalidRequest`` (422) naming the first field of ``request`` over one of ``limits``."""
    if isinstance(request, PrecomputeRequest):
        for i, q in enumerate(request.questions):
            if len(q) > limits.max_text_chars:
                raise InvalidRequest(f"questions[{i}]: longer than {limits.max_text_chars} characters")
        return
    if len(request.items) > limits.max_items:
        raise InvalidRequest(f"items: {len(request.items)} items exceed this service's limit of {limits.max_items}")
    for i, item in enumerate(request.items):
        if len(item.trajectories) > limits.max_trajectories:
            raise InvalidRequest(
                f"items[{i}].trajectories: {len(item.trajectories)} trajectories exceed the limit of "
                f"{limits.max_trajectories}"
            )
        if len(item.question) > limits.max_text_chars:
            raise InvalidRequest(f"items[{i}].question: longer than {limits.max_text_chars} characters")
        for j, text in enumerate(item.trajectories):
            if len(text) > limits.max_text_chars:
                raise InvalidRequest(
                    f"items[{i}].trajectories[{j}]: {len(text)} characters exceed the limit of {limits.max_text_chars}"
                )
        for j, arm in enumerate(item.arm_outputs or ()):
            if len(arm.text) > limits.max_text_chars:
                raise InvalidRequest(
                    f"items[{i}].arm_outputs[{j}].text: longer than {limits.max_text_chars} characters"
                )
