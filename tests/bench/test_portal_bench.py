"""`make bench-portal` keeps working: a tiny run of bench/portal.py (a few practitioners, a few
seconds a phase) sets its gateway and portal up as an operator does, signs its practitioners in and
prints its figures, with no error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "portal.py"


def test_the_portal_benchmark_runs_and_prints_pages_per_second_and_p95_per_page():
    run = subprocess.run([sys.executable, str(BENCH), "--users", "3", "--seconds", "3", "--children", "6",
                          "--soap-clients", "1", "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    for figure in ("portal alone:", "with SOAP load:", "pages/s", "contacts", "p95", "SOAP GetContacts alongside",
                   "load average", "errors 0"):
        assert figure in run.stdout, run.stdout
