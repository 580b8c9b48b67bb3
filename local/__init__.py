"""A whole ContactGate on this machine: a gateway driven the way an operator would (`contactgate`
commands to set up the home and organisations, `contactgate serve` in a child process on a free
loopback port), and organisations calling it through the SDK (`LocalGateway.client`).

It stands on both sides of the line between `gateway/` and `connectors/`, so it is neither: used by
`contactgate demo`, the benchmarks and the tests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from click.testing import CliRunner

from connectors.client import GatewayClient
from gateway.files import private_dir, write_private

# Throwaway officer accounts for a local gateway (the demo, the tests, the benchmarks): passwords
# and TOTP secrets are made fresh for each home, kept in <home>/local/officers.json (0600), their
# sessions beside it.
LOCAL_OFFICERS = {
    "officer-a": ("Officer A", ["officer", "data_quality", "auditor"]),
    "officer-b": ("Officer B", ["officer", "data_quality", "auditor"]),
    "senior-s": ("Senior Officer S", ["senior_officer"]),
    "senior-t": ("Senior Officer T", ["senior_officer"]),
    "alice": ("Alice", ["officer"]), "bob": ("Bob", ["officer"]), "carol": ("Carol", ["officer"]),
    "dora": ("Dora", ["data_quality"]), "dm-1": ("Data Manager 1", ["data_quality"]),
    "dq-officer": ("DQ Officer", ["data_quality"]), "auditor-1": ("Auditor 1", ["auditor"]),
}
DEFAULT_OFFICER = "officer-a"
# Commands that act as a signed-in officer (the rest need no session).
_OFFICER_COMMANDS = {"org", "cert", "review", "officer", "whoami", "trust", "keys", "signing-key", "hsm", "proxy",
                     "linkage", "restore"}
_SESSIONLESS = {("cert", "crl"), ("audit", "verify")}


# What `serve` says when its port or its metrics port is taken (gunicorn; gateway.metrics).
_PORT_TAKEN = ("Connection in use", "cannot serve metrics on")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_LOCAL_PASSWORDS: dict[tuple[str, str], tuple[str, str]] = {}


def _local_password(officer_id: str) -> tuple[str, str]:
    """A local officer's password and its argon2id hash, made once per process and argon2 cost
    (hashing costs ~0.1 s, and the tests make many homes). The hash is made by the hasher the
    officers' accounts use in this process: the product's (the demo, the benchmarks), or the one the
    tests set (tests/conftest.py), so that a home's first sign-in pays the cost its later ones do."""
    from gateway import officers

    hasher = officers._HASHER
    key = (officer_id, f"{hasher.time_cost}/{hasher.memory_cost}/{hasher.parallelism}")
    if key not in _LOCAL_PASSWORDS:
        password = f"local-{officer_id}-" + os.urandom(9).hex()
        _LOCAL_PASSWORDS[key] = (password, hasher.hash(password))
    return _LOCAL_PASSWORDS[key]


def proposal_id(output: str) -> str:
    """The id of the proposal a command printed ("proposal 7 (accreditation) ...")."""
    found = re.search(r"proposal (\d+) \(", output)
    if not found:
        raise RuntimeError(f"no proposal in:\n{output}")
    return found.group(1)


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
    metrics_port: int = 0
    metadata_port: int = 0
    process: subprocess.Popen | None = None
    certs: dict[str, Path] = field(default_factory=dict)

    def cli(self, *args: str, expect_ok: bool = True, officer: str | None = None, input: str | None = None):
        """Run `contactgate ARGS` on this home. An officer command runs signed in as ``officer`` (or
        the one its --officer names, or DEFAULT_OFFICER), signing in first when needed."""
        from gateway.cli import main

        args = list(args)
        if args[:1] == ["init"] and "--officers" not in args:
            args += ["--officers", str(self._local_officers_file())]
        env = {}
        if officer is None and "--officer" in args:
            officer = args[args.index("--officer") + 1]
        if self._needs_officer(args) or officer is not None:
            env["CONTACTGATE_SESSION"] = str(self.session(officer or DEFAULT_OFFICER))
        result = self._invoke(main, args, env, input)
        # idle or past the session's limit (a long run on a busy machine), or ended: sign in afresh, once
        if result.exit_code != 0 and env and any(why in result.output for why in ("sign in again", "session has expired", "not signed in")):
            env["CONTACTGATE_SESSION"] = str(self.session(officer or DEFAULT_OFFICER, fresh=True))
            result = self._invoke(main, args, env, input)
        if self.echo:
            print(f"$ contactgate {shlex.join(args)}")
            for line in result.output.rstrip().splitlines():
                print(f"    {line}")
        if expect_ok and result.exit_code != 0:
            raise RuntimeError(f"contactgate {' '.join(args)} failed:\n{result.output}")
        return result

    def _invoke(self, main, args, env, input):
        base = ["--home", str(self.home)]
        if self.database_url:
            base += ["--database-url", self.database_url]
        if self.redis_url:
            base += ["--redis-url", self.redis_url]
        return CliRunner().invoke(main, [*base, *args], catch_exceptions=False, env=env, input=input)

    @staticmethod
    def _needs_officer(args: list[str]) -> bool:
        if not args or args[0] not in _OFFICER_COMMANDS and tuple(args[:2]) != ("audit", "report"):
            return False
        if args[0] == "restore":  # restoring an archive needs the backup key, not a session
            return args[1:2] == ["acknowledge"]
        return tuple(args[:2]) not in _SESSIONLESS and "--help" not in args

    def _local_officers_file(self) -> Path:
        import pyotp

        directory = self.home / "local"
        for d in (self.home, directory):
            if not d.exists():
                private_dir(d)
        path = directory / "officers.json"
        if not path.exists():
            entries = [{"id": officer_id, "name": name, "roles": roles, "local_password": password,
                        "password_hash": password_hash, "totp_secret": pyotp.random_base32(32)}
                       for officer_id, (name, roles) in LOCAL_OFFICERS.items()
                       for password, password_hash in [_local_password(officer_id)]]
            write_private(path, json.dumps(entries).encode())
        return path

    def officer_secrets(self, officer_id: str) -> tuple[str, str]:
        """(password, TOTP secret) of a local officer."""
        for entry in json.loads(self._local_officers_file().read_text()):
            if entry["id"] == officer_id:
                return entry["local_password"], entry["totp_secret"]
        raise KeyError(officer_id)

    def totp_code(self, officer_id: str) -> str:
        """A code the officer has not used yet: TOTP codes are good once, and tests sign in fast."""
        import pyotp

        _, secret = self.officer_secrets(officer_id)
        used = getattr(self, "_totp_steps", {})
        self._totp_steps = used
        step = max(int(time.time()) // 30, used.get(officer_id, -1) + 1)
        while step > int(time.time()) // 30 + 1:  # beyond the drift allowed: wait for the clock
            time.sleep(0.5)
        used[officer_id] = step
        return pyotp.TOTP(secret).at(step * 30)

    def session(self, officer_id: str, fresh: bool = False) -> Path:
        """The session file of a local officer, signed in on first use."""
        from gateway.cli import main

        path = self.home / "local" / f"session-{officer_id}.json"
        if fresh or not path.exists():
            password, _ = self.officer_secrets(officer_id)
            result = self._invoke(main, ["login", "--officer", officer_id, "--password-stdin", "--code",
                                         self.totp_code(officer_id)], {"CONTACTGATE_SESSION": str(path)},
                                  password + "\n")
            if self.echo:
                print(f"$ contactgate login --officer {officer_id} --password-stdin --code ******")
                for line in result.output.rstrip().splitlines():
                    print(f"    {line}")
            if result.exit_code != 0:
                raise RuntimeError(f"local officer {officer_id} could not sign in:\n{result.output}")
        return path

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
            proposed = self.cli("org", "accredit", code, *[a for s in scopes for a in ("--scope", s)],
                                "--expires", expires, "--evidence", "information sharing agreement",
                                officer=proposer)
            if approve:
                self.cli("org", "approve", code, "--proposal", proposal_id(proposed.output), officer=approver)
        return self.issue_cert(code, code.lower())

    def pending_proposal(self, code: str) -> str:
        """The id of the organisation's (first) pending proposal."""
        return proposal_id(self.cli("org", "show", code).output)

    def reinstate(self, code: str, proposer: str = "officer-a", approver: str = "officer-b",
                  reason: str = "the cause of the suspension is resolved") -> None:
        """Propose a reinstatement and have a second officer approve it."""
        proposed = self.cli("org", "reinstate", code, "--reason", reason, officer=proposer)
        self.cli("org", "approve", code, "--proposal", proposal_id(proposed.output), officer=approver)

    def issue_cert(self, code: str, name: str, *, proposer: str = "officer-a", approver: str = "officer-b",
                   key_type: str = "rsa") -> Path:
        """The organisation's credentials in clients/<name>, made as an organisation and its officers
        make them: the key and CSR on the organisation's side (`contactgate csr`), the certificate
        proposed by one officer (`cert issue --csr`) and signed when a second approves it
        (`cert approve --out-dir`)."""
        from connectors import credentials

        out = self.home / "clients" / name
        made = credentials.make_request(code, out, key_type=key_type)
        proposed = self.cli("cert", "issue", code, "--csr", str(made.request_path), officer=proposer)
        self.cli("cert", "approve", code, "--proposal", proposal_id(proposed.output), "--out-dir", str(out),
                 officer=approver)
        made.request_path.unlink()  # sent and signed; nothing in the home may be open to other users
        self.certs[name] = out
        return out

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def metadata_url(self) -> str:
        return f"https://127.0.0.1:{self.metadata_port}"

    def start(self, workers: int = 2, timeout_s: float = 90, attempts: int = 3) -> None:
        """Serve on free loopback ports. A port can be taken between `free_port` choosing it and the
        server binding it (another process on this machine choosing at the same moment): then the
        server says so and stops, and it is started again on other ports. ``timeout_s`` is a generous
        bound, as for the console and the portal: a start takes seconds on an idle machine, over 30 s
        on a shared one at a load of 17-20."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start(workers, timeout_s)
            except RuntimeError as exc:
                if attempt == attempts or not any(sign in str(exc) for sign in _PORT_TAKEN):
                    raise

    def _start(self, workers: int, timeout_s: float) -> None:
        self.port = free_port()
        self.metrics_port = free_port()  # /metrics, /readyz (gateway.metrics)
        self.metadata_port = free_port()  # the WSDL and XSD without a client certificate (gateway.metadata)
        log_path = self.home / "server.log"
        write_private(log_path, b"")  # 0600: `serve` refuses a home holding files others can read
        log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers), "--metrics-bind", f"127.0.0.1:{self.metrics_port}",
             "--metadata-bind", f"127.0.0.1:{self.metadata_port}", "--service-url", self.url],
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
        return GatewayClient.from_directory(self.url, self.certs[name], **kwargs)
