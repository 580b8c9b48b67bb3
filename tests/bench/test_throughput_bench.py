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


def test_the_presigned_mode_drives_several_nodes_behind_nginx():
    from contactgate_local import nginx

    if not nginx.available():
        import os

        import pytest

        if os.environ.get("CONTACTGATE_REQUIRE_NGINX"):
            raise RuntimeError("nginx with its njs module is needed here (make test installs them)")
        pytest.skip("nginx and libnginx-mod-http-js are not installed")
    from tests.support import REDIS_URL, postgres_database

    with postgres_database() as url:
        run = subprocess.run([sys.executable, str(BENCH), "--presigned", "40", "--submit-batches", "1", "--nodes", "2",
                              "--workers", "1", "--children", "5", "--bare-iterations", "5",
                              "--database-url", url, "--redis-url", REDIS_URL],
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    for figure in ("2 nodes behind nginx", "errors 0", "nginx ", "x its signature work"):
        assert figure in run.stdout, run.stdout
