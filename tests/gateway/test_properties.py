"""Property-based tests: requests generated from schemas/contactgate.xsd (tests/gateway/xsd_strategies.py),
signed with the SDK's signer, then mutated, and posted to the real gateway over mutual TLS on both
backends (the session `gateway` fixture).

For every message, whatever it holds (issue 5, "Every odd input gets a contract fault"):
- the answer is a contract outcome or a contract fault code, never `Unavailable` (503) for the
  caller's own input;
- the answer is signed by the gateway and bound to the request (`post_raw` verifies both);
- exactly one audit entry is added; on a refusal it says "refused" with the fault's code, the fault
  leaks nothing internal, and the index is unchanged;
- afterwards the audit chain verifies.

Examples are derandomized (the same every run, as CI needs) and few enough that the module runs in
about 35 s on SQLite (510 messages) and a third of that on PostgreSQL (170 messages: see examples()).
To explore: CONTACTGATE_PROPERTY_RANDOM=1 (a new seed each run, printed on failure; reproduce with
--hypothesis-seed=N) and CONTACTGATE_PROPERTY_EXAMPLES=<factor> to multiply the example counts. Each failure found becomes a strict expected-failure test in
tests/gateway/test_odd_input.py with the minimal example, then a fix.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import os
import secrets
import string

import pytest
import xmlsec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from zeep.wsse.signature import _sign_envelope_with_key_binary

from gateway.pipeline import contactgate_v1 as dialect
from connectors.client import GatewayClient
import contactgate_schemas as schemas
from gateway import audit
from contactgate_wire.faults import FAULT_CODES
from contactgate_wire import wsse
from contactgate_wire.soap import CG, DS, OPERATIONS, SOAP_ENV, WSSE, WSU, new_envelope, q
from tests.gateway.pipeline.attacks import assert_no_leak
from tests.gateway.xsd_strategies import ElementStrategies, read_schema
from tests.support import child_update
from tests.wire.signing import organisation_key

SCHEMA = read_schema()
XSD = etree.XMLSchema(etree.fromstring(schemas.read(schemas.XSD_NAME)))
_FACTOR = float(os.environ.get("CONTACTGATE_PROPERTY_EXAMPLES", "1"))
_RANDOM = os.environ.get("CONTACTGATE_PROPERTY_RANDOM") == "1"


def _settings(n: int):
    return settings(max_examples=max(1, int(n * _FACTOR)), deadline=None, derandomize=not _RANDOM,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# On PostgreSQL a property runs on a third of the examples it runs on SQLite: the same derandomized
# generator and the same checks of every answer; what the backend changes (the store's answers, the
# audit entry in the effect's transaction, the index left untouched by a refusal) shows within a few
# dozen messages, and the rest would repeat, on the second backend, the parser's and signature's
# work that does not touch the database.
POSTGRESQL_SHARE = 3


def examples(n: int):
    """``body(gateway, clients, requests_, data)`` as a property test over ``n`` examples on SQLite,
    ``n / POSTGRESQL_SHARE`` on PostgreSQL (hypothesis's settings are fixed per function, not per
    fixture parameter: one property function per backend, the test picks the gateway's)."""
    def decorate(body):
        runs = {backend: _settings(count)(given(data=st.data())(body))
                for backend, count in (("sqlite", n), ("postgresql", max(1, n // POSTGRESQL_SHARE)))}

        def test(gateway, clients, requests_):
            runs[gateway.backend](gateway, clients, requests_)

        test.__name__, test.__qualname__, test.__doc__ = body.__name__, body.__qualname__, body.__doc__
        return test
    return decorate


_users = itertools.count()


def _letters(n: int = 12) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(n))


# ---- a few children the generated reads can find -------------------------------------------------

SEEDED_DOB = "2017-05-06"


@pytest.fixture(scope="module")
def seeded(gateway, clients) -> dict:
    """Children that exist, so generated FindChild and GetContacts sometimes meet a record; their
    family names and ids are mixed into the schema's strategies."""
    families = [f"Prop{_letters()}" for _ in range(3)]
    results = clients("la").submit_updates(
        [child_update(f"prop-seed-{_letters()}", family, "Ann", SEEDED_DOB) for family in families])
    assert [r["Outcome"] for r in results] == ["created"] * 3
    return {"families": families, "child_ids": [r["ChildId"] for r in results]}


@pytest.fixture(scope="module")
def requests_(seeded) -> dict[str, st.SearchStrategy[etree._Element]]:
    strategies = ElementStrategies(SCHEMA, overrides={
        "ChildId": st.sampled_from(seeded["child_ids"]),
        "FamilyName": st.sampled_from(seeded["families"]),
        "DateOfBirth": st.just(SEEDED_DOB),
    })
    return {operation: strategies.request(operation) for operation in OPERATIONS}


# ---- building, posting and checking one exchange -----------------------------------------------

def _operation_of(payload: etree._Element) -> str:
    return etree.QName(payload).localname


def _vary_user(payload: etree._Element) -> None:
    """Reads count against a per-user rate limit (600 a minute): give every message its own user,
    keeping what the schema drew (as long as it stays a valid xs:token of at most 128)."""
    user = payload.find(f"{{{CG}}}Requester/{{{CG}}}UserId")
    if user is not None:
        user.text = f"{dialect.token(user.text)[:100]}-p{next(_users)}"


def sign(client: GatewayClient, payload: etree._Element, **options) -> bytes:
    envelope = new_envelope(payload)
    client.signer.sign(envelope, **options)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def exchange(gateway, client: GatewayClient, operation: str, data: bytes) -> tuple[str | None, etree._Element]:
    """Post ``data`` and check what every answer must be; returns (fault code or None, envelope)."""
    before, seq = gateway.index_snapshot(), gateway.audit_seq()
    status, envelope = client.post_raw(operation, data)  # raises unless signed and bound to ``data``
    code = GatewayClient.fault_code(envelope)
    assert status != 503 and code != "Unavailable", (
        f"Unavailable for the caller's own input: {etree.tostring(envelope)[:800]!r}")
    _assert_answer_follows_the_schema(envelope)
    entries = gateway.audit_entries_after(seq)
    assert len(entries) == 1, f"expected one audit entry, got {entries}"
    [entry] = entries
    if code is None:
        assert status == 200
        assert entry["outcome"] in ("accepted", "repeat"), entry
    else:
        assert status == 500 and code in FAULT_CODES, (status, code)
        assert (entry["outcome"], entry["fault_code"]) == ("refused", code), entry
        assert_no_leak(etree.tostring(envelope))
        assert gateway.index_snapshot() == before, f"a refused message ({code}) changed the index"
    return code, envelope


def _assert_answer_follows_the_schema(envelope: etree._Element) -> None:
    """The answer's payload (a response element, or a fault's cg:Error) is valid by the same XSD."""
    body = envelope.find(q(SOAP_ENV, "Body"))
    fault = body.find(q(SOAP_ENV, "Fault"))
    answer = fault.find(f"detail/{{{CG}}}Error") if fault is not None else next(
        (c for c in body if isinstance(c.tag, str)), None)
    assert answer is not None and XSD.validate(answer), (
        f"the answer does not follow the schema ({XSD.error_log.last_error}): {etree.tostring(answer)[:600]!r}")


def _text(element: etree._Element | None) -> str | None:
    """An element's whole text, as the gateway reads it (comments inside it dropped)."""
    return None if element is None else "".join(element.itertext())


def _sent_payload(message: bytes) -> etree._Element:
    body = etree.fromstring(message).find(q(SOAP_ENV, "Body"))
    return next(c for c in body if isinstance(c.tag, str))


def _is_valid(payload: etree._Element) -> bool:
    return XSD.validate(payload)


def _has_reason(payload: etree._Element) -> bool:
    reason = payload.find(f"{{{CG}}}Reason")
    return reason is not None and bool(dialect.token(reason.get("code"))) and bool(_text(reason).strip())


def _check_valid_answer(payload: etree._Element, code: str | None, envelope: etree._Element) -> None:
    """What a schema-valid request of each operation may be answered."""
    operation = _operation_of(payload)
    if operation == "SubmitUpdates":
        assert code is None, f"a schema-valid SubmitUpdates was refused: {code}"
        results = list(envelope.iter(f"{{{CG}}}Result"))
        sent = [dialect.token(_text(u.find(f"{{{CG}}}SourceRecordId")))
                for u in payload.findall(f"{{{CG}}}ChildUpdate")]
        assert [r.findtext(f"{{{CG}}}SourceRecordId") for r in results] == sent
        for result in results:
            outcome = result.findtext(f"{{{CG}}}Outcome")
            # Never "review": a record held for review is answered as any other (issue 22, item 4).
            assert outcome in ("created", "updated", "matched", "rejected")
            # A child id for what was stored (a record held for review is stored as its own child);
            # a reason for what was not, and only for that.
            assert (result.findtext(f"{{{CG}}}ChildId") is None) == (outcome == "rejected")
            assert (result.findtext(f"{{{CG}}}Detail") is not None) == (outcome == "rejected")
        return
    behalf = payload.find(f"{{{CG}}}Requester/{{{CG}}}OnBehalfOf") is not None
    if behalf and not (operation in ("FindChild", "GetContacts") and not _has_reason(payload)):
        # the sender (LA) is not accredited for mediation (scope mediate): refused, whatever else
        assert code == "ScopeDenied", f"{operation} with OnBehalfOf answered {code}"
        return
    if operation == "SetShielding":  # the sender (LA) is not accredited for scope shield
        assert code == "ScopeDenied", f"SetShielding answered {code}"
        return
    if operation == "Ping":  # no reason, no scope: the accredited sender always gets its answer
        assert code is None, f"a schema-valid Ping was refused: {code}"
        assert envelope.find(f".//{{{CG}}}Organisation").text == "LA"
        return
    if payload.find(f"{{{CG}}}Reason") is None:
        assert code == "ReasonRequired"
        return
    allowed = {"FindChild": {None, "ReasonRequired", "SchemaInvalid"},
               "GetContacts": {None, "ReasonRequired", "NotFound"}}[operation]
    assert code in allowed, f"{operation} answered {code}"
    if code == "ReasonRequired":
        assert not _has_reason(payload)


# ---- 1. schema-valid requests --------------------------------------------------------------------

@examples(150)
def test_schema_valid_requests_get_a_contract_answer(gateway, clients, requests_, data):
    operation = data.draw(st.sampled_from(OPERATIONS), label="operation")
    payload = data.draw(requests_[operation], label="payload")
    assert _is_valid(payload), f"the strategy drew an invalid {operation}: {XSD.error_log.last_error}"
    _vary_user(payload)
    la = clients("la")
    code, envelope = exchange(gateway, la, operation, sign(la, payload))
    _check_valid_answer(payload, code, envelope)


# ---- 2. mutated bodies, signed after the mutation -------------------------------------------------

WRONG_VALUES = ["", " ", "not-a-date", "2015-13-45", "0000-01-01", "maybe", "TRUE", "-1",
                "1" * 300, "x" * 2000, "\u0085", "2015-01-01T00:00:00", "<b>", "&amp;", "\U0001f600" * 300]
FOREIGN_NAMESPACES = ["urn:contactgate:v2", "", "http://www.w3.org/2001/XMLSchema-instance",
                      SOAP_ENV, "urn:case-notes"]


def _descendants(payload: etree._Element) -> list[etree._Element]:
    return [e for e in payload.iter() if isinstance(e.tag, str) and e is not payload]


def _mutate_body(draw, payload: etree._Element) -> str:
    """Apply one structural or value mutation to ``payload``; return what was done."""
    elements = _descendants(payload)
    kind = draw(st.sampled_from(["drop", "duplicate", "swap", "insert", "oversize", "wrong_value",
                                 "namespace", "attribute", "mixed_text", "comment_split", "cdata", "instruction",
                                 "rename_root"]))
    target = draw(st.sampled_from(elements)) if elements else payload
    if kind == "drop" and elements:
        target.getparent().remove(target)
    elif kind == "duplicate" and elements:
        target.addnext(etree.fromstring(etree.tostring(target)))
    elif kind == "swap" and elements and target.getnext() is not None:
        target.getnext().addnext(target)
    elif kind == "insert":
        namespace = draw(st.sampled_from([CG, *FOREIGN_NAMESPACES]))
        name = draw(st.sampled_from(["CaseNotes", "Extra", "ChildId", "Identity", "Requester", "x"]))
        element = etree.Element(f"{{{namespace}}}{name}" if namespace else name)
        element.text = draw(st.sampled_from(["", "free text about the case", "1"]))
        parent = target if len(target) or target is payload else target.getparent()
        parent.insert(draw(st.integers(0, len(parent))), element)
    elif kind == "oversize":
        # Longer than any maxLength, but bounded: two oversizes of one text must not make a message
        # bigger than the gateway takes (that is tests/gateway/pipeline's business), or than lxml parses.
        target.text = ((target.text or "x") * draw(st.sampled_from([2, 50, 5000])))[:100_000]
    elif kind == "wrong_value":
        target.text = draw(st.sampled_from(WRONG_VALUES))
    elif kind == "namespace":
        namespace = draw(st.sampled_from(FOREIGN_NAMESPACES))
        name = etree.QName(target).localname
        target.tag = f"{{{namespace}}}{name}" if namespace else name
    elif kind == "attribute":
        name, value = draw(st.sampled_from([
            ("{http://www.w3.org/2001/XMLSchema-instance}nil", "true"),
            ("{http://www.w3.org/2001/XMLSchema-instance}type", "xs:string"),
            ("code", "safeguarding"), ("{urn:case-notes}note", "x"), ("lang", "en")]))
        target.set(name, value)
    elif kind == "mixed_text":
        parent = target.getparent() if target is not payload else payload
        parent.text = draw(st.sampled_from(["text between elements", " \n ", "\U0001f600"]))
    elif kind == "comment_split" and (target.text or ""):
        # A comment inside a value: exc-c14n without comments drops it, so the signature holds and
        # the value the gateway reads is the whole text.
        text = target.text
        cut = draw(st.integers(0, len(text)))
        target.text = text[:cut]
        comment = etree.Comment(" split ")
        comment.tail = text[cut:]
        target.insert(0, comment)
    elif kind == "cdata" and target.text is not None and "]]>" not in target.text:
        # A CR cannot travel in a CDATA section (XML's line-end handling reads it as LF, so what the
        # client signed is not what arrives): a harness limit hypothesis found, not the gateway's.
        target.text = etree.CDATA(target.text.replace("\r\n", "\n").replace("\r", "\n"))
    elif kind == "instruction":  # the hardened parser refuses processing instructions anywhere
        target.insert(0, etree.ProcessingInstruction("note", "free text"))
    elif kind == "rename_root":
        payload.tag = f"{{{CG}}}{draw(st.sampled_from([o for o in OPERATIONS if o != _operation_of(payload)]))}"
    return kind


@examples(180)
def test_mutated_bodies_get_a_contract_answer(gateway, clients, requests_, data):
    operation = data.draw(st.sampled_from(OPERATIONS), label="operation")
    payload = data.draw(requests_[operation], label="payload")
    _vary_user(payload)
    done = [_mutate_body(data.draw, payload) for _ in range(data.draw(st.integers(1, 3), label="mutations"))]
    data.draw(st.just(etree.tostring(payload)), label="mutated payload")  # shown on failure
    la = clients("la")
    message = sign(la, payload)
    # Judge what is sent, not the tree it was made from: lxml may serialise a tree differently from
    # how it holds it (an element taken out of a default namespace is not given xmlns="").
    payload = _sent_payload(message)
    code, envelope = exchange(gateway, la, operation, message)
    if any(True for _ in payload.iter(etree.PI)):
        assert code == "MalformedMessage", f"{done}: a processing instruction answered {code}"
        return
    if "rename_root" in done or _operation_of(payload) not in OPERATIONS or etree.QName(payload).namespace != CG:
        return  # posted under another SOAPAction: a contract fault (MalformedMessage), checked above
    if _is_valid(payload):
        _check_valid_answer(payload, code, envelope)
    else:
        assert code == "SchemaInvalid", f"{done}: a schema-invalid body answered {code}"


# ---- 3. envelopes tampered with after signing ------------------------------------------------------

ALGORITHMS = ["http://www.w3.org/2000/09/xmldsig#rsa-sha1", "http://www.w3.org/2000/09/xmldsig#sha1",
              "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
              "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
              "http://www.w3.org/TR/1999/REC-xpath-19991116", "urn:nonsense", ""]


def _signed_odd_timestamp(key: xmlsec.Key, payload: etree._Element, created: str, expires: str) -> bytes:
    """A correctly signed message whose Timestamp says ``created`` / ``expires`` verbatim."""
    envelope = new_envelope(payload)
    timestamp = wsse.add_timestamp(envelope)
    timestamp.find(q(WSU, "Created")).text = created
    timestamp.find(q(WSU, "Expires")).text = expires
    _sign_envelope_with_key_binary(envelope, key, xmlsec.Transform.RSA_SHA256, xmlsec.Transform.SHA256)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def _first(envelope: etree._Element, ns: str, name: str) -> etree._Element | None:
    return next(envelope.iter(q(ns, name)), None)


def _tamper(draw, envelope: etree._Element, other_cert_b64: str) -> str:
    kind = draw(st.sampled_from([
        "body_value", "header_block", "second_security", "remove", "duplicate", "wrap_payload",
        "second_payload", "ids", "signature_value", "token", "algorithm", "reference_uri",
        "soap12", "whitespace", "comment"]))
    body = envelope.find(q(SOAP_ENV, "Body"))
    header = envelope.find(q(SOAP_ENV, "Header"))
    security = header.find(q(WSSE, "Security"))
    payload = next(c for c in body if isinstance(c.tag, str))
    if kind == "body_value":
        leaves = [e for e in payload.iter() if isinstance(e.tag, str) and len(e) == 0]
        draw(st.sampled_from(leaves)).text = draw(st.sampled_from(["Smith", "2015-01-01", "", "x" * 300]))
    elif kind == "header_block":
        header.insert(draw(st.integers(0, len(header))), etree.Element("{urn:other}Routing"))
    elif kind == "second_security":
        header.append(etree.fromstring(etree.tostring(security)))
    elif kind == "remove":
        name = draw(st.sampled_from([(WSU, "Timestamp"), (DS, "Signature"), (WSSE, "BinarySecurityToken"),
                                     (DS, "KeyInfo"), (DS, "Reference"), (WSSE, "Security"), (SOAP_ENV, "Header")]))
        element = _first(envelope, *name)
        element.getparent().remove(element)
    elif kind == "duplicate":
        name = draw(st.sampled_from([(WSU, "Timestamp"), (DS, "Signature"), (WSSE, "BinarySecurityToken"),
                                     (DS, "Reference"), (SOAP_ENV, "Body")]))
        element = _first(envelope, *name)
        element.addnext(etree.fromstring(etree.tostring(element)))
    elif kind == "wrap_payload":
        wrapper = etree.SubElement(body, f"{{{CG}}}Wrapper")
        wrapper.append(payload)
    elif kind == "second_payload":
        body.append(etree.fromstring(etree.tostring(payload)))
    elif kind == "ids":
        target = draw(st.sampled_from([body, _first(envelope, WSU, "Timestamp"), payload]))
        value = draw(st.sampled_from(["id-other", body.get(q(WSU, "Id")) or "x", ""]))
        target.set(q(WSU, "Id") if target is not payload else "Id", value)
    elif kind == "signature_value":
        # Never empty: an empty SignatureValue / DigestValue is another engineer's fix (wsse.py).
        element = _first(envelope, DS, draw(st.sampled_from(["SignatureValue", "DigestValue"])))
        element.text = draw(st.sampled_from([
            base64.b64encode(b"\x00" * 256).decode(), "not base64!", "AAAA", (element.text or "A")[::-1], "=="]))
    elif kind == "token":
        token = _first(envelope, WSSE, "BinarySecurityToken")
        token.text = draw(st.sampled_from([other_cert_b64, "AAAA", "not base64", base64.b64encode(b"\x30\x03\x02\x01\x01").decode()]))
    elif kind == "algorithm":
        name = draw(st.sampled_from(["SignatureMethod", "DigestMethod", "CanonicalizationMethod", "Transform"]))
        _first(envelope, DS, name).set("Algorithm", draw(st.sampled_from(ALGORITHMS)))
    elif kind == "reference_uri":
        reference = _first(envelope, DS, "Reference")
        reference.set("URI", draw(st.sampled_from(["", "#", "#nope", "http://example.org/x", "#xpointer(/)"])))
    elif kind == "soap12":
        envelope.tag = "{http://www.w3.org/2003/05/soap-envelope}Envelope"
    elif kind == "whitespace":
        security.text = "\n   "
        envelope.text = "\n"
    elif kind == "comment":
        draw(st.sampled_from([security, header, envelope])).insert(0, etree.Comment(" note "))
    return kind


def _byte_mutation(draw, data: bytes) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "doctype", "encoding", "bom", "nothing"]))
    if kind == "truncate":
        return kind, data[:draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return kind, data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return kind, data[:at] + draw(st.sampled_from([b"<", b"&", b"\x00", b"\xff\xfe", b"]]>", b"<!-- -->", b" "])) + data[at:]
    if kind == "doctype":
        head, rest = data.split(b"?>", 1)
        return kind, head + b'?><!DOCTYPE x [<!ENTITY e "e">]>' + rest
    if kind == "encoding":
        return kind, data.replace(b"encoding='utf-8'", b"encoding='utf-16'", 1).replace(
            b'encoding="utf-8"', b'encoding="latin-1"', 1)
    if kind == "bom":
        return kind, b"\xef\xbb\xbf" + data
    return kind, data


@examples(180)
def test_tampered_envelopes_get_a_contract_fault(gateway, clients, requests_, data):
    operation = data.draw(st.sampled_from(OPERATIONS), label="operation")
    payload = data.draw(requests_[operation], label="payload")
    _vary_user(payload)
    la = clients("la")
    how = data.draw(st.sampled_from(["tree", "bytes", "timestamp", "odd_timestamp", "foreign_signer",
                                     "unsigned", "soap_action", "resend"]), label="how")
    post_as = operation
    if how == "tree":
        envelope = etree.fromstring(sign(la, payload))
        other = clients("health").signer.certificate
        other_b64 = base64.b64encode(other.public_bytes(Encoding.DER)).decode()
        data.draw(st.just(_tamper(data.draw, envelope, other_b64)), label="tampered")
        message = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    elif how == "bytes":
        data.draw(st.just(None), label="bytes")
        kind, message = _byte_mutation(data.draw, sign(la, payload))
    elif how == "timestamp":
        now = dt.datetime.now(dt.timezone.utc)
        created = now + dt.timedelta(seconds=data.draw(st.sampled_from([-3600, -400, 400, 3600, 10**8])))
        message = sign(la, payload, created=created,
                       lifetime_s=data.draw(st.sampled_from([1, 300, 301, 86400 * 365])))
    elif how == "odd_timestamp":
        created, expires = data.draw(st.sampled_from([
            ("", ""), ("yesterday", "tomorrow"), ("2015-01-01T00:00:00", "2015-01-01T00:05:00"),
            ("10000-01-01T00:00:00Z", "10000-01-01T00:05:00Z"), ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
            ("2015-01-01T00:00:00+25:00", "2015-01-01T00:05:00Z"),
            ("0001-01-01T00:00:00+01:00", "0001-01-01T00:05:00+01:00"),  # overflow converting to UTC
            ("9999-12-31T23:59:00-01:00", "9999-12-31T23:59:30-01:00"),
        ]), label="timestamp")
        message = _signed_odd_timestamp(organisation_key(gateway, "la"), payload, created, expires)
    elif how == "foreign_signer":  # signed by another organisation's key over LA's TLS
        message = sign(clients("health"), payload)
    elif how == "unsigned":
        message = etree.tostring(new_envelope(payload), xml_declaration=True, encoding="utf-8")
    elif how == "soap_action":
        message = sign(la, payload)
        post_as = data.draw(st.sampled_from([o for o in OPERATIONS if o != operation] + ["Ping", ""]))
    else:  # the same signed bytes twice: a read is a Replay, a SubmitUpdates its first answer again
        message = sign(la, payload)
        first, first_envelope = exchange(gateway, la, operation, message)
        second, second_envelope = exchange(gateway, la, operation, message)
        if first is None and operation != "SubmitUpdates":
            assert second == "Replay"
        elif first is None:
            assert etree.tostring(second_envelope.find(q(SOAP_ENV, "Body"))) == etree.tostring(
                first_envelope.find(q(SOAP_ENV, "Body")))
        return
    exchange(gateway, la, post_as, message)


# ---- 4. afterwards ---------------------------------------------------------------------------------

def test_the_audit_chain_verifies_after_the_properties(gateway):
    trail = audit.AuditTrail((gateway.home / "keys" / "audit-chain.key").read_bytes())
    result = trail.verify(gateway.engine)
    assert result.ok, result


def test_the_strategies_cover_every_element_of_the_requests():
    """The generated requests can hold every element the schema lets each operation carry (so a
    new element in the XSD is exercised without editing these tests)."""
    reachable: set[str] = set()

    def walk(type_name: str) -> None:
        kind = SCHEMA.type_of(type_name)
        for particle in getattr(kind, "sequence", []):
            if particle.name not in reachable or particle.type_name in SCHEMA.complex:
                reachable.add(particle.name)
                if particle.type_name in SCHEMA.complex and particle.type_name != type_name:
                    walk(particle.type_name)

    for operation in OPERATIONS:
        walk(SCHEMA.elements[operation])
    assert {"ChildUpdate", "Involvement", "CafAssessment", "Requester", "Reason", "ChildId", "PupilNumber",
            "Line5", "GpPractice", "PreviousName"} <= reachable
