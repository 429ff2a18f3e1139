"""OpenRLHF-compatible ``POST /get_reward``, so existing RL frameworks can use the service unchanged.

The parsing (question from a chat-templated prompt, response from the query, labels, chunks,
0-1 scores) lives in ``reward_service.openrlhf_compat``; this route (keyed: ``auth.AuthMiddleware``)
runs the chunks through the scoring service and answers OpenRLHF's ``{rewards, scores, extra_logs}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from reward_service.errors import ArmsUnavailable, InvalidRequest
from reward_service.openrlhf_compat import CompatError, build_response, chunk_items, plan_groups
from reward_service.routers.deps import RuntimeDep
from reward_service.strict_json import StrictJSONRoute
from shared_schemas.wire import OpenRLHFRequest, OpenRLHFResponse, ScoreItem, ScoreRequest

router = APIRouter(tags=["openrlhf"], route_class=StrictJSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "backend 'provided': this service cannot generate the arms /get_reward needs"},
    401: {"description": "missing or invalid API key (Authorization: Bearer <key>)"},
    413: {"description": "request body over the limit (REGIME_W_MAX_BODY_BYTES)"},
    422: {"description": "invalid body; the message names the field (query[i], prompts[i], labels[i], metas[i])"},
    503: {"description": "overloaded or not ready (Retry-After)"},
    504: {"description": "arm generation exceeded its deadline; a retry is served from the cache"},
}

_DESCRIPTION = """OpenRLHF's remote reward API (`--reward.remote_url http://HOST:PORT/get_reward`).

**Request**: `query[i]` = prompt + response (as OpenRLHF decodes it), `prompts[i]` = the prompt,
`labels[i]` = the gold answer (`"#### 72"`, `"72"`, `72`, a GSM8K solution) or `""` / `null` /
no `labels` for label-free scoring; optional `metas[i].question` overrides the question.

**Question**: `metas[i].question`, else the last user turn of the prompt's chat template
(Llama-3, DeepSeek-R1, ChatML/Qwen, Mistral, Phi-3, Gemma, or `Question: ...\\nAnswer:`) with the
trainer's instruction ("Please reason step by step, ...") removed, so arms precomputed for the
data set's question are reused; a text not cached as read that contains a precomputed question
(another instruction, another template) uses that question and its arms. **Response**: `query[i]` minus `prompts[i]`, trailing end-of-turn
tokens removed. Queries of one (question, label) are scored together.

**Batch size**: up to the service's `openrlhf_max_queries` (env `REGIME_W_OPENRLHF_MAX_QUERIES`,
default 8,192), scored in chunks of at most `max_items` questions x `max_trajectories` responses
(the body must also fit `max_body_bytes`).

**Response**: `rewards[i]` the Regime W reward; `scores[i]` in [0, 1] for OpenRLHF's dynamic
filtering: correctness when labelled, `s_wm` when label-free; `extra_logs` per query: `s_end`,
`s_path`, `s_cf`, `s_wm`, `length_penalty`, `correctness` (0 where label-free), `label_free`.
"""


@router.post(
    "/get_reward",
    response_model=OpenRLHFResponse,
    responses=_ERRORS,
    summary="OpenRLHF remote reward model API",
    description=_DESCRIPTION,
)
async def get_reward(body: OpenRLHFRequest, runtime: RuntimeDep) -> OpenRLHFResponse:
    if not runtime.provider.can_generate:
        raise ArmsUnavailable(
            "/get_reward needs arms the service generates, but this service runs backend 'provided' "
            "(no model); start it with --backend hf|openai|vllm, or use POST /v1/score with arm_outputs"
        )
    limits = runtime.scoring.limits

    def plan() -> list[tuple[list[ScoreItem], list[list[int]]]]:  # parsing and index lookups: off the event loop
        return list(chunk_items(plan_groups(body, limits, runtime.provider.resolve), limits))

    try:
        chunks = await asyncio.to_thread(plan)
    except (CompatError, ValidationError) as exc:
        raise InvalidRequest(str(exc)) from None
    scored = []
    for items, where in chunks:
        response = await runtime.scoring.score(ScoreRequest(items=items, return_details=True))
        for item, indices, result in zip(items, where, response.results):
            scored.append((indices, item.gold_answer is not None, result.scores))
    return build_response(len(body.query), scored)
