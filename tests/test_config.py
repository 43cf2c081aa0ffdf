"""The config file: load_config, ${VAR} substitution, file:line errors, `watcher check`."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from watcher.cli import main
from watcher.config import StreamConfig, WatcherConfig, load_config, parse_config
from watcher.config.overshoot import EmbeddedServerConfig, OvershootConfig
from watcher.config.references import reference_problems
from watcher.config.streams import classify_source
from watcher.configbase import redact_source
from watcher.configerrors import Problem
from watcher.duration import Duration, format_duration, parse_duration
from watcher.errors import ConfigError
from watcher.server.settings import ServerSettings
from watcher.yamlfile import substitute

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "watcher.example.yaml"

PASSWORD = "hunter2-camera-secret"
API_KEY = "ovs_super_secret_key_123"


def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          text: str) -> tuple[int, str, str]:
    """Write ``text`` to tmp_path/watcher.yaml and run `watcher check` on it from tmp_path."""
    (tmp_path / "watcher.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code = main(["check", "-c", "watcher.yaml"])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- `watcher check` rejects, naming file:line and field -----------------------------------

REJECTED = {
    "misspelled key": (
        "overshoot:\n  bse_url: https://api.overshoot.ai/v1beta\n",
        "watcher.yaml:2: overshoot.bse_url: unknown key (did you mean base_url?)"),
    "bad duration": (
        "overshoot:\n  model: local/vision\n  timeout_seconds: 5 sec\n",
        "watcher.yaml:3: overshoot.timeout_seconds: bad duration '5 sec': "
        "use e.g. 500ms, 5s, 2m, 1h"),
    "missing environment variable": (
        "overshoot:\n  base_url: https://api.overshoot.ai/v1beta\n"
        "  api_key: ${WATCHER_TEST_SURELY_UNSET}\n",
        "watcher.yaml:3: overshoot.api_key: environment variable WATCHER_TEST_SURELY_UNSET "
        "is not set"),
    "bad fps": (
        "streams:\n  - name: a\n    source: testsrc\n  - name: b\n    source: testsrc\n"
        "    fps: 0\n",
        "watcher.yaml:6: streams[1].fps: Input should be greater than 0"),
    "fps too high": (
        "streams:\n  - {name: a, source: testsrc, fps: 120}\n",
        "watcher.yaml:2: streams[0].fps: Input should be less than or equal to 60"),
    "unknown top-level section": (
        "overshoot: {}\nstreamz:\n  - name: a\n",
        "watcher.yaml:2: streamz: unknown section (did you mean streams?)"),
    "YAML syntax error": (
        "overshoot:\n  model: local/vision\n streams: [\n",
        "watcher.yaml:3: YAML syntax error"),
    "unclosed quote": (
        "streams:\n  - name: \"a\n",
        "watcher.yaml:2: YAML syntax error: a quoted string opened on this line is not "
        "closed (found unexpected end of stream on line 3)"),
    "unclosed flow mapping": (
        "streams:\n  - {name: a, source: testsrc\n  - name: b\nrules: []\n",
        "watcher.yaml:2: YAML syntax error: a flow mapping ({...}) opened on this line is "
        "not closed (expected ',' or '}', but got ':' on line 3)"),
    "unclosed flow sequence": (
        "overshoot: {}\nstreams: [\n  {name: a, source: testsrc},\n\nrules: []\n",
        "watcher.yaml:2: YAML syntax error: a flow sequence ([...]) opened on this line is "
        "not closed (expected ',' or ']', but got '<stream end>' on line 6)"),
    "duplicate key": (
        "overshoot:\n  model: a\n  timeout_seconds: 5s\n  model: b\n",
        "watcher.yaml:4: overshoot.model: duplicate key (first given on line 2)"),
    "pull with a file source": (
        "streams:\n  - name: clip\n    source: clip.mp4\n    pull: true\n",
        "watcher.yaml:4: streams[0].pull: only rtsp(s):// and http(s):// sources can be pulled"),
    "pull with testsrc": (
        "streams:\n  - {name: t, source: testsrc, pull: true}\n",
        "watcher.yaml:2: streams[0].pull: only rtsp(s):// and http(s):// sources can be pulled"),
    "loop with a camera": (
        "streams:\n  - name: cam\n    source: rtsp://cam.local/s\n    loop: true\n",
        "watcher.yaml:4: streams[0].loop: only file sources can loop, not a rtsp source"),
    "duplicate stream name": (
        "streams:\n  - name: door\n    source: testsrc\n  - name: yard\n    source: testsrc\n"
        "  - name: door\n    source: testsrc\n",
        "watcher.yaml:6: streams[2].name: duplicate stream name 'door' (also streams[0])"),
    "missing file source": (
        "streams:\n  - name: a\n    source: clips/missing.mp4\n",
        "watcher.yaml:3: streams[0].source: file not found: "),
    "missing required key": (
        "streams:\n  - name: a\n    fps: 2\n",
        "watcher.yaml:2: streams[0].source: required, but not given"),
    "passthrough of a synthetic source": (
        "streams:\n  - name: a\n    source: testsrc\n    passthrough: always\n",
        "watcher.yaml:4: streams[0].passthrough: a testsrc source has no H.264 to pass "
        "through"),
    "unknown passthrough mode": (
        "streams:\n  - name: a\n    source: testsrc\n    passthrough: sometimes\n",
        "watcher.yaml:4: streams[0].passthrough: "),
    "odd width": (
        "streams:\n  - {name: a, source: testsrc, width: 641}\n",
        "watcher.yaml:2: streams[0].width: must be an even number"),
    "not a slug": (
        "streams:\n  - {name: Front Door, source: testsrc}\n",
        "watcher.yaml:2: streams[0].name: must be a slug"),
    "unsupported URL": (
        "streams:\n  - {name: a, source: 'ftp://cam.local/x'}\n",
        "watcher.yaml:2: streams[0].source: unsupported URL scheme 'ftp'"),
    "cloud without key": (
        "overshoot:\n  base_url: https://api.overshoot.ai/v1beta\n",
        "watcher.yaml:1: overshoot.api_key: required when base_url is not `embedded`"),
    "base_url not a URL": (
        "overshoot:\n  base_url: localhost:8420\n",
        "watcher.yaml:2: overshoot.base_url: must be an http:// or https:// URL"),
    "section of the wrong shape": (
        "overshoot: [a, b]\n",
        "watcher.yaml:1: overshoot: should be a mapping of `key: value` lines"),
    "empty streams": (
        "streams:\n",
        "watcher.yaml:1: streams: is empty"),
    "bad tag": (
        "overshoot:\n  jpeg: !!int abc\n",
        "watcher.yaml:2: overshoot.jpeg: cannot read this value as '!!int'"),
    "nested unknown key": (
        "overshoot:\n  embedded:\n    retention: 10m\n",
        "watcher.yaml:3: overshoot.embedded.retention: unknown key "
        "(did you mean retention_seconds?)"),
}


@pytest.mark.parametrize("text, expected", REJECTED.values(), ids=list(REJECTED))
def test_check_rejects_with_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    text: str, expected: str,
) -> None:
    monkeypatch.delenv("WATCHER_TEST_SURELY_UNSET", raising=False)
    (tmp_path / "clip.mp4").write_bytes(b"not really a video")
    code, out, err = check(tmp_path, monkeypatch, capsys, text)
    assert code == 2
    assert out == ""
    assert expected in err, err
    assert "Traceback" not in err
    assert err.rstrip().endswith("problem") or err.rstrip().endswith("problems")


def test_check_reports_every_problem_in_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("WATCHER_TEST_SURELY_UNSET", raising=False)
    code, _, err = check(tmp_path, monkeypatch, capsys, (
        "overshoot:\n"
        "  bse_url: x\n"                                    # 2
        "  timeout_seconds: soon\n"                         # 3
        "streams:\n"
        "  - name: a\n"
        "    source: ${WATCHER_TEST_SURELY_UNSET}\n"        # 6: only the variable is reported
        "    fps: -1\n"                                     # 7
        "rulez: []\n"))                                     # 8
    assert code == 2
    lines = err.splitlines()
    assert [line.split(":")[1] for line in lines[:-1]] == ["2", "3", "6", "7", "8"]
    assert lines[-1] == "watcher.yaml: 5 problems"
    assert "streams[0].source: is empty" not in err


def test_check_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{EXAMPLE}: OK (1 stream, 1 rule, embedded server)"
    config = load_config(EXAMPLE)
    assert config.overshoot.is_embedded
    assert config.streams[0].kind == "testsrc"


def test_check_accepts_defaults_and_substitutes_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("WATCHER_TEST_FPS", raising=False)
    monkeypatch.setenv("WATCHER_TEST_MODEL", "gemma-3")
    code, out, err = check(tmp_path, monkeypatch, capsys, (
        "overshoot:\n"
        "  model: ${WATCHER_TEST_MODEL}\n"
        "streams:\n"
        "  - name: a\n"
        "    source: testsrc\n"
        "    fps: ${WATCHER_TEST_FPS:-2}\n"
        "    description: \"costs $$5, literal $${NOT_A_VAR}\"\n"))
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "watcher.yaml: OK (1 stream, embedded server)"
    config = load_config(tmp_path / "watcher.yaml")
    assert config.overshoot.model == "gemma-3"
    assert config.streams[0].fps == 2.0
    assert config.streams[0].description == "costs $$5, literal ${NOT_A_VAR}"
    monkeypatch.setenv("WATCHER_TEST_FPS", "12.5")
    assert load_config(tmp_path / "watcher.yaml").streams[0].fps == 12.5


def test_config_option_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WATCHER_CONFIG", raising=False)
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "watcher.yaml: no such file" in err and "WATCHER_CONFIG" in err
    (tmp_path / "watcher.yaml").write_text("streams: []\n")
    assert main(["check"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "watcher.yaml: OK (0 streams, embedded server)"
    (tmp_path / "other.yaml").write_text("overshoot: {model: m}\n")
    monkeypatch.setenv("WATCHER_CONFIG", str(tmp_path / "other.yaml"))
    assert main(["check"]) == 0
    assert "other.yaml: OK" in capsys.readouterr().out


@pytest.mark.parametrize("text, expected", [
    ("", "watcher.yaml: the file is empty"),
    ("# only a comment\n", "watcher.yaml: the file is empty"),
    ("- a\n- b\n", "watcher.yaml:1: the top level should be a mapping of sections"),
    ("just text\n", "watcher.yaml:1: the top level should be a mapping of sections"),
    ("a: &a [*a]\n", "watcher.yaml:1: a[0]: an alias refers to itself"),
    ("overshoot:\n\tmodel: x\n", "watcher.yaml:2: YAML syntax error"),
    ("a: 1\n---\nb: 2\n", "watcher.yaml:2: YAML syntax error"),
    ("? [a]\n: b\n", "watcher.yaml:1: a key must be a name"),
    ("overshoot:\n  model: \"${\"\n", "watcher.yaml:2: overshoot.model: unclosed '${'"),
    ("overshoot:\n  model: \"${1X}\"\n", "watcher.yaml:2: overshoot.model: bad variable reference"),
])
def test_unreadable_files(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "watcher.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "watcher.yaml")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_binary_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"a: 1\nb: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin.yaml:2: not UTF-8 text"):
        load_config(tmp_path / "bin.yaml")
    with pytest.raises(ConfigError, match=r"nope.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_config(tmp_path)


def test_anchors_merge_keys_and_extension_sections(tmp_path: Path) -> None:
    (tmp_path / "watcher.yaml").write_text(
        "x-small: &small {width: 320, height: 240, fps: 2}\n"
        "streams:\n"
        "  - <<: *small\n"
        "    name: a\n"
        "    source: testsrc\n"
        "    fps: 4\n"
        "  - <<: *small\n"
        "    name: b\n"
        "    source: testsrc\n")
    config = load_config(tmp_path / "watcher.yaml")
    assert [(s.width, s.height, s.fps) for s in config.streams] == [(320, 240, 4), (320, 240, 2)]


# --- sources -------------------------------------------------------------------------------

def test_relative_file_sources_resolve_against_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "clips").mkdir(parents=True)
    clip = conf_dir / "clips" / "door.mp4"
    clip.write_bytes(b"x")
    (conf_dir / "watcher.yaml").write_text(
        "streams:\n  - {name: door, source: clips/door.mp4, loop: true}\n"
        f"  - {{name: abs, source: '{clip}'}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../conf/watcher.yaml")
    assert config.streams[0].source == str(clip)
    assert config.streams[0].kind == "file" and config.streams[0].loop
    assert config.streams[1].source == str(clip)
    (elsewhere / "watcher.yaml").write_text("streams:\n  - {name: door, source: clips/door.mp4}\n")
    with pytest.raises(ConfigError, match=r"file not found: .*elsewhere/clips/door\.mp4 "
                       r"\(relative paths are resolved against the config file's directory\)"):
        load_config("watcher.yaml")


@pytest.mark.parametrize("source, kind", [
    ("testsrc", "testsrc"),
    ("testsrc:events=box,period=20", "testsrc"),
    ("/dev/video0", "device"),
    ("device:0", "device"),
    ("rtsp://cam/s", "rtsp"),
    ("RTSPS://cam/s", "rtsp"),
    ("http://cam/live.m3u8", "http"),
    ("https://cam/live.m3u8", "http"),
    ("clips/a.mp4", "file"),
])
def test_classify_source(source: str, kind: str) -> None:
    assert classify_source(source) == kind


def test_stream_properties() -> None:
    stream = StreamConfig(name="t", source="testsrc:events=person,period=10", codec="h264")
    assert stream.testsrc_spec == "events=person,period=10"
    assert stream.codec_mime == "video/H264"
    assert StreamConfig(name="u", source="testsrc").testsrc_spec == ""
    pulled = StreamConfig(name="cam", source="rtsp://cam.local:554/s", pull=True)
    assert pulled.kind == "rtsp" and pulled.testsrc_spec is None


# --- secrets -------------------------------------------------------------------------------

def test_secrets_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WATCHER_TEST_API_KEY", API_KEY)
    good = (
        "overshoot:\n"
        "  base_url: https://api.overshoot.ai/v1beta\n"
        "  api_key: ${WATCHER_TEST_API_KEY}\n"
        "streams:\n"
        f"  - name: cam\n    source: rtsp://admin:{PASSWORD}@cam.local:554/s1\n    pull: true\n"
        f"  - name: hls\n    source: https://cdn.example/live.m3u8?token={PASSWORD}x&ch=2\n")
    code, out, err = check(tmp_path, monkeypatch, capsys, good)
    assert code == 0, err
    config = load_config(tmp_path / "watcher.yaml")
    assert config.overshoot.api_key is not None
    assert config.overshoot.api_key.get_secret_value() == API_KEY
    assert config.streams[0].source == f"rtsp://admin:{PASSWORD}@cam.local:554/s1"
    shown = "\n".join([str(config), repr(config), repr(config.streams), str(config.streams[1]),
                       repr(config.overshoot), out, err])
    assert PASSWORD not in shown and API_KEY not in shown
    assert "rtsp://admin:***@cam.local:554/s1" in repr(config)
    assert "token=***&ch=2" in repr(config)

    from watcher.logs import redact
    assert PASSWORD not in redact(f"publishing {config.streams[0].source} with {API_KEY}")

    bad = good.replace("    pull: true\n", "    pull: true\n    fps: 0\n    lop: true\n").replace(
        "api_key: ${WATCHER_TEST_API_KEY}", f"api_key: {API_KEY}\n  timeout_seconds: {API_KEY}x")
    code, out, err = check(tmp_path, monkeypatch, capsys, bad)
    assert code == 2
    assert "streams[0].fps" in err and "streams[0].lop: unknown key (did you mean loop?)" in err
    assert PASSWORD not in out + err and API_KEY not in out + err


@pytest.mark.parametrize("source, shown", [
    ("rtsp://user:pw@host/s", "rtsp://user:***@host/s"),
    ("https://TOKEN@host/live", "https://***@host/live"),
    ("http://host/a?api_key=k&x=1#f", "http://host/a?api_key=***&x=1#f"),
    ("rtsp://host:554/s", "rtsp://host:554/s"),
    ("clips/a.mp4", "clips/a.mp4"),
])
def test_redact_source(source: str, shown: str) -> None:
    assert redact_source(source) == shown


# --- durations -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("5s", 5), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("1h30m", 5400), ("1d", 86400),
    ("1w", 604800), ("2m30s", 150), ("1s500ms", 1.5), ("1.5h", 5400), (" 10s ", 10),
    (30, 30), (2.5, 2.5), ("30", 30), ("0.25", 0.25), ("0", 0),
])
def test_duration_parses(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, message", [
    ("5 sec", "bad duration '5 sec': use e.g. 500ms, 5s, 2m, 1h"),
    ("soon", "bad duration 'soon': use e.g."),
    ("", "bad duration '': use e.g."),
    ("5", None),
    ("30m1h", "largest first"),
    ("1m1m", "largest first"),
    ("-5s", "must not be negative"),
    (-1, "must not be negative"),
    (True, "bad duration True"),
    (float("nan"), "must be finite"),
    (10**400, "too large"),
    ([1], "bad duration [1]"),
])
def test_duration_rejects(text: object, message: str | None) -> None:
    if message is None:
        assert parse_duration(text) == 5
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(text)


def test_duration_as_a_pydantic_type() -> None:
    class Rule(BaseModel):
        every: Duration = Field(60.0, gt=0, description="How often.")

    assert Rule(every="1h30m").every == 5400
    assert Rule().every == 60
    with pytest.raises(ValidationError) as caught:
        Rule(every="5 sec")
    assert caught.value.errors()[0]["msg"] == "bad duration '5 sec': use e.g. 500ms, 5s, 2m, 1h"
    with pytest.raises(ValidationError, match="greater than 0"):
        Rule(every="0s")


@pytest.mark.parametrize("seconds", [0, 0.5, 1, 59, 90, 3600, 5400, 86400 + 61, 1.5])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
    assert format_duration(5400) == "1h30m"


# --- env substitution ----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("${A}", "a"),
    ("x${A}y${B}", "xaybb"),
    ("${EMPTY:-d}", "d"),
    ("${EMPTY-d}", ""),
    ("${UNSET-d}", "d"),
    ("${UNSET:-}", ""),
    ("$${A}", "${A}"),
    ("$$ and $5 and $A", "$$ and $5 and $A"),
    ("${UNSET:-a b:c}", "a b:c"),
])
def test_substitute(text: str, expected: str) -> None:
    assert substitute(text, {"A": "a", "B": "bb", "EMPTY": ""}) == (expected, [])


def test_substitute_problems() -> None:
    assert substitute("${UNSET}", {})[1] == [
        "environment variable UNSET is not set (set it, or write ${UNSET:-default} "
        "to give a default)"]
    assert "unclosed" in substitute("${A", {"A": "1"})[1][0]
    assert "nested" in substitute("${A:-${B}}", {})[1][0]


def test_substituted_values_stay_strings() -> None:
    config = parse_config(
        "overshoot:\n  model: ${NUMBER}\nstreams:\n  - name: a\n    source: testsrc\n"
        "    enabled: ${FLAG}\n    width: '${WIDTH}'\n",
        environ={"NUMBER": "123", "FLAG": "false", "WIDTH": "320"})
    assert config.overshoot.model == "123"
    assert config.streams[0].enabled is False
    assert config.streams[0].width == 320


# --- references between sections ----------------------------------------------------------

class _WithWatchList(WatcherConfig):
    """A later section naming streams, as rules will."""

    watch: list[str] = Field(default_factory=list, description="Streams to watch.")

    def check_references(self) -> list[Problem]:
        problems = super().check_references()
        for index, name in enumerate(self.watch):
            problems += reference_problems(("watch", index), name, self.stream_names)
        return problems


def test_reference_checks_are_reported_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    path.write_text(
        "streams:\n"
        "  - {name: front, source: testsrc}\n"
        "  - {name: back, source: testsrc}\n"
        "watch:\n"
        "  - front\n"
        "  - backk\n"
        "  - garage\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, model=_WithWatchList)
    assert caught.value.problems == [
        f"{path}:6: watch[1]: unknown stream 'backk' (did you mean back?)",
        f"{path}:7: watch[2]: unknown stream 'garage' (expected one of: front, back)",
    ]
    path.write_text(path.read_text().replace("backk", "back").replace("  - garage\n", ""))
    assert load_config(path, model=_WithWatchList).watch == ["front", "back"]


def test_reference_checks_run_for_models_built_in_code() -> None:
    with pytest.raises(ValidationError, match=r"streams\[1\]\.name: duplicate stream name 'a'"):
        WatcherConfig(streams=[{"name": "a", "source": "testsrc"},
                               {"name": "a", "source": "testsrc"}])
    config = WatcherConfig(streams=[{"name": "a", "source": "testsrc"}])
    assert config.stream("a").name == "a"
    with pytest.raises(KeyError):
        config.stream("b")


# --- the models ----------------------------------------------------------------------------

def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen or not model.__module__.startswith("watcher.config"):
        return seen
    seen.add(model)
    for info in model.model_fields.values():
        for candidate in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                _models(candidate, seen)
    return seen


def test_every_option_is_described_and_typos_fail() -> None:
    models = _models(WatcherConfig, set())
    assert {m.__name__ for m in models} == {
        "WatcherConfig", "OvershootConfig", "EmbeddedServerConfig", "StreamConfig", "ModelPrice"}
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"


def test_api_key_and_embedded_server_settings() -> None:
    assert OvershootConfig().api_key is None
    assert OvershootConfig(api_key="").api_key is None
    with pytest.raises(ValidationError, match="is empty"):
        OvershootConfig(base_url="https://api.overshoot.ai/v1beta", api_key=" ")
    embedded = EmbeddedServerConfig(ttl_seconds="30s", retention_seconds="2.5s",
                                    upstreams=[{"base_url": "http://127.0.0.1:11434/v1",
                                                "models": {"qwen": "qwen2.5vl"}}])
    server = embedded.server_settings(["ovs_k"])
    assert (server.ttl_seconds, server.retention_seconds, server.tombstone_seconds) == (30, 3, 300)
    assert server.upstreams[0].models == {"qwen": "qwen2.5vl"}
    with pytest.raises(ValidationError, match="base_url is not a valid URL"):
        EmbeddedServerConfig(upstreams=[{"base_url": "http://[::1"}])


# --- fuzzing: only ConfigError, ever -------------------------------------------------------

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
VALID = EXAMPLE.read_text() + (
    "  - name: cam\n"
    "    source: rtsp://user:${CAM_PASSWORD:-pw}@cam.local:554/s\n"
    "    pull: true\n"
    "    fps: 2\n"
    "  - {name: clip, source: watcher.example.yaml, loop: true, width: 320, height: 240}\n")
FIELDS = sorted({*WatcherConfig.model_fields, *OvershootConfig.model_fields,
                 *EmbeddedServerConfig.model_fields, *StreamConfig.model_fields, "x-a", "<<"})
YAMLISH = st.lists(st.sampled_from(
    list(":-{}[],'\"#&*!|>%@`$?~. \n\t\\") + list(string.ascii_lowercase[:6]) + list("0129")
    + ["\x00", "é", "\ufeff", "${", "$${", "&a", "*a", "<<: ", "!!int ", "- ", ": ",
       "streams", "overshoot", "name", "source", "testsrc"]), max_size=60).map("".join)


def _must_be_clean(text: str) -> None:
    try:
        config = parse_config(text, name="w.yaml", base_dir=REPO, environ={"A": "1"})
    except ConfigError as exc:
        assert exc.problems
        assert all(p.startswith("w.yaml") for p in exc.problems), exc.problems
        assert all("Traceback" not in p for p in exc.problems)
    else:
        assert isinstance(config, WatcherConfig)
        assert "pw@" not in repr(config)


@FUZZ
@given(YAMLISH | st.text(max_size=200))
def test_fuzz_random_text(text: str) -> None:
    _must_be_clean(text)


@st.composite
def _mutations(draw: st.DrawFn) -> str:
    lines = VALID.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "swap", "indent"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "insert":
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(YAMLISH) + line[at:]
        elif op == "replace":
            key = draw(st.sampled_from(FIELDS))
            value = draw(st.sampled_from(
                ["0", "-1", "1e9", "yes", "null", "''", "[]", "{}", "5 sec", "1h30m", "${A}",
                 "${NOPE}", "testsrc", "rtsp://[::1", "/dev/video0", "~", "!!float x", "*a"]))
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines[i] = f"{indent}{key}: {value}\n"
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines[i] = " " * draw(st.integers(0, 6)) + lines[i].lstrip(" ")
    return "".join(lines)


@FUZZ
@given(_mutations())
def test_fuzz_mutated_valid_config(text: str) -> None:
    _must_be_clean(text)


_SCALARS = (st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True)
            | st.sampled_from(["testsrc", "5s", "embedded", "a", "clip.mp4", "rtsp://h/s",
                               "https://h/v1", "${A}"]) | st.text(max_size=10))
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), children, max_size=5),
    max_leaves=25)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), _TREES, max_size=4))
def test_fuzz_structured_documents(data: dict[str, object]) -> None:
    _must_be_clean(yaml.safe_dump(data, allow_unicode=True))


def test_valid_fuzz_seed_loads() -> None:
    config = parse_config(VALID, name="w.yaml", base_dir=REPO, environ={})
    assert [s.name for s in config.streams] == ["lobby", "cam", "clip"]


def test_check_rejects_a_bad_synthetic_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = check(tmp_path, monkeypatch, capsys, (
        "streams:\n"
        "  - name: a\n"
        "    source: testsrc:evnts=box\n"))
    assert code == 2
    assert err.splitlines()[0].startswith("watcher.yaml:3: streams[0].source: ")
    assert "evnts" in err


def test_embedded_server_media_url_forwarding_is_off_unless_set() -> None:
    assert EmbeddedServerConfig().server_settings(["ovs-k"]).forward_media_urls is False
    on = EmbeddedServerConfig(forward_media_urls=True).server_settings(["ovs-k"])
    assert on.forward_media_urls is True


def test_the_daemons_embedded_server_may_pull_cameras_on_private_networks() -> None:
    assert ServerSettings().allow_private_sources is False  # `watcher serve`'s default
    settings = EmbeddedServerConfig().server_settings(["ovs-k"])
    assert settings.allow_private_sources is True
    assert (settings.pull_connect_timeout_seconds, settings.max_streams_per_key,
            settings.max_pulls) == (15, 64, 16)
    strict = EmbeddedServerConfig(allow_private_sources=False, pull_connect_timeout_seconds="2s",
                                  max_streams_per_key=3, max_pulls=0).server_settings(["k"])
    assert (strict.allow_private_sources, strict.pull_connect_timeout_seconds,
            strict.max_streams_per_key, strict.max_pulls) == (False, 2, 3, 0)
