"""`contactgate wsdl --out DIR` (issue 29): the WSDL (with its WS-SecurityPolicy) and the XSD written
where a tool that cannot present a client certificate reads them, from the files the client
distribution ships."""

from __future__ import annotations

import pytest
import zeep
from click.testing import CliRunner
from lxml import etree

import contactgate_schemas as schemas

SOAP_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap/"


def test_wsdl_command_writes_the_wsdl_and_the_xsd_beside_it_for_an_offline_tool(tmp_path):
    from connectors.cli import main

    out = tmp_path / "metadata"
    result = CliRunner().invoke(main, ["wsdl", "--out", str(out), "--url", "https://gateway.example.org:8443"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [schemas.WSDL_NAME, schemas.XSD_NAME]
    assert (out / schemas.XSD_NAME).read_bytes() == schemas.read(schemas.XSD_NAME)
    address = etree.parse(str(out / schemas.WSDL_NAME)).find(f".//{{{SOAP_BINDING_NS}}}address").get("location")
    assert address == "https://gateway.example.org:8443/soap/v1"
    client = zeep.Client(str(out / schemas.WSDL_NAME))  # the relative schemaLocation resolves beside it
    assert "FindChild" in client.service._operations


@pytest.mark.parametrize("url", ["http://gateway.example.org:8443", "https://gateway.example.org/\"><x/>",
                                 "https://gateway.example.org:8443/soap&x", "https://a b.example.org",
                                 "https://gateway.example.org:123456", "https://user@gateway.example.org"])
def test_wsdl_command_refuses_an_address_that_is_not_an_https_host_port_and_path(tmp_path, url):
    from connectors.cli import main

    out = tmp_path / "metadata"
    result = CliRunner().invoke(main, ["wsdl", "--out", str(out), "--url", url])
    assert result.exit_code == 2 and "--url" in result.output, result.output
    assert not out.exists()


def test_wsdl_command_keeps_a_path_prefix_in_the_address(tmp_path):
    from connectors.cli import main

    out = tmp_path / "metadata"
    result = CliRunner().invoke(main, ["wsdl", "--out", str(out), "--url", "https://gw.example.org/contactgate/"])
    assert result.exit_code == 0, result.output
    address = etree.parse(str(out / schemas.WSDL_NAME)).find(f".//{{{SOAP_BINDING_NS}}}address").get("location")
    assert address == "https://gw.example.org/contactgate/soap/v1"
