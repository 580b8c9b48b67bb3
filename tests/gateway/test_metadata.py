"""The metadata listener (`serve --metadata-bind HOST:PORT`, issue 29): the WSDL (with its
WS-SecurityPolicy) and the XSD over HTTPS with the server certificate only, for the tools that cannot
present a client certificate (wsimport, `python -m zeep`, svcutil), through the same hardened front as
the service; nothing else is served there."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse

import pytest
import requests
import zeep
from lxml import etree
from zeep.transports import Transport

from tests.interop.conftest import node_soap  # noqa: F401 -- the fixture (Node.js and node-soap, or a skip)

import contactgate_schemas as schemas

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
POLICY_NS = "http://www.w3.org/ns/ws-policy"
OPERATIONS = {"SubmitUpdates", "FindChild", "GetContacts", "SetShielding", "Ping"}
pytestmark = pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)  # nothing here touches storage


def _ca(gateway) -> str:
    return str(gateway.certs["la"] / "ca.pem")


def test_wsdl_and_xsd_are_fetched_without_a_client_certificate_at_relative_locations(gateway):
    wsdl = requests.get(f"{gateway.metadata_url}/soap/v1?wsdl", verify=_ca(gateway), timeout=10)
    assert wsdl.status_code == 200 and wsdl.headers["Content-Type"].startswith("text/xml")
    definitions = etree.fromstring(wsdl.content)
    assert definitions.find(f"{{{POLICY_NS}}}Policy") is not None  # the WS-SecurityPolicy travels inside it
    # the service is where the organisations call it (mutual TLS), not the metadata listener
    assert definitions.find(f".//{{{SOAP_BINDING_NS}}}address").get("location") == f"{gateway.url}/soap/v1"
    location = definitions.find(f".//{{{XSD_NS}}}import").get("schemaLocation")
    xsd = requests.get(urllib.parse.urljoin(wsdl.url, location), verify=_ca(gateway), timeout=10)
    assert xsd.status_code == 200 and xsd.content == schemas.read(schemas.XSD_NAME)
    # the plain file names too, for tools given a directory's URL
    plain = requests.get(f"{gateway.metadata_url}/{schemas.WSDL_NAME}", verify=_ca(gateway), timeout=10)
    assert plain.status_code == 200 and plain.content == wsdl.content
    beside = urllib.parse.urljoin(plain.url, location)
    assert requests.get(beside, verify=_ca(gateway), timeout=10).content == xsd.content


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:443", "0.0.0.0", "not a host"])
def test_a_foreign_host_header_does_not_change_the_wsdls_address_and_nothing_may_cache_it(gateway, host):
    """The address is the configured --service-url whatever Host the request names (a shared cache or
    CDN keyed on the path would otherwise keep an attacker's address for every integrator)."""
    for path in ("/soap/v1?wsdl", f"/{schemas.WSDL_NAME}", f"/soap/{schemas.XSD_NAME}"):
        answer = requests.get(f"{gateway.metadata_url}{path}", headers={"Host": host}, verify=_ca(gateway),
                              timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Vary"] == "Host"
        if path != f"/soap/{schemas.XSD_NAME}":
            location = etree.fromstring(answer.content).find(f".//{{{SOAP_BINDING_NS}}}address").get("location")
            assert location == f"{gateway.url}/soap/v1"
    assert b"attacker" not in answer.content


def test_zeep_loads_the_wsdl_from_the_metadata_listener_without_a_client_certificate(gateway):
    session = requests.Session()
    session.trust_env = False  # (else a CA bundle named in the environment overrides session.verify)
    session.verify = _ca(gateway)
    client = zeep.Client(f"{gateway.metadata_url}/soap/v1?wsdl", transport=Transport(session=session))
    assert set(client.service._operations) == OPERATIONS


def test_python_m_zeep_reads_the_wsdl_from_the_metadata_listener(gateway):
    """`python -m zeep URL`, as an integrator runs it: no client certificate, the CA from the environment."""
    env = {**os.environ, "REQUESTS_CA_BUNDLE": _ca(gateway)}
    done = subprocess.run([sys.executable, "-m", "zeep", f"{gateway.metadata_url}/soap/v1?wsdl"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    for operation in OPERATIONS:
        assert f"{operation}(" in done.stdout


@pytest.mark.parametrize("method, path", [("POST", "/soap/v1"), ("GET", "/healthz"), ("GET", "/crl"),
                                          ("GET", "/soap/v1"), ("GET", "/metrics"), ("GET", "/")])
def test_metadata_listener_serves_nothing_but_the_metadata(gateway, method, path):
    answer = requests.request(method, f"{gateway.metadata_url}{path}", verify=_ca(gateway), timeout=10,
                              data=b"<x/>" if method == "POST" else None)
    assert answer.status_code in (404, 405)
    assert b"soap:Envelope" not in answer.content


def test_metadata_listener_speaks_only_tls(gateway):
    """Plain HTTP on the metadata port is never answered: its front does the TLS handshake first."""
    import socket

    with socket.create_connection(("127.0.0.1", gateway.metadata_port), timeout=10) as connection:
        connection.sendall(b"GET /soap/v1?wsdl HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = connection.recv(4096)
    assert b"definitions" not in answer and not answer.startswith(b"HTTP/")  # no HTTP answer at all (not even 400)


def test_node_soap_builds_its_client_from_the_metadata_listener_and_calls_the_service(gateway, node_soap):
    """node-soap fetches the WSDL and its XSD with no client certificate, then calls the service the
    WSDL names (mutual TLS, signed), as an integrator's first script would."""
    from tests.interop.conftest import node_job

    job = node_job(gateway, "la", [{"operation": "Ping", "args": {"Requester": {"UserId": "it", "Role": "onboarding"}}}])
    job.update(wsdl=f"{gateway.metadata_url}/soap/v1?wsdl", wsdl_without_certificate=True)
    [answer] = node_soap(job)
    assert answer["ok"], answer
    assert answer["result"]["Organisation"] == "LA"
