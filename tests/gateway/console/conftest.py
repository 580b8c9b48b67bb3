"""A registry home per backend and the console's Flask app on it (real database, real audit chain,
real argon2id and TOTP). The console's clock is injected: each TOTP code is good once, so a fresh
code means moving the clock on 30 s rather than waiting for it."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest

from gateway.config import Settings
from gateway.console import create_console
from tests.conftest import _database
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


@pytest.fixture(scope="module")
def console(registry_home, clock):
    settings = Settings.from_env({}, home=str(registry_home.home), database_url=registry_home.database_url)
    app = create_console(settings, clock=clock)
    yield app
    app.extensions["contactgate"]["engine"].dispose()


@pytest.fixture
def browser(console, registry_home, clock):
    def make(officer_id: str | None = None) -> Browser:
        b = Browser(console, registry_home, clock)
        return b.sign_in(officer_id) if officer_id else b
    return make
