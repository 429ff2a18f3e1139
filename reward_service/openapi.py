"""The OpenAPI document as the service really behaves: every status each route answers, the error
body's schema, the bearer scheme where a key is required, ``/metrics`` as text, and this deployment's limits.

FastAPI derives the document from the routes and the wire models; this module completes it:

- every operation outside ``auth.PUBLIC_PATHS`` requires the bearer scheme (``auth.BEARER_SCHEME``),
  the rule ``auth.AuthMiddleware`` enforces;
- every route lists each status it can answer (``ROUTE_STATUSES``, plus 400 for ambiguous framing
  on every route), each error with the ``ErrorResponse`` schema (``{"error": {"code", "message"}}``)
  and, where sent, its ``Retry-After`` / ``WWW-Authenticate`` header;
- the wire models' ceilings are replaced by this deployment's limits (``reward_service.limits``:
  ``max_items``, ``max_trajectories``, ``max_text_chars``) and arm names are an enum of the configured arms, so a
  request the schema allows is not refused by a rule the schema does not state.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from reward_service.auth import BEARER_SCHEME, BEARER_SCHEME_NAME, PUBLIC_PATHS
from reward_service.limits import Limits
from reward_service.regime_w.config import RegimeWConfig
from shared_schemas.wire import ErrorResponse

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}

STATUS_TEXT = {
    400: "bad request: `Content-Length` with `Transfer-Encoding`; on scoring routes also `arms_unavailable` "
    "(backend `provided` and no `arm_outputs`)",
    401: "missing or invalid API key (`Authorization: Bearer <key>`)",
    413: "request body over this service's `max_body_bytes`",
    422: "invalid body: not JSON, a duplicate key, a lone surrogate, a field out of its bounds or an unknown arm; "
    "the message names the field",
    502: "`generation_failed`: the arm model answered something unusable (an error status that is not an "
    "outage, a reply of the wrong shape); the message names its status and a request id for the service log",
    503: "`overloaded` (too many questions waiting for generation), `not_ready` (the model is not loaded yet) or "
    "`arm_model_unavailable` (the arm model's server unreachable, timed out or answering 429/502/503/504; "
    "nothing cached); see Retry-After",
    504: "`generation_timeout`: arm generation exceeded its deadline; it goes on, and a retry after Retry-After "
    "is served from the cache",
}

_SCORING = (400, 401, 413, 422, 502, 503, 504)
#: the statuses each route answers besides 200 (every route also answers 400 for ambiguous framing)
ROUTE_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("/v1/score", "post"): _SCORING,
    ("/v1/arms/precompute", "post"): _SCORING,
    ("/get_reward", "post"): _SCORING,
    ("/v1/info", "get"): (400, 401, 503),
    ("/readyz", "get"): (400, 503),
    ("/healthz", "get"): (400,),
    ("/metrics", "get"): (400,),
}

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}},
    504: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}},
}


def install_openapi(app: FastAPI, limits: Limits, config: RegimeWConfig) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = describe(doc, limits, config)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(doc: dict[str, Any], limits: Limits, config: RegimeWConfig) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER_SCHEME_NAME] = dict(BEARER_SCHEME)
    schemas = components.setdefault("schemas", {})
    _, defs = models_json_schema([(ErrorResponse, "serialization")], ref_template="#/components/schemas/{model}")
    schemas.update(defs["$defs"])
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            if path not in PUBLIC_PATHS:
                operation["security"] = [{BEARER_SCHEME_NAME: []}]
            _describe_responses(path, method, operation)
    operation = doc["paths"].get("/metrics", {}).get("get")
    if operation is not None:
        operation["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    _apply_limits(schemas, limits, config)
    return doc


def _describe_responses(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    statuses = ROUTE_STATUSES.get((path, method), (400,))
    for status in statuses:
        entry = responses.setdefault(str(status), {})
        entry.setdefault("description", STATUS_TEXT[status])
        entry["content"] = {"application/json": {"schema": ERROR_REF}}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
    for status in list(responses):
        if status != "200" and int(status) not in statuses:
            del responses[status]  # a status the route cannot answer is not documented


def _apply_limits(schemas: dict[str, Any], limits: Limits, config: RegimeWConfig) -> None:
    text = limits.max_text_chars
    question = limits.max_question_chars
    request = schemas.get("ScoreRequest", {}).get("properties", {})
    if "items" in request:
        request["items"]["maxItems"] = limits.max_items
    item = schemas.get("ScoreItem", {}).get("properties", {})
    if item:
        item["question"]["maxLength"] = question
        item["trajectories"]["maxItems"] = limits.max_trajectories
        item["trajectories"]["items"]["maxLength"] = text
        for option in item["gold_answer"].get("anyOf", ()):
            if option.get("type") == "string":
                option["pattern"] = "[0-9]"  # a gold answer holds a number
    arm = schemas.get("ArmOutput", {}).get("properties", {})
    if arm:
        arm["text"]["maxLength"] = text
        arm["arm"]["enum"] = list(config.arm_names)
    precompute = schemas.get("PrecomputeRequest", {}).get("properties", {})
    if "questions" in precompute:
        precompute["questions"]["items"]["maxLength"] = question
