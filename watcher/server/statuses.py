"""The error statuses each route answers, with their envelopes, for the OpenAPI document.

Routes pass ``responses=stream_errors(401, 404)`` or ``chat_errors(...)``; the
bodies are the envelopes :mod:`watcher.server.problems` and
:mod:`watcher.server.handlers` produce.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StreamErrorBody(BaseModel):
    """Stream endpoints: ``{"detail": "<message>"}``."""

    detail: str


class ErrorObject(BaseModel):
    message: str
    type: str = Field(description="stream_error, validation_error, provider_error, "
                      "upstream_error, rate_limit_error, authentication_error, internal_error")
    code: str = Field(description="e.g. frame_not_yet_produced, model_unavailable, "
                      "upstream_http_503, request_invalid")
    param: str | None = Field(None, description="Request-validation errors: the field.")
    upstream: dict[str, Any] | None = Field(
        None, description="Upstream errors: {provider, status, body}.")


class ChatErrorDetail(BaseModel):
    error: ErrorObject


class ChatErrorBody(BaseModel):
    """Chat completions: the seed's ``detail.error``, repeated as ``error`` for OpenAI SDKs."""

    detail: ChatErrorDetail
    error: ErrorObject


class ValidationErrorBody(BaseModel):
    """Request validation on stream endpoints."""

    error: str = "validation_error"
    message: str
    details: list[dict[str, Any]]


_MEANINGS = {
    400: "bad request (unknown model, media the model cannot take)",
    401: "missing or unknown API key (or publish token)",
    403: "the stream belongs to another API key",
    404: "no such stream (or it has ended)",
    415: "the offer is not application/sdp",
    422: "invalid request or reference (see the message and code)",
    429: "a limit is reached, or an upstream is rate limiting; see retry-after",
    502: "the upstream model failed",
    503: "the server is shutting down, or the model is loading; retry later",
    504: "the upstream model did not answer in time",
}


def stream_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a stream endpoint answering ``statuses``."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": StreamErrorBody, "description": _MEANINGS[status]}
        for status in statuses}
    if 422 in statuses:
        responses[422] = {"model": StreamErrorBody | ValidationErrorBody,
                          "description": _MEANINGS[422]}
    return responses


def chat_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for ``/chat/completions`` answering ``statuses``."""
    return {status: {"model": ChatErrorBody, "description": _MEANINGS[status]}
            for status in statuses}
