"""``POST /v1/score``, ``GET /v1/info`` and ``POST /v1/arms/precompute``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from reward_service.auth import require_api_key
from reward_service.errors import InvalidRequest
from reward_service.routers.deps import RuntimeDep
from reward_service.strict_json import StrictJSONRoute
from shared_schemas.wire import InfoResponse, PrecomputeRequest, PrecomputeResponse, ScoreRequest, ScoreResponse

router = APIRouter(prefix="/v1", tags=["scoring"], dependencies=[Depends(require_api_key)], route_class=StrictJSONRoute)


@router.post("/score", response_model=ScoreResponse, summary="Score trajectories")
async def score(body: ScoreRequest, runtime: RuntimeDep) -> ScoreResponse:
    return await runtime.engine.score(body)


@router.get("/info", response_model=InfoResponse, summary="Scorer version, model, arm names, limits")
async def info(runtime: RuntimeDep) -> InfoResponse:
    return runtime.info()


@router.post(
    "/arms/precompute",
    response_model=PrecomputeResponse,
    summary="Generate and cache the arms of many questions ahead of training",
)
async def precompute(body: PrecomputeRequest, runtime: RuntimeDep) -> PrecomputeResponse:
    limit = runtime.engine.limits.max_text_chars
    for i, q in enumerate(body.questions):
        if len(q) > limit:
            raise InvalidRequest(f"questions[{i}]: longer than {limit} characters")
    return PrecomputeResponse(**(await runtime.provider.precompute(body.questions)))
