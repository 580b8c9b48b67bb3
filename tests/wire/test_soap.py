"""The hardened parser refuses what could make XML dangerous, before anything looks at it."""

import pytest

from contactgate_wire.soap import MAX_DEPTH, UnsafeXML, parse_untrusted

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


@pytest.mark.parametrize("depth", [1, 2, MAX_DEPTH])
def test_a_document_nested_up_to_the_limit_parses(depth):
    assert parse_untrusted(b"<r>" * depth + b"</r>" * depth) is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, MAX_DEPTH + 2, 200])
def test_a_document_nested_past_the_limit_is_refused(depth):
    with pytest.raises(UnsafeXML, match="nests deeper"):
        parse_untrusted(b"<r>" + b"<a/>" * 50 + b"<r>" * (depth - 1) + b"</r>" * depth)


@pytest.mark.parametrize("document, problem", [
    (b"<r><a><?pi data?></a></r>", "processing instructions"),
    (b"<r><a/><b><c><?x?></c></b></r>", "processing instructions"),
])
def test_processing_instructions_anywhere_in_the_tree_are_refused(document, problem):
    with pytest.raises(UnsafeXML, match=problem):
        parse_untrusted(document)


def test_comments_are_not_refused():
    assert parse_untrusted(b"<r><!-- note --><a>1</a></r>").findtext("a") == "1"


def test_a_thread_never_waits_for_another_threads_xpath():
    """One thread's evaluation (here held inside an extension function, as a huge hostile document
    would hold it) must not hold up another thread evaluating the same ThreadXPath: lxml evaluates
    one XPath object at a time, so each thread has its own."""
    import threading

    from lxml import etree

    from contactgate_wire.soap import ThreadXPath

    calls, inside, release = [], threading.Event(), threading.Event()

    def held_first_time(_context):
        calls.append(1)
        if len(calls) == 1:
            inside.set()
            release.wait(10)
        return True

    xpath = ThreadXPath("w:held()", namespaces={"w": "urn:test"}, extensions={("urn:test", "held"): held_first_time})
    document = etree.fromstring(b"<r/>")
    first = threading.Thread(target=xpath, args=(document,))
    first.start()
    try:
        assert inside.wait(5)
        second_done = threading.Event()
        second = threading.Thread(target=lambda: (xpath(document), second_done.set()))
        second.start()
        assert second_done.wait(5), "the second thread waited for the first one's evaluation"
    finally:
        release.set()
        first.join(10)
