"""Liveness, readiness and metrics: no authentication (probes and scrapers have no key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and the service can score")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    if state.ready:
        return JSONResponse({"status": "ready", "backend": state.engine.arms.backend.name})
    if state.load_error:
        return JSONResponse(
            {"error": {"code": "not_ready", "message": f"the model failed to load: {state.load_error}"}},
            status_code=503, headers={"Retry-After": "30"},
        )
    return JSONResponse(
        {"error": {"code": "not_ready", "message": "the model is loading"}},
        status_code=503, headers={"Retry-After": "5"},
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
