"""Fuzzing model answers: whatever a model says, the engine never crashes and counts it."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.livestream import KeptStream, live_server
from support.models import ScriptedModel

from watcher.clock import ManualClock
from watcher.engine.rules import RuleConfig
from watcher.engine.runner import RuleRunner
from watcher.engine.store import AlertStore

RULE = {"name": "fuzz", "stream": "cam", "every": "5s", "prompt": "?", "model": "m",
        "schema": {"people": "integer", "person": "boolean", "note?": "string",
                   "kind": "person|vehicle|none"},
        "when": "person and people > 0 and kind != 'none'"}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=10)
ANSWERS = st.one_of(
    st.text(max_size=80),
    JSON.map(json.dumps),
    st.fixed_dictionaries(
        {"people": st.one_of(st.integers(-5, 10**12), st.floats(), st.none(), st.text(max_size=3)),
         "person": st.one_of(st.booleans(), st.none(), st.integers(0, 1)),
         "note": st.one_of(st.none(), st.text(max_size=10)),
         "kind": st.sampled_from(["person", "vehicle", "none", "cat", ""])},
        optional={"extra": JSON}).map(json.dumps),
    st.text(max_size=40).map(lambda t: f"```json\n{t}\n```"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=ANSWERS, second=ANSWERS)
def test_any_answer_is_counted_never_a_crash(first: str, second: str) -> None:
    async def run() -> None:
        model = ScriptedModel("m", first, second)
        site = live_server(model)
        with tempfile.TemporaryDirectory() as tmp:
            store = AlertStore(Path(tmp) / "state.sqlite3")
            async with site.http:
                runner = RuleRunner(
                    RuleConfig.model_validate(RULE), default_model="m", client=site.client,
                    streams={"cam": KeptStream(site.stream_id)}, store=store,
                    clock=ManualClock())
                result = await runner.evaluate()
            await store.close()
        stats = runner.stats
        assert result.outcome in {"answered", "invalid", "condition_error"}
        assert stats.evaluations == stats.model_calls == 1
        assert stats.invalid_answers + stats.condition_errors <= 1
        if result.outcome == "answered":
            assert isinstance(result.matched, bool)
        else:
            assert result.matched is None and runner.state.status == "inactive"

    asyncio.run(run())
