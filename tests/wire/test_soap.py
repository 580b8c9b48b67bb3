"""The hardened parser refuses what could make XML dangerous, before anything looks at it."""

import pytest

from contactgate_wire.soap import UnsafeXML, parse_untrusted

XXE = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"""
LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;">]><l>&c;&c;&c;</l>"""


@pytest.mark.parametrize("document", [XXE, LAUGHS, b"<r/><r/>", b"not xml", b"<r>" * 100 + b"</r>" * 100,
                                      b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd"><r/>'])
def test_dangerous_or_broken_documents_are_refused(document):
    with pytest.raises(UnsafeXML):
        parse_untrusted(document)


def test_ordinary_document_parses():
    assert parse_untrusted(b"<r><a>1</a></r>").findtext("a") == "1"
