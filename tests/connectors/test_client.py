"""The SDK as a connecting organisation uses it: typed answers for every operation, only the files
`cert issue` wrote, the key read once, kept-alive pooled connections, timeouts, and trust that the
environment cannot widen. Through a real gateway (the SDK does not depend on the backend: SQLite)."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from connectors import results
from connectors.client import GatewayClient, GatewayUnreachable, NotFoundFault
from tests.support import child_update, nhs_number, unique, unique_name

REASON = dict(reason_code="care_coordination", reason_text="planning a joint visit")
pytestmark = pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)


def _client(gateway, name: str, **kwargs) -> GatewayClient:
    directory = gateway.certs[name]
    return GatewayClient(gateway.url, cert=directory / "cert.pem", key=directory / "key.pem", **kwargs)


def test_every_operation_answers_typed_values(gateway):
    la, shielder = _client(gateway, "la"), _client(gateway, "shielder")
    family, nhs = unique_name("Typed"), nhs_number(int(unique()[:6], 16))

    [created] = la.submit_updates([child_update("typed-1", family, "Ada", "2016-03-04", nhs=nhs, postcode="LS1 1AA")])
    assert isinstance(created, results.UpdateResult)
    assert (created.source_record_id, created.outcome, created.detail) == ("typed-1", "created", None)

    [candidate] = la.find_child(user_id="sw1", role="social worker", family_name=family,
                                date_of_birth=dt.date(2016, 3, 4), **REASON)
    assert isinstance(candidate, results.Candidate) and candidate.child_id == created.child_id
    assert candidate.given_names == ["Ada"] and candidate.date_of_birth == dt.date(2016, 3, 4)
    assert isinstance(candidate.score, int) and 0 <= candidate.score <= 100 and candidate.locality == "Leeds"

    child = la.get_contacts(created.child_id, user_id="sw1", role="social worker", **REASON)
    assert isinstance(child, results.Child) and child.shielded is False
    assert child.identity.family_name == family and child.identity.date_of_birth == dt.date(2016, 3, 4)
    assert child.identity.nhs_number == nhs and child.address.postcode == "LS1 1AA"
    assert isinstance(child.gp_practice, results.Setting) and child.gp_practice.name == "Park Surgery"
    [contact] = child.contacts
    assert contact.organisation == "LA" and isinstance(contact.involvement, results.Involvement)
    assert contact.involvement.lead_professional is True and isinstance(contact.involvement.start, dt.date)
    assert all(isinstance(c, results.Carer) for c in child.carers)

    shielding = shielder.set_shielding(created.child_id, True, user_id="dsl", role="social worker", **REASON)
    assert shielding == results.Shielding(child_id=created.child_id, shielded=True)

    ping = la.ping(user_id="it", role="onboarding")
    assert isinstance(ping, results.PingAnswer) and ping.organisation == "LA"
    assert set(ping.scopes) == {"push", "query"} and isinstance(ping.accreditation_expires, dt.date)
    assert ping.gateway_time.tzinfo is not None
    assert abs((ping.gateway_time - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 60


def test_answers_still_read_by_their_wsdl_names(gateway):
    """Code written when the SDK answered zeep's dicts keeps working."""
    la = _client(gateway, "la")
    family = unique_name("Wire")
    [created] = la.submit_updates([child_update("wire-1", family, "Bo", "2017-05-06")])
    child = la.get_contacts(created["ChildId"], user_id="sw1", role="social worker", **REASON)
    assert child["Identity"]["GivenName"] == ["Bo"] and child["Contact"][0]["Involvement"]["Service"]
    assert child.get("Address") is child.address and child.get("NoSuchElement", "x") == "x"
    assert "Carer" in child and "Candidate" not in child
    wire = child.to_wire()
    assert wire["ChildId"] == created.child_id and wire["Identity"]["DateOfBirth"] == dt.date(2017, 5, 6)
    assert results.Child.from_wire(wire) == child
    with pytest.raises(KeyError):
        child["child_id"]


def test_only_the_files_cert_issue_wrote_are_needed_and_are_read_once(gateway, tmp_path):
    """cert.pem and key.pem, with ca.pem and gateway-signing.pem found beside them; once the client
    is made, the files can go: new connections and signatures use what was loaded."""
    directory = shutil.copytree(gateway.certs["la"], tmp_path / "la")
    client = GatewayClient(gateway.url, cert=directory / "cert.pem", key=directory / "key.pem")
    assert client.ping(user_id="it", role="onboarding").organisation == "LA"
    shutil.rmtree(directory)
    client.close()  # the next call needs a new TLS connection
    assert client.ping(user_id="it", role="onboarding").organisation == "LA"
    [created] = client.submit_updates([child_update("files-1", unique_name("Files"), "Cy", "2015-01-02")])
    assert created.outcome == "created"


def test_calls_reuse_kept_alive_connections_from_one_pool(gateway):
    client = _client(gateway, "la", pool_size=4)
    for _ in range(5):
        client.ping(user_id="it", role="onboarding")
    pools = client.session.get_adapter(client.endpoint).poolmanager.pools
    [key] = pools.keys()
    pool = pools[key]
    assert pool.num_connections == 1 and pool.num_requests == 5

    with ThreadPoolExecutor(4) as threads:  # concurrent callers share the client, within the pool size
        answers = list(threads.map(lambda _: client.ping(user_id="it", role="onboarding"), range(16)))
    assert {a.organisation for a in answers} == {"LA"}
    assert 1 <= pool.num_connections <= 4 and pool.num_requests == 21


def test_a_gateway_that_never_answers_is_unreachable_after_the_timeout(gateway):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts the TCP connection, then says nothing (no TLS handshake, no answer)
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    directory = gateway.certs["la"]
    client = GatewayClient(f"https://127.0.0.1:{silent.getsockname()[1]}", cert=directory / "cert.pem",
                           key=directory / "key.pem", timeout=1)
    started = time.monotonic()
    with pytest.raises(GatewayUnreachable):
        client.ping(user_id="it", role="onboarding")
    assert time.monotonic() - started < 10
    silent.close()


def test_a_ca_bundle_named_in_the_environment_is_not_used(gateway, monkeypatch, tmp_path):
    """Only the gateway CA is trusted, whatever the environment names (requests would let
    REQUESTS_CA_BUNDLE replace it: requests #3829). A broken bundle there changes nothing."""
    bogus = tmp_path / "bundle.pem"
    bogus.write_text("not a certificate")
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, str(bogus))
    assert _client(gateway, "la").ping(user_id="it", role="onboarding").organisation == "LA"


def test_an_unknown_child_is_a_typed_fault(gateway):
    with pytest.raises(NotFoundFault) as raised:
        _client(gateway, "la").get_contacts("0000-0000-0000-0000", user_id="sw1", role="social worker", **REASON)
    assert raised.value.code == "NotFound"
