"""Rules in the config: `watcher check` errors at file:line, packs, schemas, conditions."""

from __future__ import annotations

import math
import string
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, TypeAdapter, ValidationError

from watcher.actions.config import ActionConfig
from watcher.cli import main
from watcher.config import WatcherConfig, load_config, parse_config
from watcher.engine.condition import (
    HELPERS,
    Condition,
    ConditionError,
    default_condition,
)
from watcher.engine.includes import IncludeConfig
from watcher.engine.rulechecks import cron_trigger
from watcher.engine.rules import ConfirmConfig, RuleConfig, RulePack, StateConfig
from watcher.engine.schema import SchemaError, expand_schema, schema_fields
from watcher.errors import ConfigError

HEAD = (
    "streams:\n"                                              # 1
    "  - {name: lobby, source: testsrc}\n"                    # 2
    "  - {name: dock, source: testsrc}\n"                     # 3
    "actions:\n"                                              # 4
    "  ops: {type: slack, webhook_url: 'https://hooks.example/T0/SECRET'}\n"  # 5
)
"""Five lines every test config starts with: two streams and one action."""

VLM = (
    "overshoot:\n"
    "  model: vlm\n"
    "  embedded:\n"
    "    upstreams: [{base_url: 'http://127.0.0.1:9/v1',\n"
    "                 models: {vlm: qwen, vlm-small: qwen:3b, vlm-large: qwen:72b}}]\n"
)
"""A vision-language model for yes/no rules (local/vision, the default, cannot answer them);
appended after the tested text, so that the lines it reports keep their numbers."""

RULE = (
    "  - name: dock-occupied\n"
    "    stream: dock\n"
    "    every: 5s\n"
    "    prompt: Is anyone at the loading dock?\n"
)


def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          text: str, packs: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Write the config (and packs, by relative path) and run `watcher check` from tmp_path."""
    for rel, pack in (packs or {}).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(pack)
    if "overshoot:" not in text:
        text = text.rstrip("\n") + "\n" + VLM
    (tmp_path / "watcher.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code = main(["check", "-c", "watcher.yaml"])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- `watcher check` rejects, naming file:line and field -----------------------------------

PACK_TWO = (
    "rules:\n"                                                # 1
    "  - name: after-hours\n"                                 # 2
    "    every: 30s\n"                                        # 3
    "    prompt: Is anyone in here?\n"                        # 4
    "    schema: {person: boolean}\n"                         # 5
    "  - name: crowd\n"                                       # 6
    "    every: 1m\n"                                         # 7
    "    prompt: How many people?\n"                          # 8
    "    schema:\n"                                           # 9
    "      people: integer\n"                                 # 10
    "    when: peeple > 10\n"                                 # 11
)

REJECTED: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "typo in when": (
        "rules:\n" + RULE + "    schema: {people: integer, 'note?': string}\n"
        "    when: peple > 0\n",
        {}, ["watcher.yaml:12: rules[0].when: unknown name 'peple' (did you mean people?)"]),
    "when names a field the schema lacks": (
        "rules:\n" + RULE + "    schema:\n      people: integer\n      person_present: boolean\n"
        "    when: vehicles > 0\n",
        {}, ["watcher.yaml:14: rules[0].when: unknown name 'vehicles' "
             "(the answer's fields are: people, person_present)"]),
    "syntax error in when": (
        "rules:\n" + RULE + "    schema: {people: integer}\n"
        "    when: people >= 2 && people < 5\n",
        {}, ["watcher.yaml:12: rules[0].when: invalid syntax at column 14 "
             "(write `and` / `or` instead of && / ||)"]),
    "single = in when": (
        "rules:\n" + RULE + "    schema: {people: integer}\n    when: people = 3\n",
        {}, ["watcher.yaml:12: rules[0].when: invalid syntax at column 8 (compare with ==)"]),
    "when orders a number against a string": (
        "rules:\n" + RULE + "    schema: {motion: number, description: string}\n"
        "    when: motion > \"x\"\n",
        {}, ["watcher.yaml:12: rules[0].when: `motion > 'x'` orders a number against a "
             "string: it fails on every answer (compare with a number, without quotes)"]),
    "when compares a boolean with a word": (
        "rules:\n" + RULE + "    schema: {open: boolean}\n    when: open == \"yes\"\n",
        {}, ["watcher.yaml:12: rules[0].when: `open == 'yes'` compares a boolean with a "
             "string: it is never true"]),
    "when orders a list against a number": (
        "rules:\n" + RULE + "    schema: {tags: 'string[]', note: string}\n"
        "    when: note != \"\" and tags >= 2\n",
        {}, ["watcher.yaml:12: rules[0].when: `tags >= 2` orders a list against a number: "
             "it fails on every answer (count the items with len(tags))"]),
    "forbidden construct in when": (
        "rules:\n" + RULE + "    schema: {box: {type: object, properties: {x: {type: number}}}}\n"
        "    when: box.x > 3\n",
        {}, ["watcher.yaml:12: rules[0].when: attribute access (x.y) is not allowed; "
             "index instead: x[\"y\"]"]),
    "when missing with two booleans": (
        "rules:\n" + RULE + "    schema: {a: boolean, b: boolean}\n",
        {}, ["watcher.yaml:7: rules[0].when: required unless the schema has exactly one "
             "boolean field (it has 2: a, b)"]),
    "unknown action": (
        "rules:\n" + RULE + "    actions: [opps, pager]\n",
        {}, ["watcher.yaml:11: rules[0].actions[0]: unknown action 'opps' (did you mean ops?)",
             "watcher.yaml:11: rules[0].actions[1]: unknown action 'pager' "
             "(expected one of: ops)"]),
    "unknown stream": (
        "rules:\n" + RULE.replace("stream: dock", "stream: dokc"),
        {}, ["watcher.yaml:8: rules[0].stream: unknown stream 'dokc' (did you mean dock?)"]),
    "unknown stream among streams": (
        "rules:\n" + RULE.replace("stream: dock", "streams: [dock, lobbby]"),
        {}, ["watcher.yaml:8: rules[0].streams[1]: unknown stream 'lobbby' "
             "(did you mean lobby?)"]),
    "both stream and streams": (
        "rules:\n" + RULE.replace("stream: dock", "stream: dock\n    streams: [lobby]"),
        {}, ["watcher.yaml:9: rules[0].streams: give `stream` (one) or `streams` (several), "
             "not both"]),
    "neither stream nor streams": (
        "rules:\n" + RULE.replace("    stream: dock\n", ""),
        {}, ["watcher.yaml:7: rules[0]: needs `stream: NAME`, or `streams: [A, B]`"]),
    "both every and cron": (
        "rules:\n" + RULE + "    cron: '*/5 * * * *'\n",
        {}, ["watcher.yaml:11: rules[0].cron: give `every` or `cron`, not both"]),
    "neither every nor cron": (
        "rules:\n" + RULE.replace("    every: 5s\n", ""),
        {}, ["watcher.yaml:7: rules[0]: needs a schedule: `every: 30s`, "
             "or `cron: '*/5 * * * *'`"]),
    "bad cron": (
        "rules:\n" + RULE.replace("every: 5s", "cron: '*/5 * * *'"),
        {}, ["watcher.yaml:9: rules[0].cron: bad cron expression: Wrong number of fields; "
             "got 4, expected 5"]),
    "cron value out of range": (
        "rules:\n" + RULE.replace("every: 5s", "cron: '61 * * * *'"),
        {}, ["watcher.yaml:9: rules[0].cron: bad cron expression: Error validating "
             "expression '61'"]),
    "cron with numeric weekdays": (
        "rules:\n" + RULE.replace("every: 5s", "cron: '0 9 * * 1-5'"),
        {}, ["watcher.yaml:9: rules[0].cron: name the weekdays in the day-of-week field"]),
    "bad duration in for": (
        "rules:\n" + RULE + "    for: 30 secs\n",
        {}, ["watcher.yaml:11: rules[0].for: bad duration '30 secs': use e.g. 500ms, 5s"]),
    "fractional count in for": (
        "rules:\n" + RULE + "    for: 2.5\n",
        {}, ["watcher.yaml:11: rules[0].for: should be a count of answers in a row (3) "
             "or a duration with a unit (30s)"]),
    "zero count in for": (
        "rules:\n" + RULE + "    for: 0\n",
        {}, ["watcher.yaml:11: rules[0].for: should be a count from 1 to 10000"]),
    "bad duration in every": (
        "rules:\n" + RULE.replace("every: 5s", "every: 0s"),
        {}, ["watcher.yaml:9: rules[0].every: Input should be greater than 0"]),
    "on_alert names an unknown rule": (
        "rules:\n" + RULE + "  - {name: yard, stream: dock, prompt: q, on_alert: "
        "[dock-ocupied]}\n",
        {}, ["watcher.yaml:11: rules[1].on_alert[0]: unknown rule 'dock-ocupied' (did you "
             "mean dock-occupied?)"]),
    "on_alert names the rule itself": (
        "rules:\n" + RULE + "  - {name: yard, stream: dock, prompt: q, on_alert: [yard]}\n",
        {}, ["watcher.yaml:11: rules[1]: on_alert names the rule itself"]),
    "on_change with a bad threshold, and no schedule without a trigger": (
        "rules:\n" + RULE + "    on_change: true\n    change_threshold: 2\n"
        "  - {name: yard, stream: dock, prompt: q}\n",
        {}, ["watcher.yaml:12: rules[0].change_threshold: Input should be less than or equal "
             "to 1",
             "watcher.yaml:13: rules[1]: needs a schedule: `every: 30s`, or `cron: "
             "'*/5 * * * *'` (or `on_change: true`, with a 1m heartbeat)"]),
    "on_change on a stream the API server pulls": (
        "overshoot: {}\nstreams:\n  - {name: cam, source: 'rtsp://10.0.0.5/s', pull: true}\n"
        "rules:\n  - {name: r, stream: cam, prompt: q, on_change: true}\n",
        {}, ["watcher.yaml:5: rules[0].on_change: stream 'cam' is pulled by the API server"]),
    "on_alert prompt that is not a template": (
        "rules:\n  - {name: yard, stream: dock, on_alert: [dock-occupied], "
        "prompt: 'Saw {{ trigger.answer '}\n" + RULE,
        {}, ["watcher.yaml:7: rules[0]: prompt: template syntax error on line 1"]),
    "max_fps without window": (
        "rules:\n" + RULE + "    max_fps: 4\n",
        {}, ["watcher.yaml:11: rules[0].max_fps: only applies with `window`"]),
    "window longer than retention": (
        "overshoot:\n  embedded: {retention_seconds: 5m}\n"
        + HEAD + "rules:\n" + RULE + "    window: 10m\n",
        {}, ["watcher.yaml:13: rules[0].window: 10m is longer than the embedded server keeps "
             "frames (overshoot.embedded.retention_seconds: 5m)"]),
    "max_fps above what the embedded server stores": (
        "rules:\n" + RULE + "    window: 10s\n    max_fps: 8\n",
        {}, ["watcher.yaml:12: rules[0].max_fps: 8 is more frames per second than the "
             "embedded server keeps (overshoot.embedded.max_stored_fps: 5); lower it, or "
             "raise max_stored_fps"]),
    "bad schema type": (
        "rules:\n" + RULE + "    schema:\n      people: integr\n",
        {}, ["watcher.yaml:11: rules[0].schema: field 'people': unknown type 'integr' "
             "(did you mean integer?)"]),
    "bad full schema": (
        "rules:\n" + RULE + "    schema: {type: object, properties: {a: {type: integr}}}\n",
        {}, ["watcher.yaml:11: rules[0].schema: not a valid JSON Schema at properties/a/type"]),
    "not a slug": (
        "rules:\n" + RULE.replace("dock-occupied", "Dock Occupied"),
        {}, ["watcher.yaml:7: rules[0].name: must be a slug"]),
    "unknown rule key": (
        "rules:\n" + RULE + "    severty: critical\n",
        {}, ["watcher.yaml:11: rules[0].severty: unknown key (did you mean severity?)"]),
    "bad severity": (
        "rules:\n" + RULE + "    severity: urgent\n",
        {}, ["watcher.yaml:11: rules[0].severity: Input should be 'info', 'warning' or "
             "'critical'"]),
    "blank prompt": (
        "rules:\n" + RULE.replace("Is anyone at the loading dock?", "' '"),
        {}, ["watcher.yaml:10: rules[0].prompt: is empty: ask a question"]),
    "confirm when checked against its own schema": (
        "rules:\n" + RULE + "    schema: {people: integer}\n    when: people > 0\n"
        "    confirm:\n      prompt: Really a person?\n      schema: {sure: boolean}\n"
        "      when: people > 0\n",
        {}, ["watcher.yaml:16: rules[0].confirm.when: unknown name 'people' "
             "(the answer's fields are: sure)"]),
    "duplicate rule name in the main file": (
        "rules:\n" + RULE + RULE.replace("stream: dock", "stream: lobby"),
        {}, ["watcher.yaml:11: rules[1].name: duplicate rule name 'dock-occupied' "
             "(also watcher.yaml:7)"]),
    "duplicate rule name across a pack": (
        "include: [rules/*.yaml]\n" + "rules:\n" + RULE.replace("dock-occupied", "crowd"),
        {"rules/crowd.yaml": PACK_TWO.replace("peeple", "people").replace(
            "every: 30s", "every: 30s\n    stream: lobby").replace(
            "every: 1m", "every: 1m\n    stream: dock")},
        ["rules/crowd.yaml:7: rules[1].name: duplicate rule name 'crowd' "
         "(also watcher.yaml:8)"]),
    "error inside a pack": (
        "include:\n  - {path: rules/two.yaml, stream: lobby}\n",
        {"rules/two.yaml": PACK_TWO},
        ["rules/two.yaml:11: rules[1].when: unknown name 'peeple' (did you mean people?)"]),
    "pack rule without a stream": (
        "include: [rules/two.yaml]\n",
        {"rules/two.yaml": PACK_TWO.replace("peeple", "people")},
        ["rules/two.yaml:2: rules[0]: needs `stream: NAME`, or `streams: [A, B]` for a "
         "cross-camera question (or bind the pack's rules to streams in the `include:` entry",
         "rules/two.yaml:6: rules[1]: needs `stream: NAME`"]),
    "pack's own unknown stream": (
        "include: [rules/one.yaml]\n",
        {"rules/one.yaml": "rules:\n  - name: a\n    stream: garage\n    every: 5s\n"
                           "    prompt: q\n"},
        ["rules/one.yaml:3: rules[0].stream: unknown stream 'garage' "
         "(expected one of: lobby, dock)"]),
    "include binds an unknown stream and action": (
        "include:\n  - path: rules/two.yaml\n    stream: lobbby\n    actions: [opz]\n",
        {"rules/two.yaml": PACK_TWO.replace("peeple", "people")},
        ["watcher.yaml:8: include[0].stream: unknown stream 'lobbby' (did you mean lobby?)",
         "watcher.yaml:9: include[0].actions[0]: unknown action 'opz' (did you mean ops?)"]),
    "include glob matching nothing": (
        "include: [rules/*.yaml]\n",
        {"rules/readme.txt": "not a pack\n"},
        ["watcher.yaml:6: include[0].path: matches no .yaml or .yml file: "]),
    "include of a missing file": (
        "include:\n  - rules/nope.yaml\n",
        {}, ["watcher.yaml:7: include[0].path: file not found: "]),
    "YAML error inside a pack": (
        "include: [rules/bad.yaml]\n",
        {"rules/bad.yaml": "rules:\n  - name: x\n   bad: [\n"},
        ["rules/bad.yaml:3: YAML syntax error"]),
    "pack with another section": (
        "include: [rules/bad.yaml]\n",
        {"rules/bad.yaml": "rules: []\nstreams: []\n"},
        ["rules/bad.yaml:2: streams: unknown section (expected one of: rules)"]),
    "unknown action type": (
        "overshoot: {}\nactions:\n  pager: {type: pagerduty}\n",
        {}, ["watcher.yaml:3: actions.pager.type: Input should be 'webhook', 'slack', "
             "'email' or 'mqtt'"]),
}


@pytest.mark.parametrize("text, packs, expected", REJECTED.values(), ids=list(REJECTED))
def test_check_rejects_with_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    text: str, packs: dict[str, str], expected: list[str],
) -> None:
    if not text.startswith("overshoot"):
        text = HEAD + text
    code, out, err = check(tmp_path, monkeypatch, capsys, text, packs)
    assert (code, out) == (2, ""), err
    lines = err.splitlines()
    for want in expected:
        assert any(line.startswith(want) for line in lines), f"{want!r} not in:\n{err}"
    assert len(lines) == len(expected) + 1, err
    assert lines[-1].startswith("watcher.yaml: ")
    assert "Traceback" not in err and "SECRET" not in err


def test_problems_across_files_come_main_file_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = check(tmp_path, monkeypatch, capsys, HEAD + (
        "include:\n"                                          # 6
        "  - rules/one.yaml\n"                                # 7
        "  - {path: rules/two.yaml, stream: lobby}\n"         # 8
        "rules:\n"                                            # 9
        "  - name: a\n"                                       # 10
        "    stream: nowhere\n"                               # 11
        "    every: 5s\n"
        "    prompt: q\n"),
        {"rules/one.yaml": "rules:\n  - name: a\n    stream: dock\n    every: 5s\n"
                           "    prompt: q\n    actions: [nope]\n",
         "rules/two.yaml": PACK_TWO})
    assert code == 2
    assert err.splitlines() == [
        "watcher.yaml:11: rules[0].stream: unknown stream 'nowhere' (expected one of: "
        "lobby, dock)",
        "rules/one.yaml:2: rules[0].name: duplicate rule name 'a' (also watcher.yaml:10)",
        "rules/one.yaml:6: rules[0].actions[0]: unknown action 'nope' (expected one of: ops)",
        "rules/two.yaml:11: rules[1].when: unknown name 'peeple' (did you mean people?)",
        "watcher.yaml: 4 problems",
    ]


# --- `watcher check` accepts ---------------------------------------------------------------

FULL_RULE = HEAD + """\
rules:
  - name: dock-occupied
    description: Someone is on the loading dock after hours.
    stream: dock
    every: 5s
    jitter: 500ms
    window: 10s
    max_fps: 2
    model: vlm
    fallback_models: [vlm-small]
    prompt: Is anyone at the loading dock?
    schema:
      people: integer
      person_present: boolean
      activity: walking|running|none
      note?: string
      tags: string[]
    when: person_present and people > 0 and activity != "none"
    for: 3
    cooldown: 5m
    keep_firing_for: 30s
    repeat_every: 1h
    severity: critical
    labels: {site: north, floor: 2, outdoor: true}
    actions: [ops]
    skip_unchanged: true
    max_tokens: 200
    timeout: 20s
    confirm:
      model: vlm-large
      prompt: Is it really a person, not a shadow?
      window: 4s
      max_fps: 1
      schema: {person: boolean, confidence: number}
      when: person and confidence > 0.5
  - name: same-person
    streams: [lobby, dock]
    cron: "*/10 * * * mon-fri"
    prompt: Is the same person visible on both cameras?
    for: 30s
  - name: full-schema
    stream: lobby
    every: 1m
    enabled: false
    prompt: Describe the lobby.
    schema:
      type: object
      properties:
        count: {type: integer, minimum: 0}
        mood: {type: string, enum: [calm, busy]}
      required: [count]
    when: count > 3 or mood == "busy"
"""


def test_check_accepts_every_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = check(tmp_path, monkeypatch, capsys, FULL_RULE)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == ("watcher.yaml: OK (2 streams, 3 rules (1 disabled), 1 action, "
                                   "embedded server)")
    config = load_config(tmp_path / "watcher.yaml")
    dock, both, full = config.rules

    assert dock.stream_names == ["dock"] and dock.trigger == "every 5s (jitter 500ms)"
    assert (dock.for_count, dock.for_seconds, dock.for_ms) == (3, None, None)
    assert (dock.window, dock.window_ms, dock.max_fps) == (10.0, 10_000, 2.0)
    assert (dock.cooldown, dock.keep_firing_for, dock.repeat_every, dock.timeout) == (
        300.0, 30.0, 3600.0, 20.0)
    assert dock.labels == {"site": "north", "floor": "2", "outdoor": "true"}
    assert dock.models("default/model") == ["vlm", "vlm-small"]
    assert dock.fields == {"people": "integer", "person_present": "boolean",
                           "activity": "string", "note": "string", "tags": "array"}
    assert dock.schema["required"] == ["people", "person_present", "activity", "note", "tags"]
    assert dock.schema["properties"]["note"] == {"type": ["string", "null"]}
    assert dock.condition.names() == {"people", "person_present", "activity"}
    assert dock.condition.evaluate({"people": 2, "person_present": True, "activity": "walking"})
    assert dock.confirm is not None and dock.confirm.condition.evaluate(
        {"person": True, "confidence": 0.9})
    assert dock.confirm.window_ms == 4000 and dock.confirm.schema["additionalProperties"] is False

    assert both.stream_names == ["lobby", "dock"] and both.trigger == "cron '*/10 * * * mon-fri'"
    assert (both.for_count, both.for_seconds, both.for_ms) == (None, 30.0, 30_000)
    assert both.when == "answer" and both.schema["properties"] == {"answer": {"type": "boolean"}}
    assert both.cron_trigger(timezone="UTC") is not None and dock.cron_trigger() is None
    assert (both.severity, both.window_ms, both.model, both.max_tokens) == (
        "warning", None, None, 300)
    assert both.models("default/model") == ["default/model"]

    assert not full.enabled
    assert full.schema["properties"]["mood"] == {"type": ["string", "null"],
                                                 "enum": ["calm", "busy", None]}
    assert full.condition.evaluate({"count": 1, "mood": "busy"})
    assert not full.condition.evaluate({"count": 1, "mood": None})

    assert config.state.path == str(tmp_path / "watcher-state.sqlite3")
    assert config.actions["ops"].type == "slack"
    assert "SECRET" not in repr(config)


def test_check_accepts_bound_packs_and_globs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = check(tmp_path, monkeypatch, capsys, HEAD + (
        "include:\n"
        "  - rules/own/*\n"
        "  - path: rules/two.yaml\n"
        "    stream: lobby\n"
        "    actions: [ops]\n"
        "  - {path: rules/two.yaml, streams: [lobby, dock], name_prefix: both-}\n"
        "state:\n"
        "  path: data/state.db\n"),
        {"rules/two.yaml": "x-every: &every {every: 30s}\n" + PACK_TWO.replace(
            "peeple", "people").replace("    every: 30s\n", "    <<: *every\n"),
         "rules/own/fire.yml": "rules:\n  - {name: fire, stream: dock, every: 1m, "
                               "prompt: 'Fire or smoke?', actions: [ops]}\n",
         "rules/own/notes.txt": "ignored: not a .yaml file\n"})
    assert (code, err) == (0, ""), err
    assert out.splitlines()[0] == "watcher.yaml: OK (2 streams, 5 rules, 1 action, embedded server)"
    config = load_config(tmp_path / "watcher.yaml")
    assert [(r.name, r.stream_names, r.actions) for r in config.rules] == [
        ("fire", ["dock"], ["ops"]),
        ("after-hours", ["lobby"], ["ops"]),
        ("crowd", ["lobby"], ["ops"]),
        ("both-after-hours", ["lobby", "dock"], []),
        ("both-crowd", ["lobby", "dock"], []),
    ]
    origin = config.rules[2].origin
    assert origin is not None
    assert (origin.file, origin.line, origin.loc, origin.include) == (
        str(tmp_path / "rules" / "two.yaml"), 7, ("rules", 1), 1)
    assert origin.bound == {"stream", "actions"}
    assert config.state.path == str(tmp_path / "data" / "state.db")


def test_pack_binding_overrides_the_packs_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    pack = "rules:\n  - {name: a, streams: [garage, yard], every: 5s, prompt: q}\n"
    code, _, err = check(tmp_path, monkeypatch, capsys, HEAD + (
        "include:\n  - {path: rules/a.yaml, stream: dock}\n"), {"rules/a.yaml": pack})
    assert (code, err) == (0, "")
    assert load_config(tmp_path / "watcher.yaml").rules[0].stream_names == ["dock"]


def test_packs_resolve_against_the_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              ) -> None:
    conf = tmp_path / "conf"
    (conf / "rules").mkdir(parents=True)
    (conf / "rules" / "p.yaml").write_text("rules:\n  - name: p\n    every: 5s\n    prompt: q\n"
                                           "    when: nope\n")
    (conf / "watcher.yaml").write_text(
        HEAD + "include:\n  - {path: rules/p.yaml, stream: dock}\n" + VLM)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ConfigError) as caught:
        load_config("../conf/watcher.yaml")
    assert caught.value.problems == [
        f"{Path('../conf/rules/p.yaml')}:5: rules[0].when: unknown name 'nope' "
        "(the answer's fields are: answer)"]
    (conf / "rules" / "p.yaml").write_text("rules:\n  - {name: p, every: 5s, prompt: q}\n")
    config = load_config("../conf/watcher.yaml")
    assert config.rules[0].origin is not None
    assert config.rules[0].origin.file == str(Path("../conf/rules/p.yaml"))
    assert config.state.path == str(conf / "watcher-state.sqlite3")


def test_include_forms() -> None:
    assert IncludeConfig.model_validate({"path": "rules/a.yaml"}).bindings() == {}
    entry = IncludeConfig(path="p", streams=["a", "b"], actions=[], name_prefix="x-")
    assert entry.bindings() == {"streams": ["a", "b"], "actions": []}
    assert entry.bind({"name": "r", "stream": "c", "actions": ["z"]}) == {
        "name": "x-r", "streams": ["a", "b"], "actions": []}
    assert entry.bind("not a mapping") == "not a mapping"
    with pytest.raises(ConfigError, match=r"include\[0\]\.path: file not found"):
        parse_config(HEAD + "include: rules/none.yaml\n", name="w.yaml", environ={})


def test_models_built_in_code_check_references() -> None:
    streams = [{"name": "a", "source": "testsrc"}]
    rule = {"name": "r", "stream": "a", "every": "5s", "prompt": "q"}
    config = WatcherConfig(streams=streams, rules=[rule])
    assert config.summary() == "1 stream, 1 rule, embedded server"
    assert config.rules[0].origin is None
    with pytest.raises(ValidationError, match=r"rules\[1\]\.name: duplicate rule name 'r' "
                                              r"\(also rules\[0\]\)"):
        WatcherConfig(streams=streams, rules=[rule, rule])
    with pytest.raises(ValidationError, match=r"rules\[0\]\.actions\[0\]: unknown action 'x' "
                                              r"\(no actions are configured"):
        WatcherConfig(streams=streams, rules=[{**rule, "actions": ["x"]}])


def test_importing_the_rules_module_first_works() -> None:
    code = (
        "import watcher.engine.rules\n"
        "from watcher.config import WatcherConfig\n"
        "c = WatcherConfig(streams=[{'name': 'a', 'source': 'testsrc'}],\n"
        "                  rules=[{'name': 'r', 'stream': 'a', 'every': 5, 'prompt': 'q'}])\n"
        "print(c.summary())\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "1 stream, 1 rule, embedded server"), \
        done.stderr


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen:
        return seen
    seen.add(model)
    for info in model.model_fields.values():
        for candidate in (info.annotation, *getattr(info.annotation, "__args__", ())):
            for inner in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    _models(inner, seen)
    return seen


def test_every_rule_option_is_described_and_typos_fail() -> None:
    models = {m for m in _models(WatcherConfig, set())
              if m.__module__ in ("watcher.engine.rules", "watcher.engine.includes",
                                  "watcher.store.config")}
    assert {m.__name__ for m in models} == {
        "RuleConfig", "ConfirmConfig", "IncludeConfig", "StateConfig"}
    for model in (*models, RulePack):
        assert model.model_config.get("extra") == "forbid", model
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
    assert RuleConfig.model_fields["for_"].alias == "for"
    assert RuleConfig.model_fields["schema_"].alias == "schema"


def test_rule_models_directly() -> None:
    rule = RuleConfig.model_validate({"name": "r", "stream": "a", "every": "2m", "for": "1m30s",
                                      "prompt": "q", "schema": {"n": "int"}, "when": "n > 1"})
    assert (rule.every, rule.for_, rule.for_ms) == (120.0, timedelta(seconds=90), 90_000)
    assert RuleConfig(name="r", stream="a", every=5, prompt="q", for_=2).for_count == 2
    assert RuleConfig.model_validate(
        {"name": "r", "stream": "a", "every": 5, "prompt": "q", "for": "4"}).for_count == 4
    for bad in (True, "0s", [], -1):
        with pytest.raises(ValidationError):
            RuleConfig.model_validate({"name": "r", "stream": "a", "every": 5, "prompt": "q",
                                       "for": bad})
    with pytest.raises(ValidationError, match="names a stream twice"):
        RuleConfig(name="r", streams=["a", "a"], every=5, prompt="q")
    confirm = ConfirmConfig(prompt="sure?")
    assert confirm.when == "answer" and confirm.model is None
    assert StateConfig(path=":memory:").path == ":memory:"
    action = TypeAdapter(ActionConfig).validate_python(
        {"type": "webhook", "url": "https://h/secret-hook"})
    assert "https://h/secret-hook" in action.secrets() and "secret-hook" not in repr(action)


def test_cron_trigger_weekdays_by_name() -> None:
    trigger = cron_trigger("0 9 * * mon-fri", timezone="UTC")
    from datetime import UTC, datetime
    first = trigger.get_next_fire_time(None, datetime(2024, 1, 6, tzinfo=UTC))  # a Saturday
    assert first is not None and first.strftime("%a %H:%M") == "Mon 09:00"
    with pytest.raises(ValueError, match="name the weekdays"):
        cron_trigger("0 9 * * 1-5")


# --- schema expansion ----------------------------------------------------------------------

def test_shorthand_expands_to_a_strict_schema() -> None:
    schema = expand_schema({
        "people": "integer", "present": "bool", "speed": "float", "label": "str",
        "activity": "walking|running|none", "tags": "string[]", "counts": "list[int]",
        "grid": "integer[][]", "kinds": "list[car|truck]", "choice": ["a", "b"],
        "note?": "string", "extra": "number?", "box": {"type": "integer", "minimum": 0},
    })
    Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == list(props)
    assert props["people"] == {"type": "integer"} and props["present"] == {"type": "boolean"}
    assert props["speed"] == {"type": "number"} and props["label"] == {"type": "string"}
    assert props["activity"] == {"type": "string", "enum": ["walking", "running", "none"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["counts"] == {"type": "array", "items": {"type": "integer"}}
    assert props["grid"]["items"] == {"type": "array", "items": {"type": "integer"}}
    assert props["kinds"]["items"] == {"type": "string", "enum": ["car", "truck"]}
    assert props["choice"] == {"type": "string", "enum": ["a", "b"]}
    assert props["note"] == {"type": ["string", "null"]}
    assert props["extra"] == {"type": ["number", "null"]}
    assert props["box"] == {"type": "integer", "minimum": 0}
    validator = Draft202012Validator(schema)
    answer = {"people": 1, "present": True, "speed": 1.5, "label": "x", "activity": "none",
              "tags": [], "counts": [1], "grid": [[1]], "kinds": ["car"], "choice": "a",
              "note": None, "extra": None, "box": 3}
    assert not list(validator.iter_errors(answer))
    assert list(validator.iter_errors({**answer, "more": 1}))
    assert list(validator.iter_errors({k: v for k, v in answer.items() if k != "note"}))
    assert schema_fields(schema)["note"] == "string"
    assert schema_fields(schema)["choice"] == "string"


def test_full_schema_is_made_strict_at_every_level() -> None:
    given_schema = {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "where": {"type": "object", "properties": {"x": {"type": "number"},
                                                       "y": {"type": "number"}},
                      "required": ["x"]},
            "kind": {"enum": ["a", "b"]},
            "items": {"type": "array", "items": {"type": "object",
                                                 "properties": {"n": {"type": "string"}}}},
        },
        "required": ["count", "where"],
    }
    schema = expand_schema(given_schema)
    assert given_schema["properties"]["kind"] == {"enum": ["a", "b"]}  # not modified
    props = schema["properties"]
    assert schema["required"] == ["count", "where", "kind", "items"]
    assert props["where"]["additionalProperties"] is False
    assert props["where"]["required"] == ["x", "y"]
    assert props["where"]["properties"]["y"] == {"type": ["number", "null"]}
    assert props["kind"] == {"anyOf": [{"enum": ["a", "b"]}, {"type": "null"}]}
    assert props["items"]["type"] == ["array", "null"]
    assert props["items"]["items"]["required"] == ["n"]
    assert schema_fields(schema) == {"count": "integer", "where": "object", "kind": "string",
                                     "items": "array"}
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("value, message", [
    (None, "should be a mapping"),
    ({}, "should be a mapping"),
    ({"a": "strng"}, "field 'a': unknown type 'strng' (did you mean string?)"),
    ({"a": None}, "field 'a': give a type"),
    ({"a": "integer|string"}, "reads as a union of types"),
    ({"a": "x||y"}, "an enum is non-empty words"),
    ({"a": "x|y|x"}, "the enum repeats a value"),
    ({"a b": "int"}, "field name 'a b' should be an identifier"),
    ({"class": "int"}, "field name 'class' should be an identifier"),
    ({"a": "int", "a?": "int"}, "field 'a' is given twice"),
    ({"a": {"minimum": 0}}, "a JSON Schema for one field needs a type"),
    ({"properties": {"a": {"type": "integer"}}}, "needs `type: object` at its top"),
    ({"type": "object"}, "describes an object with `properties`"),
    ({"type": "object", "properties": {"a": {"type": "integr"}}},
     "not a valid JSON Schema at properties/a/type"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True},
     "additionalProperties must be false"),
    ({"type": "object", "properties": {"a": {"type": "object"}}},
     "a: an object needs `properties`"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["b"]},
     "required names 'b', which is not a property"),
    ({"a": {"type": "number", "maximum": math.nan}}, "field 'a': not plain JSON"),
])
def test_bad_schemas(value: object, message: str) -> None:
    with pytest.raises(SchemaError) as caught:
        expand_schema(value)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- conditions ----------------------------------------------------------------------------

FIELDS = {"people": "integer", "present": "boolean", "activity": "string", "note": "string",
          "boxes": "array", "box": "object", "score": "number"}
ANSWER = {"people": 3, "present": True, "activity": "walking", "note": "Smoke near door",
          "boxes": [{"x": 1}, {"x": 5}], "box": {"x": 2, "tags": ["a"]}, "score": 0.75}


@pytest.mark.parametrize("expr, expected", [
    ("present", True),
    ("people >= 2 and present", True),
    ("not present or people > 5", False),
    ("1 < people <= 3", True),
    ("people * 2 - 1 == 5 and people / 2 == 1.5 and people // 2 == 1 and people % 2 == 1", True),
    ("-people < 0 and +people > 0", True),
    ("activity in ['walking', 'running']", True),
    ("activity not in ('walking',)", False),
    ("activity in {'a', 'b'}", False),
    ("'smoke' in lower(note) and upper(activity) == 'WALKING'", True),
    ("len(boxes) == 2 and boxes[1]['x'] == 5 and boxes[-1]['x'] > boxes[0]['x']", True),
    ("box['tags'][0] == 'a' and len(boxes[:1]) == 1", True),
    ("any([present, false]) and all([true, people > 0])", True),
    ("min(people, 10) == 3 and max([1, 7]) == 7 and abs(-2) == 2 and sum([1, 2]) == 3", True),
    ("'yes' if people > 2 else ''", True),
    ("score > 0.5 and score < 1", True),
    ("note is not None and activity != null", True),
    ("people == True", False),
    ("boxes", True),
])
def test_condition_evaluates(expr: str, expected: bool) -> None:
    condition = Condition(expr, FIELDS)
    assert condition.evaluate(ANSWER) is expected


def test_condition_names_and_missing_fields() -> None:
    condition = Condition("note is None or len(note) > 3", FIELDS)
    assert condition.names() == {"note"}
    assert condition.evaluate({}) is True  # an optional field left out is None
    assert condition.evaluate({"note": None}) is True
    assert condition.evaluate({"note": "ab"}) is False
    assert Condition("people > 0 and x", None).names() == {"people", "x"}
    assert Condition("true and null is None", FIELDS).names() == frozenset()
    assert Condition("max > 2", {"max": "integer"}).evaluate({"max": 3})  # a field wins


@pytest.mark.parametrize("expr, answer", [
    ("people > 2", {"people": None}),
    ("people > 2", {}),
    ("boxes[5]['x'] > 0", ANSWER),
    ("box['nope'] == 1", ANSWER),
    ("min(boxes) > 0", {"boxes": []}),
    ("people / 0 > 1", ANSWER),
    ("len(people) > 1", ANSWER),
    ("activity * 100000 == ''", ANSWER),
    ("lower(people) == 'a'", ANSWER),
    ("note + people", ANSWER),
])
def test_condition_errors_are_condition_errors(expr: str, answer: dict[str, object]) -> None:
    condition = Condition(expr, FIELDS)
    with pytest.raises(ConditionError, match="cannot evaluate"):
        condition.evaluate(answer)


@pytest.mark.parametrize("expr, message", [
    ("peple > 0", "unknown name 'peple' (did you mean people?)"),
    ("vehicles > 0", "unknown name 'vehicles' (the answer's fields are: people, present"),
    ("people >", "invalid syntax at the end"),
    ("people > 2 && present", "invalid syntax at column 13 (write `and` / `or`"),
    ("!present", "invalid syntax at column 1 (write `not` instead of !)"),
    ("  people = 2", "invalid syntax at column 10 (compare with ==)"),
    ("'open", "invalid syntax at column 1: unterminated string literal"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("x" * 2000, "is too long"),
    ("a\x00", "contains a NUL character"),
    ("people, present", "is one expression"),
    ("box.x > 1", "attribute access (x.y) is not allowed"),
    ("people ** 2 > 1", "** is not allowed"),
    ("people & 1", "& is not allowed"),
    ("[b for b in boxes]", "comprehensions are not allowed"),
    ("lambda: 1", "lambdas are not allowed"),
    ("f'{people}' == '3'", "f-strings are not allowed"),
    ("(n := 3) > 1", "assignment (:=) is not allowed"),
    ("{'a': 1}", "dict literals are not allowed"),
    ("open('x')", "unknown function 'open'"),
    ("lenn(boxes)", "unknown function 'lenn' (did you mean len?)"),
    ("len", "'len' is a function: call it, as in len(...)"),
    ("len(boxes, 2)", "len() takes 1 argument, not 2"),
    ("max(key=1)", "max() takes no keyword arguments"),
    ("boxes[0].__class__", "attribute access"),
    ("b'x' in note", "bytes literals are not allowed"),
    ("people > 10**20", "** is not allowed"),
    ("people > 100000000000000000000", "a number in the expression is too large"),
    ("(" * 250 + "people" + ")" * 250, "too many nested parentheses"),
    ("not " * 80 + "present", "is nested too deeply"),
    ("__import__('os')", "unknown function '__import__'"),
])
def test_condition_compile_errors(expr: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        Condition(expr, FIELDS)
    assert message in str(caught.value)


def test_condition_helpers_and_default() -> None:
    assert set(HELPERS) == {"len", "any", "all", "min", "max", "sum", "abs", "lower", "upper"}
    assert default_condition({"present": "boolean", "people": "integer"}) == "present"
    assert default_condition({"a": "boolean", "b": "boolean"}) is None
    assert default_condition({"people": "integer"}) is None
    with pytest.raises(ConditionError):
        Condition(3, FIELDS)  # type: ignore[arg-type]
    assert Condition("people is None", FIELDS).evaluate("not a mapping")  # type: ignore[arg-type]


# --- fuzzing: clear errors only, never a crash ---------------------------------------------

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TOKENS = st.sampled_from([
    *FIELDS, *HELPERS, "true", "null", "None", "x", "__class__", "__import__",
    "and", "or", "not", "in", "is", "if", "else", "lambda", "for",
    "(", ")", "[", "]", "{", "}", ",", ":", ".", "'", '"', "+", "-", "*", "**", "/", "//", "%",
    "==", "!=", "<", "<=", ">", ">=", "=", "&", "|", "!", "~", "0", "1", "2.5", "1e308", "-1",
    "'walking'", "'a'", "[]", "()", "9" * 30, " ", "\n", "\\", "#", "@", "$", "`", "\x00", "é",
])
EXPRESSIONS = st.lists(TOKENS, max_size=25).map(" ".join) | st.text(max_size=60) \
    | st.text(alphabet=string.printable, max_size=60)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12)
ANSWERS = st.dictionaries(st.sampled_from(sorted(FIELDS)), JSON, max_size=len(FIELDS))


@FUZZ
@given(EXPRESSIONS, ANSWERS)
def test_fuzz_conditions(expr: str, answer: dict[str, object]) -> None:
    try:
        condition = Condition(expr, FIELDS)
    except ConditionError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    assert condition.names() <= set(FIELDS)
    try:
        result = condition.evaluate(answer)
    except ConditionError as exc:
        assert str(exc).startswith("cannot evaluate")
    else:
        assert isinstance(result, bool)


SHORTHAND_VALUES = st.sampled_from([
    "integer", "int", "boolean", "bool", "number", "string", "str", "string[]", "list[int]",
    "a|b", "a|b|", "integer?", "strng", "[]", "list[", "|", "?", "", "int[]?", "object",
]) | st.lists(st.text(max_size=3), max_size=3) | JSON


@FUZZ
@given(st.dictionaries(st.text(max_size=6) | st.sampled_from(["a", "b?", "type", "properties"]),
                       SHORTHAND_VALUES, max_size=4)
       | st.fixed_dictionaries({"type": st.just("object"), "properties": JSON}))
def test_fuzz_schemas(value: object) -> None:
    try:
        schema = expand_schema(value)
    except SchemaError as exc:
        assert str(exc)
        return
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(schema["properties"])
    assert isinstance(schema_fields(schema), dict)


RULE_KEYS = sorted({*RuleConfig.model_fields, "for", "schema"} - {"for_", "schema_"})
RULE_VALUES = st.sampled_from([
    "dock", "lobby", "5s", "0", "-1s", "*/5 * * * *", "0 9 * * 1", "bad cron", "3", "30s",
    "people > 0", "peple > 0", "answer", "(", "ops", "nope", "critical", "{}", "[]",
]) | JSON


@FUZZ
@given(st.dictionaries(st.sampled_from(RULE_KEYS), RULE_VALUES, max_size=8))
def test_fuzz_rules_only_config_errors(extra: dict[str, object]) -> None:
    import yaml

    rule = {"name": "r", "stream": "dock", "every": "5s", "prompt": "q", **extra}
    text = HEAD + yaml.safe_dump({"rules": [rule]}, allow_unicode=True)
    try:
        config = parse_config(text, name="w.yaml", environ={})
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("w.yaml") for p in exc.problems)
    else:
        assert len(config.rules) == 1 and config.rules[0].when is not None
