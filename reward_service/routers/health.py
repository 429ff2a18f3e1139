"""Liveness, readiness and metrics: no authentication (probes and scrapers have no key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from reward_service.routers.deps import RuntimeDep, service_state

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and the service can score")
async def readyz(runtime: RuntimeDep) -> dict[str, str]:
    return {"status": "ready", "backend": runtime.backend_name}


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(service_state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
