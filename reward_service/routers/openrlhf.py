"""OpenRLHF-compatible ``POST /get_reward``, so existing RL frameworks can use the service unchanged.

Request: ``{"query": [prompt + response], "prompts": [prompt], "labels": [gold], "metas": [...]}``.
The response is ``query[i]`` minus its prompt; the question is ``metas[i]["question"]`` when given,
else the prompt itself. Responses of one question are scored together (one arm set).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from shared_schemas.wire import OpenRLHFRequest, OpenRLHFResponse, ScoreItem, ScoreRequest

from reward_service.auth import require_api_key
from reward_service.engine import ScoringEngine
from reward_service.errors import ArmsUnavailable, InvalidRequest
from reward_service.routers.deps import get_engine

router = APIRouter(tags=["openrlhf"], dependencies=[Depends(require_api_key)])


def split_response(query: str, prompt: str) -> str:
    if query.startswith(prompt):
        return query[len(prompt):]
    stripped = prompt.strip()
    at = query.find(stripped) if stripped else -1
    if at != -1:
        return query[at + len(stripped):]
    return query


@router.post("/get_reward", response_model=OpenRLHFResponse, summary="OpenRLHF remote reward model API")
async def get_reward(body: OpenRLHFRequest, engine: ScoringEngine = Depends(get_engine)) -> OpenRLHFResponse:
    if not engine.arms.can_generate:
        raise ArmsUnavailable(
            "/get_reward needs arms the service generates, but this service runs backend 'provided' "
            "(no model); start it with --backend hf|openai|vllm, or use POST /v1/score with arm_outputs"
        )
    if body.prompts is None:
        raise InvalidRequest("prompts: required by this service (it needs the question of each query)")
    groups: dict[tuple[str, str | None], list[int]] = {}
    responses: list[str] = []
    for i, (query, prompt) in enumerate(zip(body.query, body.prompts)):
        responses.append(split_response(query, prompt))
        meta = body.metas[i] if body.metas else None
        question = meta.get("question") if isinstance(meta, dict) else None
        if not isinstance(question, str) or not question.strip():
            question = prompt.strip()
        if not question:
            raise InvalidRequest(f"prompts[{i}]: empty prompt and no metas[{i}].question")
        label = body.labels[i] if body.labels else None
        groups.setdefault((question, label), []).append(i)
    items = [
        ScoreItem(id=f"q{g}", question=q, gold_answer=label, trajectories=[responses[i] for i in idx])
        for g, ((q, label), idx) in enumerate(groups.items())
    ]
    response = await engine.score(ScoreRequest(items=items, return_details=True))
    n = len(body.query)
    rewards = [0.0] * n
    logs: dict[str, list[float]] = {k: [0.0] * n for k in ("s_end", "s_path", "s_cf", "s_wm", "length_penalty")}
    logs["correctness"] = [0.0] * n
    for (_, idx), result in zip(groups.items(), response.results):
        for i, s in zip(idx, result.scores):
            rewards[i] = s.reward
            for key in ("s_end", "s_path", "s_cf", "s_wm", "length_penalty", "correctness"):
                value = getattr(s, key)
                logs[key][i] = float(value) if value is not None else 0.0
    return OpenRLHFResponse(rewards=rewards, scores=rewards, extra_logs=logs)
