"""Errors the server answers with, one per envelope the API uses.

* stream endpoints: ``{"detail": "<message>"}``
* chat completions: ``{"detail": {"error": {"message", "type", "code"}}}``, with the
  same object repeated as a top-level ``error``: that is where OpenAI's SDKs look
  for an error's message and code
* request validation: ``{"error": "validation_error", "message", "details": [...]}``
  (on ``/chat/completions`` the chat envelope, plus ``message`` and ``details``)
"""

from __future__ import annotations

from typing import Any


class StreamProblem(Exception):
    """An error of a stream endpoint (``{"detail": message}``)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}


class ChatProblem(Exception):
    """An error of ``/chat/completions`` (``{"detail": {"error": E}, "error": E}``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str,
        upstream: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.upstream = upstream
        self.headers = headers

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.upstream is not None:
            error["upstream"] = self.upstream
        return {"detail": {"error": error}, "error": error}
