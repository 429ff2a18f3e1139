"""The one dependency through which routes reach the running service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from reward_service.runtime import Runtime, ServiceState


def service_state(request: Request) -> ServiceState:
    state = request.app.state.service
    assert isinstance(state, ServiceState), "the app was not built by reward_service.app.create_app"
    return state


def get_runtime(request: Request) -> Runtime:
    """The loaded runtime, or 503 ``not_ready`` (Retry-After) while the model loads or after it failed."""
    return service_state(request).require()


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
