"""The `cluster:` section: defaults, checks, and that it needs PostgreSQL."""

from __future__ import annotations

import pytest

from watcher.cluster.config import ClusterConfig, default_instance_id
from watcher.config import parse_config
from watcher.errors import ConfigError

BASE = """
overshoot: {model: local/frames}
streams:
  - {name: cam, source: "testsrc:"}
"""
PG = "state:\n  url: postgresql://watcher:s3cret-pass@db.example:5432/watcher\n"


def test_defaults_and_summary() -> None:
    config = parse_config(BASE + PG + "cluster: {}\n")
    assert config.cluster == ClusterConfig()
    assert (config.cluster.heartbeat, config.cluster.lease) == (2.0, 10.0)
    assert config.cluster.member_id == default_instance_id()
    assert "cluster mode" in config.summary()
    named = parse_config(BASE + PG + "cluster: {instance_id: east-1, heartbeat: 1s, "
                         "lease: 4s}\n")
    assert named.cluster is not None and named.cluster.member_id == "east-1"


def test_cluster_mode_needs_postgresql_and_says_so_at_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + "cluster: {}\n", name="site.yaml")
    [problem] = caught.value.problems
    assert problem.startswith("site.yaml:5: cluster:"), problem
    assert "state.url: postgresql://" in problem


@pytest.mark.parametrize(("text", "field"), [
    ("cluster: {heartbeat: 5s, lease: 6s}\n", "at least twice the heartbeat"),
    ("cluster: {lease: 0}\n", "lease"),
    ("cluster: {heartbeats: 2s}\n", "heartbeats"),
])
def test_bad_values_are_named(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + PG + text, name="site.yaml")
    message = "\n".join(caught.value.problems)
    assert "site.yaml:" in message and field in message
    assert "s3cret-pass" not in message
