"""Clients the project did not write, against the real gateway (the session `gateway` fixture from
tests/conftest.py: SQLite + embedded store, PostgreSQL + Redis)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_PROJECT = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node_soap():
    """Run tests/interop/node/client.js (node-soap, pinned in package.json) with a JSON job; returns
    its parsed output. `make test` installs the pinned packages (npm ci); without node the tests
    are skipped."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the node-soap interoperability tests need Node.js 20")
    if not (NODE_PROJECT / "node_modules" / "soap" / "package.json").exists():
        pytest.fail("node-soap is not installed: run `make test`, or `npm ci --prefix tests/interop/node`")

    def run(job: dict) -> list[dict]:
        done = subprocess.run([node, str(NODE_PROJECT / "client.js")], input=json.dumps(job), capture_output=True,
                              text=True, timeout=120)
        output = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
        assert done.returncode == 0 and "results" in output, (done.stdout[-3000:], done.stderr[-3000:])
        return output["results"]

    return run


def node_job(gateway, client_name: str, calls: list[dict], **security) -> dict:
    """A job for client.js: the WSDL from the live gateway, the organisation's files as `contactgate
    cert issue` wrote them, extra WSSecurityCert options in ``security``."""
    directory = gateway.certs[client_name]
    job = {"wsdl": f"{gateway.url}/soap/v1?wsdl", "key": str(directory / "key.pem"),
           "cert": str(directory / "cert.pem"), "ca": str(directory / "ca.pem"), "calls": calls}
    if security:
        job["security"] = security
    return job
