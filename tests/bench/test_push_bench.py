"""bench/push.py keeps working: a tiny run pushes its extract end to end and prints its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "push.py"


def test_the_push_benchmark_runs_and_prints_its_figures():
    run = subprocess.run([sys.executable, str(BENCH), "--rows", "50", "--workers", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "rows/s end to end" in run.stdout and "rejected 0" in run.stdout and "nothing changed" in run.stdout
