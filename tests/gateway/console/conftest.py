"""A registry home per backend and the console's Flask app on it (real database, real audit chain,
real argon2id and TOTP). The console's clock is injected: each TOTP code is good once, so a fresh
code means moving the clock on 30 s rather than waiting for it. `running_console` starts the real
thing, `contactgate console` in a subprocess, for the tests that need its server."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest
import requests

from gateway.config import Settings
from contactgate_local import free_port
from gateway.console import create_console
from gateway.files import write_private
from tests.conftest import TEST_ARGON2, _database
from tests.gateway.console.flood import FromAddress
from tests.support import Gateway

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    def __init__(self):
        self.now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)  # past the CLI's codes

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += dt.timedelta(**delta)


class Browser:
    """One officer's cookie jar on the console (a Flask test client over https)."""

    def __init__(self, app, gateway: Gateway, clock: Clock):
        self.client = app.test_client()
        self.client.environ_base["wsgi.url_scheme"] = "https"
        self.gateway, self.clock = gateway, clock
        self.officer_id = None
        self.csrf = None

    def code(self, officer_id: str | None = None) -> str:
        """A code never used before: the clock moves on one TOTP step first."""
        self.clock.advance(seconds=30)
        _, secret = self.gateway.officer_secrets(officer_id or self.officer_id)
        return pyotp.TOTP(secret).at(self.clock.now)

    def password(self, officer_id: str | None = None) -> str:
        return self.gateway.officer_secrets(officer_id or self.officer_id)[0]

    def get(self, path: str, **kw):
        response = self.client.get(path, base_url="https://localhost", **kw)
        found = CSRF.search(response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True, step_up: bool = False, **kw):
        data = dict(data or {})
        if csrf:
            if self.csrf is None:
                self.get("/login")
            data.setdefault("csrf_token", self.csrf)
        if step_up:
            data.setdefault("password", self.password())
            data.setdefault("code", self.code())
        return self.client.post(path, data=data, base_url="https://localhost",
                                headers={"Referer": "https://localhost/"}, **kw)

    def sign_in(self, officer_id: str):
        self.officer_id = officer_id
        self.get("/login")
        response = self.post("/login", {"officer": officer_id, "password": self.password(),
                                        "code": self.code()})
        assert response.status_code == 302, response.get_data(as_text=True)
        self.get("/")
        return self


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry_home(request, tmp_path_factory):
    backend = request.param
    home = tmp_path_factory.mktemp(f"console-{backend}")
    with _database(backend) as url:
        gw = Gateway(backend=backend, home=home, database_url=url, redis_url=None)
        gw.cli("init")
        gw.add_org("LA", "local_authority", ["push", "query"])
        yield gw
        gw.stop()


@pytest.fixture(scope="module")
def clock():
    return Clock()


# The tests make many sign-in attempts from one address within a moment of the injected clock: the
# per-address throttle (gateway.console.throttle) has tests of its own, with its own settings.
UNTHROTTLED = {"CONTACTGATE_SIGNIN_PER_MINUTE": "100000"}


@pytest.fixture(scope="module")
def console(registry_home, clock):
    settings = Settings.from_env(UNTHROTTLED, home=str(registry_home.home), database_url=registry_home.database_url)
    app = create_console(settings, clock=clock)
    yield app
    app.extensions["contactgate"]["engine"].dispose()


@pytest.fixture
def cheap_argon2(registry_home, monkeypatch):
    """In a module on production_argon2_module: the officers' passwords hashed again with argon2id
    at TEST_ARGON2 (tests/conftest.py), and the console's hasher
    (and so its dummy hash for an unknown or disabled account) set to the same cost: every sign-in
    is still one real argon2id verification, all at one cost, only cheaper. For tests about which
    attempts are refused, not about what a refusal costs (test_a_refused_sign_in_costs_the_same_...
    keeps the production cost). The production hashes are put back afterwards."""
    from argon2 import PasswordHasher
    from sqlalchemy import select, update

    from gateway import officers as accounts
    from gateway.db import officers

    cheap = PasswordHasher(**TEST_ARGON2)
    monkeypatch.setattr(accounts, "_HASHER", cheap)
    monkeypatch.setattr(accounts, "_DUMMY_HASH", None)
    with registry_home.engine.begin() as conn:
        kept = dict(conn.execute(select(officers.c.officer_id, officers.c.password_hash)).all())
        for officer_id in kept:
            try:
                password = registry_home.officer_secrets(officer_id)[0]
            except KeyError:  # added by a test, its password not kept: it keeps its hash
                continue
            conn.execute(update(officers).where(officers.c.officer_id == officer_id)
                         .values(password_hash=cheap.hash(password)))
    yield cheap
    with registry_home.engine.begin() as conn:
        for officer_id, encoded in kept.items():
            conn.execute(update(officers).where(officers.c.officer_id == officer_id)
                         .values(password_hash=encoded))


@pytest.fixture
def browser(console, registry_home, clock):
    def make(officer_id: str | None = None) -> Browser:
        b = Browser(console, registry_home, clock)
        return b.sign_in(officer_id) if officer_id else b
    return make


# ---- `contactgate console` as a user starts it --------------------------------------------------

@dataclasses.dataclass
class RunningConsole:
    """A `contactgate console` subprocess on a free loopback port, its log in the home."""

    home: Gateway
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.home.home / "ca" / "ca.pem")

    def session(self, source: str | None = None) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE, if set, wins over session.verify
        session.verify = self.ca
        if source is not None:
            session.mount("https://", FromAddress(source))
        return session

    def sign_in(self, officer_id: str, source: str | None = None) -> requests.Session:
        """A session signed in as ``officer_id`` (password and an unused TOTP code)."""
        return self.signed_in(officer_id, source)[0]

    def signed_in(self, officer_id: str, source: str | None = None) -> tuple[requests.Session, requests.Response]:
        """A session signed in as ``officer_id``, and the answer to its sign-in (the dashboard it
        was redirected to)."""
        session = self.session(source)
        page = session.get(f"{self.url}/login", timeout=15)
        token = CSRF.search(page.text).group(1)
        password, _ = self.home.officer_secrets(officer_id)
        signed = session.post(f"{self.url}/login", headers={"Referer": f"{self.url}/login"}, timeout=15,
                              data={"csrf_token": token, "officer": officer_id, "password": password,
                                    "code": self.home.totp_code(officer_id)})
        assert signed.status_code == 200 and "Dashboard" in signed.text, signed.text
        return session, signed


@contextlib.contextmanager
def running_console(home: Gateway, extra_env: dict | None = None, workers: int = 1, start_within_s: float = 90,
                    command: str = "console"):
    """``command``: `console`, or `portal` (the practitioners' portal: tests/gateway/portal)."""
    port = free_port()
    log = home.home / f"{command}-{port}.log"
    write_private(log, b"")  # the console refuses a home holding files others can read
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "gateway", command, "--bind", f"127.0.0.1:{port}",
                                    "--workers", str(workers)], env={**home.env(), **(extra_env or {})},
                                   stdout=out, stderr=subprocess.STDOUT)
    running = RunningConsole(home, process, port, log)
    try:
        deadline = time.monotonic() + start_within_s
        while True:
            try:
                requests.get(f"{running.url}/login", verify=running.ca, timeout=2)
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {command} did not start:\n" + log.read_text())
                time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
