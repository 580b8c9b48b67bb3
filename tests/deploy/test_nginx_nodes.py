"""The production layout, whole: the distribution's nginx with deploy/nginx/contactgate.conf doing
mutual TLS and forwarding the client certificate (Client-Cert, RFC 9440) to two gateway nodes
(`contactgate serve --behind-proxy`) that share PostgreSQL and Redis.

The proxy hop: nginx connects from 127.0.0.2 (``proxy_bind``), the only address in
CONTACTGATE_TRUSTED_PROXIES; a test that plays an attacker connects from 127.0.0.1 straight to a
node. Across the nodes: a replay sent to the other node is refused, a retried SubmitUpdates is applied
once, rate limits are shared, the audit chain stays whole, and a node stopped mid-push loses nothing
the client retries.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import os
import signal
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select

from connectors.client import GatewayClient
from connectors.push import parse_results
from contactgate_local import nginx
from contactgate_local.nginx import PROXY_ADDRESS, Cluster
from contactgate_wire.certificates import load_cert_pem
from contactgate_wire.soap import SOAP_ACTION_PREFIX, fault_code, parse_untrusted
from gateway.db import audit_log, source_records
from tests.support import REDIS_URL, Gateway, child_update, postgres_database, unique, unique_name

REASON = dict(reason_code="care_coordination", reason_text="planning a joint visit")
USER_LIMIT = 8  # CONTACTGATE_RATE_LIMIT_PER_USER on the nodes: low enough to reach in a test
PER_ADDRESS = 4  # CONTACTGATE_MAX_CONNECTIONS_PER_ADDRESS on the nodes

if not nginx.available():
    if os.environ.get("CONTACTGATE_REQUIRE_NGINX"):
        raise RuntimeError("nginx with its njs module is needed here (make test installs them)")
    pytest.skip("nginx and libnginx-mod-http-js are not installed (make test installs them)", allow_module_level=True)


def rfc9440(cert_dir: Path) -> str:
    der = load_cert_pem((cert_dir / "cert.pem").read_bytes()).public_bytes(Encoding.DER)
    return ":" + base64.b64encode(der).decode() + ":"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("nginx")
    with postgres_database() as url:
        gateway = Gateway("postgresql", tmp_path_factory.mktemp("cluster-home"), url, REDIS_URL)
        gateway.extra_env.update({"CONTACTGATE_TRUSTED_PROXIES": PROXY_ADDRESS,
                                  "CONTACTGATE_RATE_LIMIT_PER_USER": str(USER_LIMIT),
                                  "CONTACTGATE_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
                                  # Counting across the nodes needs Redis reached: on a busy machine
                                  # the 0.5 s default could time out and put a worker in degraded
                                  # mode (its own share of each limit, docs/operations.md section 5).
                                  "CONTACTGATE_REDIS_TIMEOUT": "5"})
        gateway.cli("init")
        gateway.add_org("LA", "local_authority", ["push", "query"])
        gateway.add_org("HEALTH", "health", ["query"])
        cluster = Cluster(gateway, prefix)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            gateway.stop()  # its engine
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{gateway.redis_prefix}:*"))
            if keys:
                client.delete(*keys)


def stored(cluster: Cluster, *source_record_ids: str) -> int:
    """How many of LA's source records with these ids the index holds (they are stored blinded)."""
    from gateway.index import sealed

    with cluster.gateway.engine.connect() as conn:
        v = sealed.vault_of(conn)
        blinded = [sealed.blind_source_id(v, "LA", srid) for srid in source_record_ids]
        return conn.execute(select(func.count()).select_from(source_records).where(
            source_records.c.org_code == "LA", source_records.c.source_record_id.in_(blinded))).scalar()


def audit_rows(cluster: Cluster, *conditions):
    with cluster.gateway.engine.connect() as conn:
        return conn.execute(select(audit_log).where(*conditions).order_by(audit_log.c.seq)).all()


def test_the_sdk_works_through_nginx_and_the_callers_address_is_audited(cluster):
    la, health = cluster.client("la"), cluster.client("health")
    family = unique_name("Proxied")
    [created] = la.submit_updates([child_update("px-1", family, "Ada", "2016-03-04")])
    assert created.outcome == "created"
    # A body larger than nginx's buffer (written to its temporary files) goes through as well.
    batch = la.submit_updates([child_update(f"px-big-{n}", unique_name("Big"), unique_name("Bo"),
                                            (dt.date(2010, 1, 1) + dt.timedelta(days=37 * n)).isoformat())
                               for n in range(60)])
    assert len(batch) == 60 and all(r.outcome in ("created", "matched", "review") for r in batch)
    [candidate] = health.find_child(user_id="dr.px", role="gp", family_name=family, date_of_birth="2016-03-04",
                                    **REASON)
    child = health.get_contacts(candidate.child_id, user_id="dr.px", role="gp", **REASON)
    assert child.identity.family_name == family
    rows = audit_rows(cluster, audit_log.c.user_id == "dr.px")
    assert [(r.operation, r.outcome, r.org_code) for r in rows] == [("FindChild", "accepted", "HEALTH"),
                                                                     ("GetContacts", "accepted", "HEALTH")]
    assert {r.source_address for r in rows} == {"127.0.0.1"}  # the client's, not nginx's 127.0.0.2


def test_a_client_cert_header_sent_through_nginx_never_reaches_a_node(cluster):
    """LA sends its own signed Ping through nginx with a Client-Cert naming HEALTH: nginx replaces it
    with the certificate it verified, so the gateway sees LA (had it believed the header, the
    signature by LA's key would not match HEALTH's certificate: SignerMismatch)."""
    la = cluster.client("la")
    message = la.build_request("Ping", Requester={"UserId": "it", "Role": "onboarding"})
    response = la.session.post(la.endpoint, data=message, timeout=30, headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}Ping"',
        "Client-Cert": rfc9440(cluster.gateway.certs["health"]), "X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 200, response.text
    assert b"<cg:Organisation>LA</cg:Organisation>" in response.content or b">LA<" in response.content
    [row] = audit_rows(cluster, audit_log.c.operation == "Ping", audit_log.c.user_id == "it")
    assert row.org_code == "LA" and row.source_address == "127.0.0.1"


@pytest.mark.parametrize("forged_from", ["untrusted address", "no header from the proxy", "unreadable header"])
def test_a_certificate_the_node_cannot_believe_is_refused_audited_and_changes_nothing(cluster, forged_from):
    la = cluster.client("la")
    srid = f"forged-{unique()}"
    message = la.build_request("SubmitUpdates", ChildUpdate=[child_update(srid, unique_name("Forged"), "Eve",
                                                                          "2015-05-05")])
    header, source = {"untrusted address": (rfc9440(cluster.gateway.certs["la"]), "127.0.0.1"),
                      "no header from the proxy": (None, PROXY_ADDRESS),
                      "unreadable header": (":not base64!:", PROXY_ADDRESS)}[forged_from]
    status, answer = cluster.post_to_node(0, "SubmitUpdates", message, client_cert=header, source=source)
    assert status == 500 and fault_code(parse_untrusted(answer)) == "CertificateRejected"
    assert b"trusted proxy" not in answer and b"127.0.0" not in answer  # the reason stays in the audit
    assert stored(cluster, srid) == 0
    refused = audit_rows(cluster, audit_log.c.outcome == "refused", audit_log.c.fault_code == "CertificateRejected")
    expected = {"untrusted address": "not a trusted proxy", "no header from the proxy": "no client certificate",
                "unreadable header": "Client-Cert header from the proxy"}[forged_from]
    assert any(expected in (r.detail or "") for r in refused), [r.detail for r in refused]


def _signed(cluster: Cluster, name: str, operation: str, **kwargs) -> bytes:
    return GatewayClient.from_directory(cluster.url, cluster.gateway.certs[name]).build_request(operation, **kwargs)


def test_the_per_address_connection_cap_spares_the_proxy_every_client_comes_through(cluster):
    """A node caps connections per address; nginx's address carries every client, so it is exempt
    (else a busy nginx would be cut off); any other address is capped as before."""
    def open_connections(source: str, n: int) -> list[str]:
        results, conns = [], []
        for _ in range(n):
            conn = http.client.HTTPConnection("127.0.0.1", cluster.node_ports[0], timeout=10,
                                              source_address=(source, 0))
            conns.append(conn)
            try:
                conn.request("GET", "/healthz")
                results.append(str(conn.getresponse().read(), "ascii"))  # kept alive, held open
            except (OSError, http.client.HTTPException):
                results.append("closed")
        for conn in conns:
            conn.close()
        return results

    assert open_connections(PROXY_ADDRESS, PER_ADDRESS + 3) == ["ok\n"] * (PER_ADDRESS + 3)
    assert open_connections("127.0.0.1", PER_ADDRESS + 1) == ["ok\n"] * PER_ADDRESS + ["closed"]


def test_a_replay_sent_to_the_other_node_is_refused(cluster):
    [created] = cluster.client("la").submit_updates([child_update(f"rp-{unique()}", unique_name("Replay"), "Rae",
                                                                  "2014-04-04")])
    message = _signed(cluster, "health", "GetContacts", ChildId=created.child_id,
                      Requester={"UserId": "dr.replay", "Role": "gp"},
                      Reason={"_value_1": REASON["reason_text"], "code": REASON["reason_code"]})
    health = rfc9440(cluster.gateway.certs["health"])
    first, _ = cluster.post_to_node(0, "GetContacts", message, client_cert=health)
    again, answer = cluster.post_to_node(1, "GetContacts", message, client_cert=health)
    assert first == 200 and again == 500 and fault_code(parse_untrusted(answer)) == "Replay"


def test_a_submit_retried_on_the_other_node_is_applied_once(cluster):
    srid = f"once-{unique()}"
    message = _signed(cluster, "la", "SubmitUpdates",
                      ChildUpdate=[child_update(srid, unique_name("Once"), "Ona", "2013-03-03")])
    la = rfc9440(cluster.gateway.certs["la"])
    first_status, first = cluster.post_to_node(0, "SubmitUpdates", message, client_cert=la)
    retry_status, retry = cluster.post_to_node(1, "SubmitUpdates", message, client_cert=la)
    assert first_status == retry_status == 200 and retry == first  # the first answer, as it was signed
    assert stored(cluster, srid) == 1
    outcomes = [r.outcome for r in audit_rows(cluster, audit_log.c.operation == "SubmitUpdates",
                                              audit_log.c.detail.contains("retry"))]
    assert "repeat" in outcomes


def test_rate_limits_count_across_the_nodes(cluster):
    user = f"busy.{unique()}"
    health = rfc9440(cluster.gateway.certs["health"])
    codes = []
    for n in range(USER_LIMIT + 2):
        message = _signed(cluster, "health", "FindChild", Requester={"UserId": user, "Role": "gp"},
                          Reason={"_value_1": REASON["reason_text"], "code": REASON["reason_code"]},
                          FamilyName="Nobody", DateOfBirth="2010-01-01")
        status, answer = cluster.post_to_node(n % 2, "FindChild", message, client_cert=health)
        codes.append(fault_code(parse_untrusted(answer)))
    assert codes[:USER_LIMIT] == [None] * USER_LIMIT and codes[USER_LIMIT:] == ["RateLimited"] * 2


def test_the_audit_chain_written_by_both_nodes_verifies(cluster):
    assert cluster.gateway.cli("audit", "verify", expect_ok=False).exit_code == 0
    with cluster.gateway.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() > 20


def test_a_node_stopped_mid_push_loses_nothing_the_client_retries(cluster):
    """A push of 30 single-record batches through nginx; node 0 is killed (SIGKILL) after the 10th.
    The client re-sends a batch that got no answer (502 from nginx, or no connection): each is
    applied exactly once, and the audit chain still verifies."""
    la = cluster.client("la", timeout=30)
    tag = unique()
    # Thirty different children: each its own given name and birth date too (with one given name and
    # birth date shared by all, two random family names alike enough were once rightly matched).
    messages = [la.build_request("SubmitUpdates", ChildUpdate=[child_update(
                    f"kill-{tag}-{n}", unique_name("Kill"), unique_name("Kit"), f"2012-{1 + n // 28:02d}-{1 + n % 28:02d}")])
                for n in range(30)]
    outcomes, retries = [], 0
    try:
        for n, message in enumerate(messages):
            if n == 10:
                cluster.stop_node(0, signal.SIGKILL)
            for attempt in range(6):
                try:
                    status, body = la.exchange("SubmitUpdates", message)
                except Exception:  # no answer: the same signed bytes again
                    status, body = None, None
                if status == 200:
                    outcomes += [r.outcome for r in parse_results(body)]
                    break
                retries += 1
                time.sleep(0.2)
            else:
                pytest.fail(f"batch {n} was never answered")
    finally:
        cluster.start_node(0)  # for whatever runs after
    assert outcomes == ["created"] * 30
    assert stored(cluster, *[f"kill-{tag}-{n}" for n in range(30)]) == 30
    assert cluster.gateway.cli("audit", "verify", expect_ok=False).exit_code == 0

