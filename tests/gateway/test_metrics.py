"""Operable: `serve` publishes Prometheus metrics summed over its worker processes on a separate
loopback port that needs no client certificate, answers /readyz only while the database answers
("degraded" while Redis does not), and logs JSON lines whose request id is the exchange's audit entry's and X-Request-Id."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from connectors.client import GatewayClient, ReasonRequiredFault
from gateway.db import audit_log
from tests.support import child_update, free_port, private_gateway, redis_server, unique_name

REASON = dict(reason_code="care_coordination", reason_text="planning a joint visit")


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample of the Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    directory = tmp_path_factory.mktemp("metrics")
    with redis_server(directory / "redis") as redis:
        with private_gateway("sqlite", directory / "home", orgs={"LA": ("local_authority", ["push", "query"])},
                             workers=2, redis_url=redis.url) as gateway:
            yield gateway, redis


def metrics_url(gateway, path: str) -> str:
    return f"http://127.0.0.1:{gateway.metrics_port}{path}"


def test_exchanges_refusals_and_latency_are_counted_across_workers(served):
    gateway, _ = served
    la = gateway.client("la")
    for _ in range(6):  # several connections' worth: both workers answer some
        la.close()
        la.ping(user_id="it", role="onboarding")
    with pytest.raises(ReasonRequiredFault):
        la.find_child(user_id="sw1", role="social worker", reason_code=None, reason_text=None,
                      family_name="Nobody", date_of_birth="2010-01-01")
    message = la.build_request("SubmitUpdates", ChildUpdate=[child_update("m-1", unique_name("Metric"), "Mo",
                                                                          "2016-01-01")])
    la.post_raw("SubmitUpdates", message)
    la.post_raw("SubmitUpdates", message)  # a retry: answered "repeat"
    text = requests.get(metrics_url(gateway, "/metrics"), timeout=10).text
    assert sample(text, "contactgate_exchanges_total", operation="Ping", organisation="LA", outcome="accepted") == 6
    assert sample(text, "contactgate_exchanges_total", operation="FindChild", organisation="LA",
                  outcome="refused") == 1
    assert sample(text, "contactgate_refusals_total", fault_code="ReasonRequired") == 1
    assert sample(text, "contactgate_exchanges_total", operation="SubmitUpdates", organisation="LA",
                  outcome="accepted") == 1
    assert sample(text, "contactgate_exchanges_total", operation="SubmitUpdates", organisation="LA",
                  outcome="repeat") == 1
    assert sample(text, "contactgate_exchange_seconds_count", operation="Ping") == 6
    assert sample(text, "contactgate_exchange_seconds_bucket", operation="Ping", le="+Inf") == 6


def test_the_metrics_port_is_not_the_soap_port(served):
    gateway, _ = served
    la = gateway.client("la")
    assert la.session.get(f"{gateway.url}/metrics", timeout=10).status_code == 404
    assert requests.get(metrics_url(gateway, "/healthz"), timeout=10).text == "ok\n"
    assert la.session.get(f"{gateway.url}/readyz", timeout=10).text == "ready\n"  # on the SOAP port too


def test_json_log_lines_carry_the_request_id_of_the_audit_entry(served):
    gateway, _ = served
    la = gateway.client("la")
    message = la.build_request("Ping", Requester={"UserId": "logged", "Role": "onboarding"})
    response = la.session.post(la.endpoint, data=message, timeout=30, headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:contactgate:v1#Ping"'})
    request_id = response.headers["X-Request-Id"]
    with gateway.engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.request_id == request_id)).one()
    assert entry.user_id == "logged"
    lines = [json.loads(line) for line in (gateway.home / "server.log").read_text().splitlines() if line.strip()]
    [access] = [line for line in lines if line.get("request_id") == request_id]
    assert access["status"] == 200 and access["path"] == "/soap/v1" and access["level"] == "info"
    assert {"time", "logger", "message"} <= set(access)


def test_readyz_says_degraded_while_redis_is_down_and_the_failure_is_counted(served):
    gateway, redis = served
    assert requests.get(metrics_url(gateway, "/readyz"), timeout=10).status_code == 200
    redis.stop()
    try:
        ready = requests.get(metrics_url(gateway, "/readyz"), timeout=10)
        assert ready.status_code == 200 and ready.text.startswith("ready, degraded: redis: ")
        gateway.client("la").find_child(user_id="sw2", role="social worker", family_name="Nobody",
                                        date_of_birth="2010-01-01", **REASON)  # answered all the same
        text = requests.get(metrics_url(gateway, "/metrics"), timeout=10).text
        assert sample(text, "contactgate_backend_errors_total", backend="redis") >= 1
        assert "\ncontactgate_rate_degraded_total " in text
        assert sample(text, "contactgate_refusals_total", fault_code="Unavailable") == 0
    finally:
        redis.start()
    assert requests.get(metrics_url(gateway, "/readyz"), timeout=10).text == "ready\n"


def test_a_refusal_names_its_request_id_in_the_fault_the_audit_and_the_log(served):
    gateway, _ = served
    with pytest.raises(ReasonRequiredFault) as raised:
        gateway.client("la").get_contacts("0000-0000-0000-0000", user_id="sw3", role="social worker",
                                          reason_code=None, reason_text=None)
    request_id = raised.value.request_id
    assert re.fullmatch(r"[0-9a-f]{32}", request_id) and request_id in str(raised.value)
    with gateway.engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.request_id == request_id)).one()
    assert entry.outcome == "refused" and entry.fault_code == "ReasonRequired" and entry.user_id == "sw3"
    logged = [json.loads(line) for line in (gateway.home / "server.log").read_text().splitlines() if line.strip()]
    assert any(line.get("request_id") == request_id and line.get("status") == 500 for line in logged)


def started(gateway, process, port: int, log: Path, timeout_s: float = 60) -> bool:
    """Whether a `serve` on ``port`` answers /healthz (mutual TLS, as LA) before it exits."""
    session = requests.Session()
    client_dir = gateway.certs["la"]
    session.cert = (str(client_dir / "cert.pem"), str(client_dir / "key.pem"))
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if session.get(f"https://127.0.0.1:{port}/healthz", verify=str(client_dir / "ca.pem"), timeout=2).ok:
                return True
        except requests.RequestException:
            time.sleep(0.2)
    return False


def test_two_gateways_on_one_host_both_start_and_say_where_their_metrics_are(served, tmp_path):
    """Two more `serve` on the module's home, on other ports: one as started by default (no metrics
    port), one with CONTACTGATE_METRICS_BIND on port 0 (a free port, named in its start-up log)."""
    gateway, _ = served
    runs = []
    try:
        for name, extra in (("default", {}), ("free-port", {"CONTACTGATE_METRICS_BIND": "127.0.0.1:0"})):
            port, log = free_port(), tmp_path / f"{name}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--bind", f"127.0.0.1:{port}",
                                            "--workers", "1"], env={**gateway.env(), **extra},
                                           stdout=out, stderr=subprocess.STDOUT)
            runs.append((process, port, log))
        for process, port, log in runs:
            assert started(gateway, process, port, log), log.read_text()[-3000:]
        default_log, free_log = (log.read_text() for _, _, log in runs)
        assert "no metrics port" in default_log
        [where] = re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", free_log)
        assert int(where) != 0
        GatewayClient.from_directory(f"https://127.0.0.1:{runs[1][1]}", gateway.certs["la"]).ping(
            user_id="it", role="onboarding")
        answer = requests.get(f"http://127.0.0.1:{where}/metrics", timeout=10)
        assert sample(answer.text, "contactgate_exchanges_total", operation="Ping", organisation="LA",
                      outcome="accepted") == 1
    finally:
        for process, _, _ in runs:
            process.terminate()
            process.wait(15)


def worker_pids(master: int) -> set[int]:
    """The gunicorn master's children (its workers), from /proc."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == master:
                pids.add(int(entry))
    return pids


# Last in this module: it reloads the module's gateway (its workers are replaced).
def test_exchanges_are_still_counted_after_a_reload(served):
    """SIGHUP (a key rotation, a CA change: `systemctl reload`) replaces every worker; the new ones
    count into the same directory, the old ones' counts stay, nothing is logged as a failure."""
    gateway, _ = served
    master = gateway.process.pid
    before = requests.get(metrics_url(gateway, "/metrics"), timeout=10).text
    pings = sample(before, "contactgate_exchanges_total", operation="Ping", organisation="LA", outcome="accepted")
    old = worker_pids(master)
    os.kill(master, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while not (len(now := worker_pids(master)) == len(old) and now.isdisjoint(old)):
        assert time.monotonic() < deadline, "the workers were not replaced"
        time.sleep(0.2)
    la = gateway.client("la")
    for _ in range(4):
        la.close()
        la.ping(user_id="it", role="onboarding")
    answer = requests.get(metrics_url(gateway, "/metrics"), timeout=10)
    assert answer.status_code == 200
    assert sample(answer.text, "contactgate_exchanges_total", operation="Ping", organisation="LA",
                  outcome="accepted") == pings + 4
    assert "could not count" not in (gateway.home / "server.log").read_text()


def test_readyz_says_degraded_while_redis_answers_but_refuses_counts(tmp_path):
    """A Redis at its maxmemory answers PING but refuses the workers' counts (they are in degraded
    mode, gateway.store.redis_store): /readyz says so too, from the same kind of count."""
    from gateway.config import Settings
    from gateway.metrics import Readiness

    with redis_server(tmp_path / "redis") as redis:
        settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'ready.sqlite'}",
                            redis_url=redis.url)
        from gateway.db import make_engine, metadata

        metadata.create_all(make_engine(settings.database_url))  # readiness also asks for a pending restore
        readiness = Readiness(settings)
        assert readiness.check() == (True, "ready\n")
        redis.client().config_set("maxmemory-policy", "noeviction")
        redis.client().config_set("maxmemory", 1)
        ready, text = readiness.check()
        assert ready and text.startswith("ready, degraded: redis:"), text
