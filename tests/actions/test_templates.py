"""Message templates: the context, the defaults, escaping, and the sandbox."""

from __future__ import annotations

import pytest
from support.receivers import event

from watcher.actions.base import DeliveryError
from watcher.actions.slack import event_message
from watcher.actions.templates import (
    DEFAULT_BODY,
    DEFAULT_HTML,
    DEFAULT_TITLE,
    SUMMARY_TITLE,
    compile_template,
    event_context,
    render,
    summary_context,
)
from watcher.actions.webhook import am_alert, event_payload


def _render(text: str, context: dict, flavor: str = "text") -> str:
    return render(compile_template(text, flavor), context, action="ops", what="body")


def test_event_context_has_every_documented_key() -> None:
    ctx = event_context(event(), "ops")
    assert ctx == {
        "rule": "dock-occupied", "stream": "dock", "status": "firing", "kind": "firing",
        "severity": "critical", "labels": {"site": "north"},
        "answer": {"people": 2, "person_present": True,
                   "description": "Two people at the dock door"},
        "description": "Two people at the dock door",
        "created_at": "2024-05-01T12:00:00.000Z", "started_at": "2024-05-01T12:00:00.000Z",
        "resolved_at": None, "time": "2024-05-01 12:00:00 UTC", "episode": 3, "event_id": 42,
        "event_key": "dock-occupied:dock:3:firing:1714564800000",
        "urls": ["ovs://streams/s-1?frame_index=41"], "stream_ids": ["s-1"],
        "stream_time_ms": 41_000, "model": "local/vision",
        "usage": {"prompt_tokens": 800, "completion_tokens": 20},
        "prompt": "Is anyone at the loading dock?", "action": "ops", "has_snapshot": True,
        "persisted": True,
        "event_url": None,
    }


def test_a_public_url_links_every_message_to_the_event_page() -> None:
    linked = event(extra={"console_url": "https://watcher.example.com/"})
    ctx = event_context(linked, "ops")
    assert ctx["event_url"] == "https://watcher.example.com/events/42"
    text = render(compile_template(DEFAULT_BODY, "text"), ctx, action="ops", what="body")
    assert "Evidence: https://watcher.example.com/events/42" in text
    html = render(compile_template(DEFAULT_HTML, "html"), {**ctx, "title": "t",
                                                           "snapshot_cid": None},
                  action="ops", what="html")
    assert '<a href="https://watcher.example.com/events/42">' in html
    payload = event_payload(ctx, "t", text)
    assert payload["event_url"] == "https://watcher.example.com/events/42"
    assert am_alert(ctx, "t", text, "")["generatorURL"] == ctx["event_url"]
    blocks = event_message(ctx, "t", text)["blocks"]
    assert "<https://watcher.example.com/events/42|evidence>" in blocks[-1]["elements"][0]["text"]
    assert "event_url" not in event_payload(event_context(event(), "ops"), "t", text)


def test_resolved_and_repeat_times() -> None:
    resolved = event_context(event("resolved"), "ops")
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] == "2024-05-01T12:02:00.000Z"
    assert resolved["started_at"] == "2024-05-01T12:00:00.000Z"  # from extra.started_ms
    repeat = event_context(event("repeat", extra={}), "ops")
    assert (repeat["status"], repeat["kind"]) == ("firing", "repeat")
    assert repeat["started_at"] is None and repeat["resolved_at"] is None  # start unknown
    assert event_context(event(extra={}), "ops")["started_at"] == "2024-05-01T12:00:00.000Z"


@pytest.mark.parametrize(("answer", "expected"), [
    (None, {}), (True, {"value": True}), ({"a": 1}, {"a": 1})])
def test_answer_is_always_a_dict(answer: object, expected: dict) -> None:
    ctx = event_context(event(answer=answer), "ops")
    assert ctx["answer"] == expected and ctx["description"] is None


def test_default_title_and_body() -> None:
    assert _render(DEFAULT_TITLE, event_context(event(), "ops")) == (
        "[CRITICAL] dock-occupied on dock: firing")
    body = _render(DEFAULT_BODY, event_context(event(), "ops"))
    assert body == ("dock-occupied is firing on dock: Two people at the dock door\n"
                    "Firing since 2024-05-01T12:00:00.000Z.\n"
                    "people: 2\nperson_present: yes\n")
    resolved = _render(DEFAULT_BODY, event_context(event("resolved"), "ops"))
    assert resolved.startswith("dock-occupied is resolved on dock: Two people")
    assert "Resolved at 2024-05-01 12:02:00 UTC." in resolved


def test_summary_context_and_defaults() -> None:
    events = [event(), event("resolved"), event(rule="yard", severity="info")]
    ctx = summary_context(events, "ops")
    assert (ctx["status"], ctx["count"], ctx["rule"], ctx["stream"]) == ("summary", 3, None,
                                                                         "dock")
    assert ctx["rules"] == ["dock-occupied", "yard"] and ctx["severity"] == "critical"
    assert (ctx["first_at"], ctx["last_at"]) == ("2024-05-01T12:00:00.000Z",
                                                 "2024-05-01T12:02:00.000Z")
    assert _render(SUMMARY_TITLE, ctx) == (
        "[CRITICAL] 3 alert events held back by the rate limit")
    body = _render(DEFAULT_BODY, ctx)
    assert body.splitlines()[0] == "3 alert events held back by the rate limit:"
    assert "- [INFO] yard on dock: firing at 2024-05-01 12:00:00 UTC" in body
    html = _render(DEFAULT_HTML, {**ctx, "title": "t"}, "html")
    assert "<li>[INFO] <b>yard</b> on dock: firing" in html


def test_html_is_autoescaped_and_text_is_not() -> None:
    ctx = event_context(event(answer={"description": "<script>x()</script> & co"}), "ops")
    html = _render(DEFAULT_HTML, {**ctx, "title": "<t>", "snapshot_cid": "a@b"}, "html")
    assert "&lt;script&gt;x()&lt;/script&gt; &amp; co" in html and "<script>" not in html
    assert "&lt;t&gt;" in html and '<img src="cid:a@b"' in html
    assert "<script>x()</script> & co" in _render("{{ description }}", ctx)


def test_slack_flavor_escapes_values_not_the_template() -> None:
    ctx = event_context(event(answer={"description": "<!channel> & <http://evil|click>"}),
                        "ops")
    out = _render("<!here> {{ description }}", ctx, "slack")
    assert out == "<!here> &lt;!channel&gt; &amp; &lt;http://evil|click&gt;"


def test_helpers_and_filters_work() -> None:
    ctx = event_context(event(), "ops")
    text = ("{{ answer.get('people') }} {{ answer.missing | default('-') }} "
            "{{ labels.site | upper }} {{ answer | tojson }} {{ urls | join(',') }}"
            "{% if answer.nope is defined %}!{% endif %}")
    assert _render(text, ctx) == (
        '2 - NORTH {"description": "Two people at the dock door", "people": 2, '
        '"person_present": true} ovs://streams/s-1?frame_index=41')


@pytest.mark.parametrize("text", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ answer.__class__.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ answer.update({'people': 0}) }}",
    "{{ labels.clear() }}",
    "{{ urls.append('x') }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{{ 'x' * 1000000000 }}",
    "{{ [0] * 1000000000 }}",
    "{{ 9 ** (9 ** 9) }}",
])
def test_sandbox_refuses_unsafe_templates(text: str) -> None:
    ctx = event_context(event(), "ops")
    with pytest.raises(DeliveryError) as info:
        _render(text, ctx)
    assert info.value.permanent
    assert str(info.value).startswith("action 'ops': cannot render its body template: ")
    assert ctx["answer"]["people"] == 2 and ctx["labels"] == {"site": "north"}


@pytest.mark.parametrize(("text", "reason"), [
    ("{{ nope }}", "'nope' is undefined"),
    ("{{ answer.nope }}", "has no attribute 'nope'"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ("{{ rule + 1 }}", "TypeError"),
])
def test_render_errors_are_permanent_delivery_errors(text: str, reason: str) -> None:
    with pytest.raises(DeliveryError, match=reason) as info:
        _render(text, event_context(event(), "ops"))
    assert info.value.permanent and info.value.retry_after is None


@pytest.mark.parametrize(("text", "line"), [
    ("{{ rule ", 1), ("ok\n{% if %}", 2), ("{% for x in y %}\n{{ x }}\n{% endif %}", 3),
    ("{{ a | nofilter }}", 1)])
def test_compile_template_reports_syntax_errors(text: str, line: int) -> None:
    with pytest.raises(ValueError, match=rf"^template syntax error on line {line} of the "
                                         "template: "):
        compile_template(text)
