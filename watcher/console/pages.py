"""The console's pages: server-rendered from the same documents as ``/api/``.

Jinja2 with autoescape on everywhere (an answer holding ``<script>`` shows as
text), a Content-Security-Policy that allows only this origin's own script
and style, and plain HTML forms for every action (each with the CSRF token).
Pages update themselves by polling fragments of themselves
(``?fragment=NAME``, swapped in by ``static/console.js``); without
JavaScript they are still complete, only not live.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from watcher import __version__
from watcher.console import api
from watcher.console.api import BadRequest, ConsoleSource
from watcher.console.auth import CSRF_FIELD, SESSION_COOKIE, ConsoleAuth
from watcher.console.routes import event_id_of, timeline_query
from watcher.duration import parse_duration
from watcher.engine.silences import SilenceError, matchers_from_options
from watcher.logs import redact
from watcher.store.timeline import FEEDBACK_FILTERS, STATUSES

HERE = Path(__file__).parent
FILTERS = ("rule", "stream", "severity", "status", "since", "until", "silenced", "feedback")
SEVERITIES = ("info", "warning", "critical")

_env = Environment(loader=FileSystemLoader(HERE / "templates"),
                   autoescape=select_autoescape(default=True, default_for_string=True),
                   trim_blocks=True, lstrip_blocks=True)
_env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
_env.filters["compact"] = lambda value: json.dumps(value, ensure_ascii=False)
_env.filters["shown"] = lambda value: value if isinstance(value, str) else json.dumps(
    value, ensure_ascii=False)
"""JSON as text; autoescape then makes it safe (``tojson`` would show ``\u003c``)."""


def render(request: Request, auth: ConsoleAuth, src: ConsoleSource, template: str,
           status_code: int = 200, **context: Any) -> HTMLResponse:
    context.update(request=request, csrf_token=auth.csrf_token, csrf_field=CSRF_FIELD,
                   token_required=auth.required, version=__version__, path=request.url.path,
                   loopback_only=not auth.required)
    html = redact(_env.get_template(template).render(**context))
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def page_routes(src: ConsoleSource, auth: ConsoleAuth) -> list[Route]:
    async def timeline(request: Request) -> Response:
        params = request.query_params
        filters = {name: params.get(name, "") for name in FILTERS}
        query = timeline_query(params)
        doc = await api.events_page(src, query)
        runners = src.status.runners()
        context = dict(events=doc["events"], next_before=doc["next_before"], filters=filters,
                       rules=sorted(runners), streams=sorted(src.status.keepers),
                       severities=SEVERITIES, statuses=STATUSES,
                       feedback_filters=FEEDBACK_FILTERS,
                       next_url=_next_url(filters, doc["next_before"]))
        if params.get("fragment") == "rows":
            return render(request, auth, src, "_rows.html", **context)
        return render(request, auth, src, "timeline.html", **context)

    async def event(request: Request) -> Response:
        doc = await api.event_detail(src, event_id_of(request))
        if doc is None:
            raise LookupError("no such event")
        template = "_event_live.html" if request.query_params.get("fragment") else "event.html"
        return render(request, auth, src, template, event=doc,
                      message=request.query_params.get("done"))

    async def event_action(request: Request) -> Response:
        event_id = event_id_of(request)
        form = await _form(request, auth)
        what = request.path_params["action"]
        if what == "ack":
            await api.acknowledge(src, event_id, _s(form, "by"), _s(form, "comment"))
            done = "acknowledged"
        elif what == "feedback":
            await api.set_feedback(src, event_id, _s(form, "label"), _s(form, "note"),
                                   _s(form, "by"))
            done = "feedback saved"
        elif what == "silence":
            doc = await api.event_detail(src, event_id)
            if doc is None:
                raise LookupError("no such event")
            silence = await api.create_silence(
                src, api.matchers_like(doc), _duration(_s(form, "duration") or "1h"),
                _s(form, "comment"), _s(form, "by") or "console")
            done = f"silence {silence['id']} created"
        else:
            raise LookupError("no such action")
        return RedirectResponse(f"/events/{event_id}?{urlencode({'done': done})}", 303)

    async def cameras(request: Request) -> Response:
        await src.status.refresh()
        template = "_cameras.html" if request.query_params.get("fragment") else "cameras.html"
        return render(request, auth, src, template, cameras=api.cameras(src))

    async def rules(request: Request) -> Response:
        template = "_rules.html" if request.query_params.get("fragment") else "rules.html"
        return render(request, auth, src, template, rules=api.rules(src))

    async def silences(request: Request) -> Response:
        message = request.query_params.get("done")
        if request.method == "POST":
            form = await _form(request, auth)
            try:
                matchers = matchers_from_options(
                    rule=_s(form, "rule") or None, stream=_s(form, "stream") or None,
                    severity=_s(form, "severity") or None,
                    labels=[x for x in _s(form, "labels").split(",") if x.strip()])
            except SilenceError as exc:
                raise BadRequest(str(exc)) from None
            created = await api.create_silence(src, list(matchers),
                                               _duration(_s(form, "duration")),
                                               _s(form, "comment"), _s(form, "by"))
            done = f"silence {created['id']} created"
            return RedirectResponse(f"/silences?{urlencode({'done': done})}", 303)
        return render(request, auth, src, "silences.html",
                      silences=await api.silences_list(src), message=message,
                      rules=sorted(src.status.runners()), streams=sorted(src.status.keepers),
                      severities=SEVERITIES)

    async def expire(request: Request) -> Response:
        await _form(request, auth)
        if not await api.expire(src, request.path_params["silence_id"]):
            raise LookupError("no active silence with this id")
        return RedirectResponse(f"/silences?{urlencode({'done': 'silence expired'})}", 303)

    return [
        Route("/", timeline),
        Route("/events/{event_id}", event),
        Route("/events/{event_id}/{action}", event_action, methods=["POST"]),
        Route("/cameras", cameras),
        Route("/rules", rules),
        Route("/silences", silences, methods=["GET", "POST"]),
        Route("/silences/{silence_id}/expire", expire, methods=["POST"]),
    ]


def login_routes(src: ConsoleSource, auth: ConsoleAuth) -> list[Route]:
    async def login(request: Request) -> Response:
        target = _local_path(request.query_params.get("next") or "/")
        if request.method == "GET":
            return render(request, auth, src, "login.html", next=target, failed=False)
        form = await request.form()
        session = auth.login(_s(form, "token"))
        if session is None:
            return render(request, auth, src, "login.html", 401, next=target, failed=True)
        response = RedirectResponse(_local_path(_s(form, "next") or target), 303)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict",
                            secure=_https(request, src), path="/")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return [Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"])]


def login_page(request: Request, auth: ConsoleAuth, src: ConsoleSource) -> HTMLResponse:
    """The 401 answer to a browser: the login form."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(request, auth, src, "login.html", 401, next=_local_path(target),
                  failed=False)


async def _form(request: Request, auth: ConsoleAuth) -> FormData:
    form = await request.form(max_files=0, max_fields=50)
    if not auth.csrf_ok(request, _s(form, CSRF_FIELD)):
        raise PermissionError("the form is stale or came from another site: reload the page")
    return form


def _s(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except (ValueError, TypeError):
        raise BadRequest("the duration must be like 30m, 2h or 1d") from None


def _next_url(filters: dict[str, str], before: str | None) -> str | None:
    if before is None:
        return None
    return "/?" + urlencode({**{k: v for k, v in filters.items() if v}, "before": before})


def _local_path(target: str) -> str:
    """Only same-site paths (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _https(request: Request, src: ConsoleSource) -> bool:
    return request.url.scheme == "https" or (src.public_url or "").startswith("https://")
