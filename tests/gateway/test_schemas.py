"""The wire format is closed: no open content anywhere, so unknown elements are refused."""

import re

from lxml import etree

import contactgate_schemas as schemas


def test_no_open_content_in_xsd_or_wsdl():
    for name in (schemas.XSD_NAME, schemas.WSDL_NAME):
        text = schemas.read(name).decode()
        assert not re.search(r"<\w+:any[\s/>]|anyAttribute|processContents|mixed=\"true\"", text), name


def test_case_notes_are_not_in_the_schema():
    schema = etree.XMLSchema(etree.fromstring(schemas.read(schemas.XSD_NAME)))
    update = b"""<cg:SubmitUpdates xmlns:cg="urn:contactgate:v1"><cg:ChildUpdate>
      <cg:SourceRecordId>r1</cg:SourceRecordId>
      <cg:Identity><cg:FamilyName>A</cg:FamilyName><cg:GivenName>B</cg:GivenName>
        <cg:DateOfBirth>2015-01-01</cg:DateOfBirth><cg:Gender>female</cg:Gender></cg:Identity>
      %s</cg:ChildUpdate></cg:SubmitUpdates>"""
    assert schema.validate(etree.fromstring(update % b""))
    assert not schema.validate(etree.fromstring(update % b"<cg:CaseNotes>disclosure</cg:CaseNotes>"))


def test_served_wsdl_points_at_the_address_it_was_fetched_from():
    assert b'location="https://gw.example:9443/soap/v1"' in schemas.wsdl_for("https://gw.example:9443/soap/v1")
