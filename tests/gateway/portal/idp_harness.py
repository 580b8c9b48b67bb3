"""A real OpenID provider for the portal's federated sign-in tests: panva's oidc-provider (npm,
pinned by tests/gateway/portal/idp/package-lock.json, installed by `make test`), started on a free
127.0.0.1 port with tests/gateway/portal/idp/provider.mjs; an organisation accredited for the test
module with its provider registered through the CLI (one officer proposes, a second approves), and a
portal started with plain-http providers on loopback allowed (CONTACTGATE_OIDC_INSECURE_HTTP_LOOPBACK)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gateway.files import write_private
from contactgate_local import free_port

IDP_DIR = Path(__file__).parent / "idp"
ONWARD = re.compile(r'id="onward" href="([^"]+)"')
CLIENT_ID = "contactgate-portal"


def node_ready() -> bool:
    return shutil.which("node") is not None and (IDP_DIR / "node_modules" / "oidc-provider").is_dir()


def rsa_key(kid: str) -> dict:
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)
    return key.as_dict(private=True)


@dataclasses.dataclass
class RunningProvider:
    process: subprocess.Popen
    port: int
    signing_key: dict  # the provider's private RSA JWK: tests forge tokens with it
    log: Path

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next_login(self, account: str, *, acr: str | None = None, amr: list[str] | None = None) -> None:
        answer = requests.post(f"{self.issuer}/test/next-login", data=json.dumps(
            {"accountId": account, "acr": acr, "amr": amr}), timeout=10, proxies={"http": None, "https": None})
        assert answer.status_code == 200, answer.text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_provider(directory: Path, port: int, clients: list[dict], accounts: dict, signing_key: dict) -> RunningProvider:
    config = directory / f"provider-{port}.json"
    write_private(config, json.dumps({"port": port, "jwks": {"keys": [signing_key]}, "clients": clients,
                                      "accounts": accounts, "cookie_key": "test-cookie-key-" + str(port)}).encode())
    log = directory / f"provider-{port}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(["node", str(IDP_DIR / "provider.mjs"), str(config)], cwd=IDP_DIR,
                                   stdout=out, stderr=subprocess.STDOUT)
    running = RunningProvider(process, port, signing_key, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{running.issuer}/.well-known/openid-configuration", timeout=2,
                            proxies={"http": None, "https": None}).status_code == 200:
                return running
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise RuntimeError("oidc-provider did not start:\n" + log.read_text())
        time.sleep(0.2)


def accredit(gateway, org: str, kind: str = "health") -> None:
    gateway.cli("org", "add", org, "--name", f"{org} organisation", "--kind", kind, officer="officer-a")
    expires = (dt.date.today() + dt.timedelta(days=365)).isoformat()
    proposed = gateway.cli("org", "accredit", org, "--scope", "query", "--expires", expires, "--evidence",
                           "information sharing agreement", officer="officer-a")
    proposal = re.search(r"proposal (\d+)", proposed.output).group(1)
    gateway.cli("org", "approve", org, "--proposal", proposal, officer="officer-b")


def client_metadata(registration: dict, portal_url: str, org: str) -> dict:
    return {"client_id": CLIENT_ID, "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256", "jwks": {"keys": [registration["public_jwk"]]},
            "redirect_uris": [f"{portal_url}/oidc/callback"], "post_logout_redirect_uris": [f"{portal_url}/login"],
            "backchannel_logout_uri": f"{portal_url}/oidc/backchannel-logout/{org}",
            "grant_types": ["authorization_code"], "response_types": ["code"]}


def federated_sign_in(portal, provider: RunningProvider, org: str, account: str, *, acr=None, amr=None,
                      session: requests.Session | None = None):
    """The whole flow over HTTP as a browser does it (the onward pages' links followed): the portal's
    /oidc/start, the provider (its login: ``account``), the portal's callback. (session, the last
    answer, the callback URL the provider sent the browser to)."""
    s = session or portal.session()
    provider.next_login(account, acr=acr, amr=amr)
    start = s.get(f"{portal.url}/oidc/start", params={"org": org}, timeout=15)
    assert start.status_code == 200, start.text
    url = ONWARD.search(start.text).group(1).replace("&amp;", "&")
    callback = None
    for _ in range(10):  # the provider's redirects, up to the portal's callback
        answer = s.get(url, allow_redirects=False, timeout=15)
        if answer.status_code in (302, 303) and answer.headers["Location"]:
            url = requests.compat.urljoin(url, answer.headers["Location"])
            if url.startswith(portal.url):
                callback = url
                break
            continue
        raise AssertionError(f"the provider stopped at {url}: {answer.status_code} {answer.text[:500]}")
    assert callback is not None
    answer = s.get(callback, timeout=30)
    if answer.status_code == 200 and ONWARD.search(answer.text):
        answer = s.get(requests.compat.urljoin(portal.url, ONWARD.search(answer.text).group(1)), timeout=15)
    return s, answer, callback


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def skip_without_node():
    return pytest.mark.skipif(not node_ready(), reason="node and tests/gateway/portal/idp/node_modules (make test) needed")
