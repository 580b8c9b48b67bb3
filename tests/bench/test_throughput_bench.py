"""`make bench` itself keeps working (it once broke silently when officers became accounts): a tiny
run of bench/throughput.py must set its gateway up the way an operator does and print its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"


def test_the_throughput_benchmark_runs_and_prints_its_figures():
    run = subprocess.run([sys.executable, str(BENCH), "--requests", "20", "--clients", "1", "--workers", "1",
                          "--children", "5", "--bare-iterations", "5"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "exchanges/s" in run.stdout and "errors 0" in run.stdout


def test_the_presigned_mode_measures_the_server_and_prints_its_figures():
    run = subprocess.run([sys.executable, str(BENCH), "--presigned", "40", "--submit-batches", "2", "--workers", "1",
                          "--children", "5", "--bare-iterations", "5", "--signing-key", "ec"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    for figure in ("exchanges/s", "errors 0", "x its signature work", "SubmitUpdates", "signing key EC secp256r1"):
        assert figure in run.stdout, run.stdout
