"""Which streams and rules the groups an instance owns make up."""

from __future__ import annotations

from watcher.cluster.work import config_groups, owned_rules, owned_streams
from watcher.config import parse_config

CONFIG = """
overshoot: {model: local/frames}
streams:
  - {name: dock, source: "testsrc:"}
  - {name: yard, source: "testsrc:"}
  - {name: lobby, source: "testsrc:"}
  - {name: spare, source: "testsrc:", enabled: false}
rules:
  - {name: dock-alone, stream: dock, every: 5s, prompt: "anyone?"}
  - {name: dock-and-yard, streams: [dock, yard], every: 5s, prompt: "anyone?"}
  - {name: lobby, stream: lobby, every: 5s, prompt: "anyone?"}
  - {name: spare, stream: spare, every: 5s, prompt: "anyone?"}
  - {name: unused, stream: lobby, every: 5s, prompt: "anyone?", enabled: false}
"""


def test_owned_groups_select_their_streams_and_rules() -> None:
    config = parse_config(CONFIG)
    assert [g.id for g in config_groups(config)] == ["dock+yard", "lobby"]
    assert [s.name for s in owned_streams(config, {"dock+yard"})] == ["dock", "yard"]
    assert [r.name for r in owned_rules(config, {"dock+yard"})] == ["dock-alone",
                                                                    "dock-and-yard"]
    assert [r.name for r in owned_rules(config, {"lobby"})] == ["lobby"]
    assert owned_streams(config, set()) == [] and owned_rules(config, set()) == []


def test_on_alert_ties_the_followers_streams_to_the_leaders_group() -> None:
    config = parse_config("""
overshoot: {model: local/frames}
streams:
  - {name: gate, source: "testsrc:"}
  - {name: yard, source: "testsrc:"}
  - {name: lobby, source: "testsrc:"}
rules:
  - {name: gate-person, stream: gate, every: 5s, prompt: "anyone?"}
  - {name: yard-follow-up, stream: yard, on_alert: [gate-person], prompt: "anyone?"}
  - {name: lobby, stream: lobby, every: 5s, prompt: "anyone?"}
""")
    assert [g.id for g in config_groups(config)] == ["gate+yard", "lobby"]
