"""``POST /v1/score``, ``GET /v1/info`` and ``POST /v1/arms/precompute``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from shared_schemas.wire import InfoResponse, PrecomputeRequest, PrecomputeResponse, ScoreRequest, ScoreResponse

from reward_service.auth import require_api_key
from reward_service.engine import ScoringEngine
from reward_service.errors import InvalidRequest
from reward_service.routers.deps import get_engine

router = APIRouter(prefix="/v1", tags=["scoring"], dependencies=[Depends(require_api_key)])

_ERRORS = {
    401: {"description": "missing or invalid API key"},
    413: {"description": "request body over the limit"},
    422: {"description": "validation error; the message names the field"},
    503: {"description": "overloaded or not ready (Retry-After)"},
    504: {"description": "arm generation exceeded its deadline"},
}


@router.post("/score", response_model=ScoreResponse, responses=_ERRORS, summary="Score trajectories")
async def score(body: ScoreRequest, engine: ScoringEngine = Depends(get_engine)) -> ScoreResponse:
    return await engine.score(body)


@router.get("/info", response_model=InfoResponse, summary="Scorer version, model, arm names, limits")
async def info(request: Request, engine: ScoringEngine = Depends(get_engine)) -> InfoResponse:
    return InfoResponse(
        scorer=engine.info,
        backend=engine.arms.backend.name,
        arms=list(engine.config.arm_names),
        limits=request.app.state.settings.limits(),
    )


@router.post("/arms/precompute", response_model=PrecomputeResponse, responses=_ERRORS,
             summary="Generate and cache the arms of many questions ahead of training")
async def precompute(body: PrecomputeRequest, engine: ScoringEngine = Depends(get_engine)) -> PrecomputeResponse:
    for i, q in enumerate(body.questions):
        if len(q) > engine.limits.max_text_chars:
            raise InvalidRequest(f"questions[{i}]: longer than {engine.limits.max_text_chars} characters")
    return PrecomputeResponse(**(await engine.arms.precompute(body.questions)))
