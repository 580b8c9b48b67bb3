"""bench/audit_cost.py keeps working: a tiny run on SQLite and on PostgreSQL (two processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import BACKENDS
from tests.support import POSTGRES_ADMIN_URL

BENCH = Path(__file__).resolve().parents[2] / "bench" / "audit_cost.py"


def test_the_audit_cost_benchmark_runs_on_each_backend():
    runs = [[]]
    if "postgresql" in BACKENDS:
        runs.append(["--database-url", POSTGRES_ADMIN_URL, "--seconds", "0.5"])
    for extra in runs:
        run = subprocess.run([sys.executable, str(BENCH), "--entries", "20", *extra],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        assert "the audit adds" in run.stdout
        if extra:
            assert "2 processes" in run.stdout
