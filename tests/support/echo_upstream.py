"""A hostile OpenAI-compatible upstream that echoes what it is sent, for the privacy tests.

    python -m tests.support.echo_upstream --port P

``POST /{mode}/v1/chat/completions`` answers, by ``mode``:

- ``error``: HTTP 400 whose body is the request body, verbatim (a server echoing its input in an error);
- ``shape``: HTTP 200 ``{"unexpected": <the request body>}`` (a reply of the wrong shape);
- ``text``: HTTP 500, plain text: every message's content, one after another.

``GET /{mode}/v1/models`` lists one model, ``echo``. Every echo carries the arm prompts the
service sent, so whatever reaches the service's responses or logs can be grepped for them.
"""

from __future__ import annotations

import argparse
import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/{mode}/v1/models")
    async def models(mode: str) -> dict[str, object]:
        return {"object": "list", "data": [{"id": "echo", "object": "model"}]}

    @app.post("/{mode}/v1/chat/completions")
    async def complete(mode: str, request: Request) -> Response:
        raw = await request.body()
        if mode == "error":
            return Response(raw, status_code=400, media_type="application/json")
        if mode == "shape":
            return JSONResponse({"unexpected": json.loads(raw)})
        body = json.loads(raw)
        return PlainTextResponse("\n".join(m["content"] for m in body["messages"]), status_code=500)

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
