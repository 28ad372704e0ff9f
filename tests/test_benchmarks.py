"""Every benchmark script starts: its imports resolve and its --help prints (a benchmark that no
longer imports broke silently once, when a helper it used left audiostem.models). Timings are
never asserted."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if p.name != "timing.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_benchmark_starts(script):
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout


def test_step_time_runs_with_and_without_autocast():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from timing import step_time
    finally:
        sys.path.pop(0)
    from audiostem import build_model

    model = build_model("patch4", "narrow", num_classes=3)
    for autocast in (None, __import__("torch").bfloat16):
        assert step_time(model, (1, 16, 32), batch=2, steps=1, autocast=autocast) > 0
