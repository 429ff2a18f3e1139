"""Regime W's wire contract and answer-format rules, shared by the reward service and the trainer.

Depends on pydantic only; publishable with the trainer.
"""

from shared_schemas.answer import (
    SOURCES,
    ParsedAnswer,
    answers_equal,
    extract_answer,
    gold_answer,
    normalize_answer,
    normalize_number,
    parse_answer,
)
from shared_schemas.arith import evaluate_arithmetic
from shared_schemas.wire import (
    API_VERSION,
    ArmOutput,
    ErrorDetail,
    ErrorResponse,
    InfoResponse,
    ItemResult,
    OpenRLHFRequest,
    OpenRLHFResponse,
    PrecomputeRequest,
    PrecomputeResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    ScorerInfo,
    TrajectoryScore,
)

__all__ = [
    "API_VERSION",
    "ArmOutput",
    "ErrorDetail",
    "ErrorResponse",
    "InfoResponse",
    "ItemResult",
    "OpenRLHFRequest",
    "OpenRLHFResponse",
    "PrecomputeRequest",
    "PrecomputeResponse",
    "ParsedAnswer",
    "SOURCES",
    "ScoreItem",
    "ScoreRequest",
    "ScoreResponse",
    "ScorerInfo",
    "TrajectoryScore",
    "answers_equal",
    "evaluate_arithmetic",
    "extract_answer",
    "gold_answer",
    "normalize_answer",
    "normalize_number",
    "parse_answer",
]
