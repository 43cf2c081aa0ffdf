"""`watcher backtest` on generated recordings with known events."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from support.browser import chromium
from support.receivers import HttpReceiver, reply
from support.recording import LOBBY_MOTION_RULE, LOBBY_STREAM, write_labels, write_recording

from watcher.cli import main

MOTION_RULES = ("overshoot:\n  base_url: embedded\n  model: local/vision\nrules:\n"
                + LOBBY_MOTION_RULE + """\
  - name: blind
    stream: lobby
    every: 2s
    window: 2s
    max_fps: 3
    prompt: Is the whole room moving?
    schema: {motion_detected: boolean, motion: number}
    when: motion > 0.9
""" + LOBBY_STREAM)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """45 s of the lobby with a box crossing at 5-11 s and 25-31 s."""
    folder = tmp_path_factory.mktemp("recording")
    video = folder / "lobby.mp4"
    labels = write_recording(video, seconds=45, start=5, period=20, duration=6)
    write_labels(folder / "labels.jsonl", labels)
    return video, folder / "labels.jsonl"


def backtest(tmp_path: Path, config: str, video: Path, labels: Path | None,
             capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict, str]:
    path = tmp_path / "watcher.yaml"
    path.write_text(config)
    argv = ["backtest", "-c", str(path), "--video", str(video), "--json", *extra]
    if labels is not None:
        argv += ["--labels", str(labels)]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


def by_rule(doc: dict) -> dict[str, dict]:
    return {r["rule"]: r for r in doc["results"]}


def test_the_example_rule_scores_perfectly_and_a_blind_rule_low(
        tmp_path: Path, recording, capsys) -> None:
    video, labels = recording
    code, doc, err = backtest(tmp_path, MOTION_RULES, video, labels, capsys,
                              "--report", str(tmp_path / "report.html"))
    assert code == 0, err
    results = by_rule(doc)
    good, blind = results["lobby-motion"], results["blind"]
    assert (good["precision"], good["recall"], good["f1"]) == (1.0, 1.0, 1.0)
    assert (good["matched"], good["missed"], good["false"]) == (2, 0, 0)
    assert [e["matched"] for e in good["episodes"]] == [True, True]
    assert 0 <= good["onset_delay_p50_s"] <= 6
    assert good["calls"] > 10 and good["tokens"] > 0 and good["cost"] is None
    assert good["evaluations_by_trigger"] == {"tick": good["calls"]}
    assert (blind["recall"], blind["f1"], blind["matched"]) == (0.0, 0.0, 0)
    assert doc["video_seconds"] == pytest.approx(45, abs=0.5)
    assert (tmp_path / "report.html").is_file() and (tmp_path / "report-1.png").is_file()


def test_bad_labels_name_file_line_and_field(tmp_path: Path, recording, capsys) -> None:
    video, _ = recording
    bad = tmp_path / "labels.jsonl"
    bad.write_text('{"stream": "lobby", "start": 1, "end": 2}\n'
                   '{"stream": "lobby", "start": 5, "end": 3, "label": "event"}\n')
    code, _, err = backtest(tmp_path, MOTION_RULES, video, bad, capsys)
    assert code == 2
    assert err.strip() == f"{bad}:2: end: before start"


class TruthfulUpstream:
    """An OpenAI-compatible model that answers from the recording's ground truth.

    Each frame of a window reaches it after a ``[stream ... frame N at t=12.345s]``
    label, so it knows the video time of the newest frame. Every 7th request fails with
    HTTP 500 and every 5th is not JSON (the repair round then gets a good answer).
    Usage is 100 prompt + 10 completion tokens per answer.
    """

    def __init__(self, events: list[tuple[float, float]]) -> None:
        self.events = events
        self.requests = 0
        self.failures = 0
        self.prompt_tokens = self.completion_tokens = 0
        self._lock = threading.Lock()

    def __call__(self, request) -> tuple:
        body = request.json()
        with self._lock:
            self.requests += 1
            n = self.requests
        repair = any(m.get("role") == "assistant" for m in body["messages"])
        if n % 7 == 0 and not repair:
            self.failures += 1
            return reply(500, "upstream overloaded")
        text = " ".join(part.get("text", "") for m in body["messages"]
                        if isinstance(m.get("content"), list) for part in m["content"])
        times = [float(x.split("s]")[0]) for x in text.split(" at t=")[1:]]
        t = max(times) if times else 0.0
        present = any(start <= t < end for start, end in self.events)
        content = ("I think so!" if n % 5 == 0 and not repair
                   else json.dumps({"object": present}))
        with self._lock:
            self.prompt_tokens += 100
            self.completion_tokens += 10
        return reply(200, {"id": f"c{n}", "object": "chat.completion", "created": 0,
                           "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 10,
                                     "total_tokens": 110}})


def test_an_upstream_model_scores_errors_and_cost(tmp_path: Path, recording, capsys) -> None:
    video, labels = recording
    truth = [(x["start"], x["end"]) for x in map(json.loads, labels.read_text().splitlines())]
    upstream = TruthfulUpstream(truth)
    with HttpReceiver() as receiver:
        receiver.routes["/v1/chat/completions"] = upstream
        config = f"""\
overshoot:
  base_url: embedded
  model: vlm
  prices:
    vlm: {{input_per_mtok: 3.0, output_per_mtok: 15.0, per_call: 0.001}}
  embedded:
    upstreams:
      - base_url: {receiver.url("/v1")}
        models: {{vlm: truthful}}
rules:
  - name: lobby-object
    stream: lobby
    every: 1s
    window: 1s
    max_fps: 2
    prompt: Is there an object in the lobby?
    schema: {{object: boolean}}
streams:
  - {{name: lobby, source: testsrc, fps: 5, width: 320, height: 240}}
"""
        code, doc, err = backtest(tmp_path, config, video, labels, capsys,
                                  "--concurrency", "1")
    assert code == 0, err
    (result,) = doc["results"]
    assert (result["precision"], result["recall"]) == (1.0, 1.0)
    assert result["model_errors"] == upstream.failures > 0
    assert result["invalid_answers"] == 0  # every malformed answer was repaired
    assert (result["prompt_tokens"], result["completion_tokens"]) == (
        upstream.prompt_tokens, upstream.completion_tokens)
    expected = (upstream.prompt_tokens * 3.0 + upstream.completion_tokens * 15.0) / 1e6 + (
        result["calls"] * 0.001)
    assert result["cost"] == pytest.approx(expected)
    assert 0 < result["calls"] < upstream.requests


async def test_the_html_report_opens_in_a_browser(tmp_path: Path, recording) -> None:
    video, labels = recording
    report = tmp_path / "report.html"
    config = tmp_path / "watcher.yaml"
    config.write_text(MOTION_RULES)
    code = await asyncio.to_thread(main, [
        "backtest", "-c", str(config), "--video", str(video), "--labels", str(labels),
        "--rules", "lobby-motion", "--report", str(report)])
    assert code == 0
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(report.as_uri())
        loaded = await page.evaluate("Array.from(document.images).map(i => i.complete && "
                                     "i.naturalWidth > 0)")
        assert loaded == [True]
        assert "lobby-motion" in await page.inner_text("table")
        await page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert errors == []


SHIPPED_PACKS = Path(__file__).resolve().parents[2] / "rules"


def local_vision_packs() -> list[Path]:
    """The shipped packs whose every rule is pinned to local/vision (the others need a VLM)."""
    import yaml

    packs = []
    for path in sorted(SHIPPED_PACKS.glob("*.yaml")):
        rules = (yaml.safe_load(path.read_text()) or {}).get("rules") or []
        if rules and all(r.get("model") == "local/vision" for r in rules):
            packs.append(path)
    return packs


@pytest.mark.parametrize("pack", local_vision_packs(), ids=lambda p: p.stem)
def test_shipped_pack_finds_every_scripted_person(pack: Path, tmp_path: Path, capsys) -> None:
    """A regression test of the pack: two people walk through a 640x480 room, 45 s apart
    (longer than any keep_firing_for, so the episodes stay apart); every rule of the pack
    must fire on both and nowhere else (a firing in a cooldown is still an episode)."""
    video = tmp_path / "room.mp4"
    labels = write_recording(video, seconds=68, width=640, height=480, events=("person",),
                             start=8, period=45, duration=12, stream="room")
    write_labels(tmp_path / "labels.jsonl", labels)
    config = (f"overshoot: {{base_url: embedded}}\ninclude:\n  - {{path: {pack}, stream: room}}\n"
              "streams:\n  - {name: room, source: testsrc, fps: 5, width: 640, height: 480}\n")
    code, doc, err = backtest(tmp_path, config, video, tmp_path / "labels.jsonl", capsys)
    assert code == 0, err
    assert doc["results"], err
    for result in doc["results"]:
        assert (result["rule"], result["recall"], result["precision"]) == (
            result["rule"], 1.0, 1.0), result
