"""The benchmarks' contract: every script takes ``--smoke``; a run that did no work FAILS."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
spec = importlib.util.spec_from_file_location("bench_verdict", BENCH / "_verdict.py")
assert spec is not None and spec.loader is not None
_verdict = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_verdict)

SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_there_are_benchmarks_to_run() -> None:
    assert {"scheduling.py", "skip_unchanged.py", "publish_cpu.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_accepts_smoke_and_ends_with_a_verdict(script: Path) -> None:
    calls = {node.func.attr if isinstance(node.func, ast.Attribute) else
             getattr(node.func, "id", None)
             for node in ast.walk(ast.parse(script.read_text()))
             if isinstance(node, ast.Call)}
    assert "add_smoke" in calls, f"{script.name} has no --smoke"
    assert "run_main" in calls, f"{script.name} does not end through _verdict.run_main"
    assert "finish" in calls, f"{script.name} prints no verdict line"


def test_met_needs_the_work_done(capsys: pytest.CaptureFixture[str]) -> None:
    check = _verdict.Verdict("demo")
    check.require_work(0, "model calls")
    check.require_no_errors(4781, "evaluation errors")
    assert check.finish(True, "p99 1 ms") == _verdict.FAILED_EXIT
    out = capsys.readouterr().out
    assert "FAILED (demo): no model calls; 4781 evaluation errors" in out
    assert "met" not in out


def test_a_missed_goal_is_not_a_failed_run(capsys: pytest.CaptureFixture[str]) -> None:
    check = _verdict.Verdict("demo")
    check.require_work(12, "model calls")
    assert check.finish(False, "p99 80 ms") == 0
    assert capsys.readouterr().out.strip() == "Goal MISSED: p99 80 ms"
    assert _verdict.Verdict("demo").finish(True, "p99 1 ms") == 0
    assert _verdict.Verdict("demo").finish(None, "3 %") == 0


def test_apply_smoke_only_with_the_flag() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600.0)
    _verdict.add_smoke(parser)
    assert _verdict.apply_smoke(parser.parse_args([]), seconds=2.0).seconds == 600.0
    assert _verdict.apply_smoke(parser.parse_args(["--smoke"]), seconds=2.0).seconds == 2.0
    with pytest.raises(AttributeError, match="secs"):
        _verdict.apply_smoke(parser.parse_args(["--smoke"]), secs=2.0)


def test_a_crashing_benchmark_prints_failed_and_exits_non_zero(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        f"import sys; sys.path.insert(0, {str(BENCH)!r})\n"
        "import _verdict\n"
        "def main():\n"
        "    raise AttributeError(\"'FakeStream' object has no attribute 'source_live'\")\n"
        "_verdict.run_main(main)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert "FAILED: AttributeError: 'FakeStream' object has no attribute 'source_live'" \
        in done.stdout
