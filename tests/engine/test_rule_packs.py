"""The shipped rule packs (rules/*.yaml) and watcher.example.yaml pass `watcher check`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from watcher.cli import main
from watcher.config import WatcherConfig, load_config
from watcher.engine.rules import RuleConfig
from watcher.server.backends.vision import SYNONYMS, Measurements, fill_schema

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
EXAMPLE = REPO / "watcher.example.yaml"
PACKS = sorted(RULES.glob("*.yaml"))
EXPECTED = {"after-hours-person", "loading-dock-blocked", "smoke-or-fire", "ppe",
            "package-at-door", "motion-local"}
HUMAN_FIELDS = {"description", "evidence"}


def write_config(tmp_path: Path, includes: list[str]) -> Path:
    """A config with one testsrc stream `cam`, one action `ops`, and these include entries."""
    path = tmp_path / "watcher.yaml"
    path.write_text(
        "streams:\n"
        "  - {name: cam, source: 'testsrc:events=person'}\n"
        "  - {name: yard, source: testsrc}\n"
        "actions:\n"
        "  ops: {type: webhook, url: 'https://hooks.example/alerts'}\n"
        "overshoot:\n"  # the packs are written for a vision-language model
        "  model: vlm\n"
        "  embedded: {upstreams: [{base_url: 'http://127.0.0.1:9/v1', models: {vlm: qwen}}]}\n"
        "include:\n" + "".join(f"  - {entry}\n" for entry in includes))
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check", "-c", str(path)])
    out = capsys.readouterr()
    return code, out.out.split("\n", 1)[0], out.err  # the budget line follows


def pack_rules(pack: Path) -> list[dict]:
    data = yaml.safe_load(pack.read_text())
    assert isinstance(data, dict) and isinstance(data.get("rules"), list), pack
    return data["rules"]


def test_the_expected_packs_ship() -> None:
    assert {p.stem for p in PACKS} >= EXPECTED


@pytest.mark.parametrize("pack", PACKS, ids=lambda p: p.stem)
def test_pack_passes_check_when_bound(pack: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, [f"{{path: '{pack}', stream: cam, actions: [ops]}}"])
    code, out, err = check(path, capsys)
    assert code == 0, err
    count = len(pack_rules(pack))
    assert out == (f"{path}: OK (2 streams, {count} rule{'s' if count > 1 else ''}, 1 action, "
                   "embedded server)")
    config = load_config(path)
    assert len(config.rules) == count
    for rule in config.rules:
        assert rule.stream_names == ["cam"] and rule.actions == ["ops"]
        assert rule.origin is not None and rule.origin.file == str(pack)


@pytest.mark.parametrize("pack", PACKS, ids=lambda p: p.stem)
def test_pack_is_written_to_be_bound_and_read(pack: Path) -> None:
    text = pack.read_text()
    assert text.startswith(f"# {pack.name}:"), "a pack starts with a comment block"
    header = text.split("\n\n", 1)[0]
    for word in ("Detects", "Models", "Include", "Tune"):
        assert f"# {word}" in header, f"the comment block says {word}"
    assert f"path: rules/{pack.name}" in header, "it shows how to include the pack"
    for raw in pack_rules(pack):
        assert not {"stream", "streams", "actions"} & set(raw), "bound in the include entry"
    for rule in _bound(pack):
        assert rule.description and len(rule.prompt) > 80, rule.name
        assert HUMAN_FIELDS & set(rule.fields), f"{rule.name}: a text field for the human"
        assert rule.fields[(HUMAN_FIELDS & set(rule.fields)).pop()] == "string"
        assert rule.labels.get("pack") == pack.stem
        assert rule.cooldown > 0 and rule.keep_firing_for > 0, rule.name


def test_unbound_pack_names_the_binding(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, [f"'{RULES / 'ppe.yaml'}'"])
    code, _out, err = check(path, capsys)
    assert code == 2
    assert "needs `stream: NAME`" in err and "bind the pack's rules" in err


def test_all_packs_together_and_a_pack_twice(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, [
        f"{{path: '{RULES}/*.yaml', stream: cam}}",
        f"{{path: '{RULES / 'motion-local.yaml'}', stream: yard, name_prefix: yard-}}",
    ])
    code, out, err = check(path, capsys)
    assert code == 0, err
    names = [rule.name for rule in load_config(path).rules]
    assert len(names) == len(set(names)) == sum(len(pack_rules(p)) for p in PACKS) + 2
    assert {"yard-motion", "yard-person"} <= set(names)
    assert out.startswith(f"{path}: OK (2 streams, {len(names)} rules")


def test_after_hours_covers_nights_and_weekends_only() -> None:
    rules = _bound(RULES / "after-hours-person.yaml")
    triggers = [rule.cron_trigger(UTC) for rule in rules]
    assert all(t is not None for t in triggers)
    monday = datetime(2025, 1, 6, tzinfo=UTC)
    for hour in range(7 * 24):
        start = monday + timedelta(hours=hour)
        runs = [t.get_next_fire_time(None, start) for t in triggers]  # type: ignore[union-attr]
        asked = sum(run == start for run in runs)
        after_hours = start.weekday() >= 5 or not 7 <= start.hour < 19
        assert asked == (1 if after_hours else 0), start


def test_smoke_or_fire_is_critical_and_confirmed() -> None:
    (rule,) = _bound(RULES / "smoke-or-fire.yaml")
    assert rule.severity == "critical" and rule.every is not None and rule.every <= 10
    assert rule.confirm is not None and rule.confirm.prompt != rule.prompt
    assert rule.condition.evaluate({"smoke": True, "flames": False, "confidence": 0.9})
    assert not rule.condition.evaluate({"smoke": True, "flames": False, "confidence": 0.3})
    assert rule.confirm.condition.evaluate({"confirmed": True, "kind": "smoke"})
    assert not rule.confirm.condition.evaluate({"confirmed": True, "kind": "none"})


def test_dock_and_package_wait_before_firing() -> None:
    (dock,) = _bound(RULES / "loading-dock-blocked.yaml")
    assert dock.for_seconds is not None and dock.for_seconds >= 60
    assert not dock.condition.evaluate(
        {"blocked": True, "obstruction": "trailer", "active_loading": True})
    assert dock.condition.evaluate(
        {"blocked": True, "obstruction": "pallet", "active_loading": False})
    (package,) = _bound(RULES / "package-at-door.yaml")
    assert package.skip_unchanged and package.for_seconds is not None


def test_ppe_alerts_on_a_missing_item_not_on_unclear_people() -> None:
    (rule,) = _bound(RULES / "ppe.yaml")
    base = {"workers": 3, "missing_hard_hat": 0, "missing_vest": 0, "unclear": 2}
    assert not rule.condition.evaluate(base)
    assert rule.condition.evaluate({**base, "missing_vest": 1})
    assert rule.condition.evaluate({**base, "missing_hard_hat": 1})
    assert not rule.condition.evaluate({**base, "workers": 0, "missing_vest": 1})


@pytest.mark.parametrize("moving,people,expected", [
    (0.0, 0, {"motion": False, "person": False}),
    (0.03, 0, {"motion": True, "person": False}),
    (0.03, 1, {"motion": True, "person": True}),
])
def test_motion_local_is_answered_by_local_vision(moving: float, people: int,
                                                  expected: dict[str, bool]) -> None:
    """local/vision fills every field (none is rejected) and the conditions read them."""
    measured = Measurements(frames=10, motion=moving, people=people, faces=0, brightness=0.5)
    for rule in _bound(RULES / "motion-local.yaml"):
        assert rule.model == "local/vision"
        assert all(name in SYNONYMS for name in rule.fields), rule.name
        answer = fill_schema(measured, rule.schema)
        assert set(answer) == set(rule.fields)
        assert rule.condition.evaluate(answer) is expected[rule.name], rule.name


def test_example_passes_check_and_runs_offline(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(EXAMPLE, capsys)
    assert code == 0, err
    assert out == f"{EXAMPLE}: OK (1 stream, 1 rule, embedded server)"
    config = load_config(EXAMPLE)
    assert config.overshoot.is_embedded and config.overshoot.model == "local/vision"
    assert config.streams[0].kind == "testsrc" and not config.actions
    assert config.state.path == str(REPO / "watcher-state.sqlite3")
    (rule,) = config.rules
    assert rule.stream_names == [config.streams[0].name]
    answer = fill_schema(Measurements(frames=6, motion=0.02, people=0, faces=0,
                                      brightness=0.5), rule.schema)
    assert rule.condition.evaluate(answer)


def _bound(pack: Path) -> list[RuleConfig]:
    """The pack's rules as an include entry binding them to a stream would load them."""
    config = WatcherConfig.model_validate({
        "streams": [{"name": "cam", "source": "testsrc"}],
        "rules": [{**raw, "stream": "cam"} for raw in pack_rules(pack)],
    })
    return config.rules
