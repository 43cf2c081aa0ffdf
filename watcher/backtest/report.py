"""A backtest's results: one JSON object, a self-contained HTML page, PNG timelines.

``--json`` prints ``{"results": [...]}``, one entry per (rule, stream, model)
with ``precision``, ``recall``, ``f1``, ``onset_delay_p50_s``,
``onset_delay_p95_s``, ``false_alarm_minutes_per_hour``, ``calls``,
``tokens``, ``cost`` and the ``episodes`` (times in seconds from the
recording's start), plus counts of matched, missed and false episodes,
invalid answers, fallbacks, calls saved by ``skip_unchanged`` and
evaluations by trigger.

The HTML report is one file: its timeline figures (one per rule, stream and
model: labels, firing episodes and the chart of one answer field) are PNGs
embedded as data URLs, and also written beside it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from watcher.backtest.labels import Label
from watcher.backtest.runs import ReplayResult, RuleRun
from watcher.backtest.score import percentile, score


def model_cost(tokens_by_model: Mapping[str, tuple[int, int, int]],
               prices: Mapping[str, Any]) -> float | None:
    """Estimated cost from each model's calls and tokens; None if no model has a price."""
    total, priced = 0.0, False
    for model, (calls, prompt, completion) in tokens_by_model.items():
        price = prices.get(model)
        if price is None:
            continue
        priced = True
        total += (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1e6
        total += calls * price.per_call
    return round(total, 6) if priced else None


def result_rows(replay: ReplayResult, labels: Sequence[Label], prices: Mapping[str, Any],
                ) -> list[dict[str, Any]]:
    rows = []
    for run in replay.runs:
        own = [lb for lb in labels if lb.applies_to(run.rule.name, replay.stream)]
        s = score(run.episodes, own, replay.duration_s)
        stats = run.runner.stats
        rows.append({
            "rule": run.rule.name, "stream": replay.stream, "model": run.model,
            "precision": round(s.precision, 4), "recall": round(s.recall, 4),
            "f1": round(s.f1, 4),
            "onset_delay_p50_s": _round(percentile(s.onset_delays_s, 0.5)),
            "onset_delay_p95_s": _round(percentile(s.onset_delays_s, 0.95)),
            "false_alarm_minutes_per_hour": round(s.false_alarm_minutes_per_hour, 3),
            "calls": run.calls, "tokens": run.prompt_tokens + run.completion_tokens,
            "prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
            "cost": model_cost(run.tokens_by_model, prices),
            "matched": s.matched, "missed": s.missed, "false": s.false,
            "labels": sum(lb.is_event for lb in own),
            "calls_saved_by_skip_unchanged": stats.skipped_unchanged,
            "invalid_answers": stats.invalid_answers, "model_errors": stats.model_errors,
            "fallbacks_used": run.fallbacks, "evaluations_by_trigger": dict(run.triggers),
            "episodes": [e.to_json() for e in run.episodes],
        })
    return rows


def report_json(replay: ReplayResult, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"video_seconds": round(replay.duration_s, 3), "frames": replay.frames,
            "wall_seconds": round(replay.wall_s, 3),
            "speed": round(replay.duration_s / replay.wall_s, 2) if replay.wall_s else None,
            "results": rows}


def timeline_png(run: RuleRun, labels: Sequence[Label], stream: str, duration_s: float,
                 ) -> bytes:
    """Labels, firing episodes and the answer field over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (bands, chart) = plt.subplots(2, 1, figsize=(10, 3.2), sharex=True,
                                       gridspec_kw={"height_ratios": [1, 2]})
    try:
        for label in labels:
            if label.applies_to(run.rule.name, stream):
                color = "#2e7d32" if label.is_event else "#9e9e9e"
                bands.axvspan(label.start, label.end, ymin=0.55, ymax=0.95, color=color)
        for episode in run.episodes:
            bands.axvspan(episode.start, max(episode.end, episode.start + 0.2), ymin=0.05,
                          ymax=0.45, color="#c62828" if not episode.matched else "#1565c0")
        bands.set_yticks([0.25, 0.75], ["firing", "labels"])
        bands.set_ylim(0, 1)
        bands.set_title(f"{run.rule.name} on {stream} — {run.model}", fontsize=10)
        xs = [p.t for p in run.points if p.value is not None]
        ys = [p.value for p in run.points if p.value is not None]
        chart.step(xs, ys, where="post", color="#37474f", linewidth=1)
        chart.set_ylabel(run.field or "answer", fontsize=9)
        chart.set_xlabel("seconds from the recording's start", fontsize=9)
        chart.set_xlim(0, max(duration_s, 1.0))
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()
    finally:
        plt.close(fig)


def write_html(path: Path, replay: ReplayResult, rows: list[dict[str, Any]],
               labels: Sequence[Label]) -> list[Path]:
    """Write the report and its PNGs (``<report stem>-<n>.png``); return the PNG paths."""
    pngs: list[Path] = []
    figures = []
    for n, run in enumerate(replay.runs, start=1):
        image = timeline_png(run, labels, replay.stream, replay.duration_s)
        png = path.with_name(f"{path.stem}-{n}.png")
        png.write_bytes(image)
        pngs.append(png)
        data = base64.b64encode(image).decode()
        alt = html.escape(f"timeline of {run.rule.name} with {run.model}")
        figures.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                       f"<figcaption>{alt}</figcaption></figure>")
    columns = ["rule", "model", "precision", "recall", "f1", "matched", "missed", "false",
               "onset_delay_p50_s", "onset_delay_p95_s", "false_alarm_minutes_per_hour",
               "calls", "tokens", "cost", "calls_saved_by_skip_unchanged", "invalid_answers",
               "fallbacks_used"]
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>"
                                    for c in columns) + "</tr>" for row in rows)
    summary = html.escape(f"{replay.stream}: {replay.duration_s:.1f} s of video, "
                          f"{replay.frames} frames, replayed in {replay.wall_s:.1f} s")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>watcher backtest</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #212121; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #cfd8dc; padding: .25rem .5rem; text-align: right; }}
th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
figure {{ margin: 1rem 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Backtest</h1>
<p>{summary}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>Labels: green (event), grey (false alarm). Firing episodes: blue (matched a label),
red (false alarm).</p>
{''.join(figures)}
<script type="application/json" id="results">{html.escape(json.dumps(rows))}</script>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return pngs


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
