"""Dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request

from reward_service.engine import ScoringEngine
from reward_service.errors import NotReady


def get_engine(request: Request) -> ScoringEngine:
    state = request.app.state
    if state.engine is None:
        if state.load_error:
            raise NotReady(f"the model failed to load: {state.load_error}", retry_after_s=30)
        raise NotReady("the model is still loading; retry shortly")
    return state.engine
