"""``POST /v1/score``, ``GET /v1/info`` and ``POST /v1/arms/precompute`` (keyed: ``auth.AuthMiddleware``)."""

from __future__ import annotations

from fastapi import APIRouter

from reward_service.routers.deps import RuntimeDep
from reward_service.strict_json import StrictJSONRoute
from shared_schemas.wire import InfoResponse, PrecomputeRequest, PrecomputeResponse, ScoreRequest, ScoreResponse

router = APIRouter(prefix="/v1", tags=["scoring"], route_class=StrictJSONRoute)


@router.post("/score", response_model=ScoreResponse, summary="Score trajectories")
async def score(body: ScoreRequest, runtime: RuntimeDep) -> ScoreResponse:
    return await runtime.scoring.score(body)


@router.get("/info", response_model=InfoResponse, summary="Scorer version, model, arm names, limits")
async def info(runtime: RuntimeDep) -> InfoResponse:
    return runtime.info()


@router.post(
    "/arms/precompute",
    response_model=PrecomputeResponse,
    summary="Generate and cache the arms of many questions ahead of training",
)
async def precompute(body: PrecomputeRequest, runtime: RuntimeDep) -> PrecomputeResponse:
    return await runtime.scoring.precompute(body)
