"""A fake OpenAI-compatible VLM for the benchmarks: answers after a fixed latency.

``POST /v1/chat/completions`` sleeps ``latency`` seconds and answers a JSON object
with every property of the requested ``response_format`` schema set to a "nothing
there" value; ``GET /v1/models`` lists ``fake-vlm``. It counts the calls it served
(``GET /calls``).

Run as a script it is a process of its own, as a GPU server would be: it prints
``{"event": "ready", "base_url": ...}`` and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODEL = "fake-vlm"
_QUIET = {"boolean": False, "integer": 0, "number": 0.0, "string": "nothing", "array": [],
          "object": {}}


def _answer(body: dict[str, Any]) -> str:
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    out = {}
    for name, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        out[name] = spec["enum"][0] if "enum" in spec else _QUIET.get(kind)
    return json.dumps(out)


class FakeVlm:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls = 0
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._complete, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/calls", self._calls, methods=["GET"]),
        ])

    async def _complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        await asyncio.sleep(self.latency)
        self.calls += 1
        return JSONResponse({
            "id": f"cmpl-{self.calls}", "object": "chat.completion", "created": 0,
            "model": MODEL, "usage": {"prompt_tokens": 300, "completion_tokens": 8,
                                      "total_tokens": 308},
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": _answer(body)}}]})

    async def _models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _calls(self, request: Request) -> JSONResponse:
        return JSONResponse({"calls": self.calls})


async def _serve(latency: float) -> None:
    import _common
    from support.asgi import serve_asgi

    vlm = FakeVlm(latency)
    async with serve_asgi(vlm.app) as base:
        _common.send({"event": "ready", "base_url": base})
        await _common.stdin_closed()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.3)
    args = parser.parse_args()
    asyncio.run(_serve(args.latency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
