"""A gateway on this machine, driven the way an operator would: `contactgate` commands to set up the
home and organisations, `contactgate serve` in a child process on a free loopback port.

Used by `contactgate demo`, the benchmark and the tests.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from click.testing import CliRunner

from gateway.files import write_private


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalGateway:
    home: Path
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str | None = None
    echo: bool = False  # print each command and its output, as the demo does
    extra_env: dict = field(default_factory=dict)  # e.g. CONTACTGATE_RATE_LIMIT_PER_USER for the server
    start_new_session: bool = False  # the server in its own session: a terminal's Ctrl-C does not reach it
    port: int = 0
    process: subprocess.Popen | None = None
    certs: dict[str, Path] = field(default_factory=dict)

    def cli(self, *args: str, expect_ok: bool = True):
        from gateway.cli import main

        base = ["--home", str(self.home)]
        if self.database_url:
            base += ["--database-url", self.database_url]
        if self.redis_url:
            base += ["--redis-url", self.redis_url]
        result = CliRunner().invoke(main, [*base, *args], catch_exceptions=False)
        if self.echo:
            print(f"$ contactgate {shlex.join(args)}")
            for line in result.output.rstrip().splitlines():
                print(f"    {line}")
        if expect_ok and result.exit_code != 0:
            raise RuntimeError(f"contactgate {' '.join(args)} failed:\n{result.output}")
        return result

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTGATE_")}
        env["CONTACTGATE_HOME"] = str(self.home)
        if self.database_url:
            env["CONTACTGATE_DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["CONTACTGATE_REDIS_URL"] = self.redis_url
        if self.redis_prefix:
            env["CONTACTGATE_REDIS_PREFIX"] = self.redis_prefix
        env.update(self.extra_env)
        return env

    def add_org(self, code: str, kind: str, scopes: list[str] | None = None, *, approve: bool = True,
                proposer: str = "officer-a", approver: str = "officer-b") -> Path:
        """Register, (propose and approve) accreditation, and issue a certificate into clients/<code>."""
        self.cli("org", "add", code, "--name", f"{code} organisation", "--kind", kind)
        if scopes:
            expires = (dt.date.today() + dt.timedelta(days=365)).isoformat()
            self.cli("org", "accredit", code, *[a for s in scopes for a in ("--scope", s)],
                     "--expires", expires, "--officer", proposer, "--evidence", "information sharing agreement")
            if approve:
                self.cli("org", "approve", code, "--officer", approver)
        return self.issue_cert(code, code.lower())

    def issue_cert(self, code: str, name: str) -> Path:
        out = self.home / "clients" / name
        self.cli("cert", "issue", code, "--out-dir", str(out))
        self.certs[name] = out
        return out

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, workers: int = 2, timeout_s: float = 30) -> None:
        self.port = free_port()
        log_path = self.home / "server.log"
        write_private(log_path, b"")  # 0600: `serve` refuses a home holding files others can read
        log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=self.start_new_session)
        log.close()
        client_dir = next(iter(self.certs.values()))
        session = requests.Session()
        session.cert = (str(client_dir / "cert.pem"), str(client_dir / "key.pem"))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if session.get(f"{self.url}/healthz", verify=str(client_dir / "ca.pem"), timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gateway did not start:\n" + self.server_log())
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def server_log(self) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def client(self, name: str, **kwargs):
        from connectors.client import GatewayClient

        return GatewayClient.from_directory(self.url, self.certs[name], **kwargs)
