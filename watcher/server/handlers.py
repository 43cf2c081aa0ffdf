"""Exception handlers of the server: every error leaves in one of the API's envelopes.

Request-validation errors get one readable ``message`` naming the field (the
deepest problem pydantic found, with union-branch names left out), and on
``/chat/completions`` they use the chat envelope so that OpenAI's SDKs show
that message and its code. Nothing a client sends is answered with a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from watcher.errors import RefError
from watcher.server.problems import ChatProblem, StreamProblem

log = logging.getLogger(__name__)

MAX_DETAILS = 20
_SCALAR_BRANCHES = {"str", "int", "float", "bool", "none"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StreamProblem)
    async def stream_problem(request: Request, exc: StreamProblem) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ChatProblem)
    async def chat_problem(request: Request, exc: ChatProblem) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RefError)
    async def ref_error(request: Request, exc: RefError) -> JSONResponse:
        problem = ChatProblem(exc.status, exc.message, type=exc.type, code=exc.code)
        return JSONResponse(problem.body(), status_code=problem.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())[:MAX_DETAILS]
        details = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")),
             "type": str(err.get("type", ""))}
            for err in errors
        ]
        param, message = validation_message(errors)
        if request.url.path.endswith("/chat/completions"):
            # The chat envelope, so that OpenAI's SDKs read the message and code too.
            body = ChatProblem(422, message, type="validation_error",
                               code="request_invalid").body()
            body["error"]["param"] = param
            return JSONResponse({**body, "message": message, "details": details},
                                status_code=422)
        return JSONResponse(
            {"error": "validation_error", "message": message, "details": details},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        problem = ChatProblem(500, "internal server error", type="internal_error",
                              code="internal_error")
        return JSONResponse(problem.body(), status_code=500)


def validation_message(errors: list[Any]) -> tuple[str, str]:
    """``(param, message)`` for pydantic errors: the deepest one, as ``field.path: msg``."""
    if not errors:
        return "body", "the request is invalid"
    located = [(_field_path(err.get("loc", ())), err) for err in errors]
    path, first = max(located, key=lambda item: len(item[0]))
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error") or "malformed"
        return "body", f"the request body is not valid JSON ({reason})"
    param = ".".join(str(p) for p in path) or "body"
    message = f"{param}: {first.get('msg', 'invalid')}"
    if param == "body":
        message = f"the request body must be a JSON object ({first.get('msg', 'invalid')})"
    others = len(errors) - 1
    if others and not _same_field(located, path):
        message += f" (and {others} more problem{'s' * (others > 1)})"
    return param, message


def _field_path(loc: Any) -> list[Any]:
    """The loc without ``body`` and the names pydantic gives union branches."""
    path: list[Any] = []
    for part in list(loc)[1:] if loc and loc[0] == "body" else list(loc):
        if isinstance(part, str) and (part in _SCALAR_BRANCHES or "[" in part):
            continue
        if path and part == path[-1] and isinstance(part, str):
            continue  # a tagged union repeats its tag before the field of that name
        path.append(part)
    return path


def _same_field(located: list[tuple[list[Any], Any]], path: list[Any]) -> bool:
    """Whether every error is about ``path`` or a field above it (branches of one union)."""
    return all(path[: len(p)] == p for p, _ in located)
