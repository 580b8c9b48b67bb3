"""The client SDK: call the gateway from a connecting system (Python 3.11+; installs alone as the
`contactgate-client` distribution, without the gateway's server).

    from connectors.client import GatewayClient, GatewayFault

    client = GatewayClient("https://gateway.example.org:8443", cert="leeds/cert.pem", key="leeds/key.pem")
    results = client.submit_updates([{"SourceRecordId": "LA-0001", "Identity": {...}, ...}])
    candidates = client.find_child(user_id="sw1", role="social worker", reason_code="referral",
                                   reason_text="...", family_name="Okonkwo", date_of_birth="2016-02-11")
    child = client.get_contacts(candidates[0].child_id, user_id="sw1", role="social worker", ...)

Each operation returns typed results (`connectors.results`: frozen dataclasses, dates as dates).
Built on zeep over one requests session: kept-alive connections from a pool, one TLS context made
once with the organisation's certificate and key, trusting only the gateway CA. Each request gets a
wsu:Timestamp and a WS-Security signature over Body + Timestamp (RSA-SHA256 or ECDSA-SHA256, SHA-256
digests) with the same organisation's key. Each answer must be signed by the gateway's pinned
response-signing certificate and carry the SHA-256 digest of the exact bytes that were sent;
otherwise `ResponseNotTrusted` is raised. Faults raise a `GatewayFault` subclass named after the
contract's fault code (e.g. `ScopeDeniedFault`), with ``.code``; no answer at all (connection,
handshake, timeout) raises `GatewayUnreachable`. A request the SDK can tell is wrong before it is
sent raises `RequestInvalid` (a ValueError): `MissingField`, `UnknownField` or `InvalidValue`,
with ``.field`` naming it (``ChildUpdate[1].Involvement[0].CafAssessment``) and ``.problem``.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
import threading
from pathlib import Path
from typing import Callable

import requests
from requests.adapters import HTTPAdapter
import zeep
from cryptography import x509
from lxml import etree
from zeep.helpers import serialize_object
from zeep.transports import Transport
from zeep.wsdl.utils import etree_to_string

import contactgate_schemas as schemas
from contactgate_wire import soap, wsse
from contactgate_wire.answers import AnswerVerifier, GatewayError, GatewayUnreachable, ResponseNotTrusted
from contactgate_wire.certificates import TrustAnchors
from contactgate_wire.faults import FAULT_CODES
from contactgate_wire.soap import CG, SOAP_ACTION_PREFIX, SOAP_PATH
from contactgate_wire.soap import digest_b64 as request_digest  # SHA-256, base64: what RequestDigest carries
from connectors.results import Candidate, Child, PingAnswer, Shielding, UpdateResult
from connectors.submit_xml import submit_updates_envelope

BINDING = f"{{{CG}}}ContactGateBinding"


class RequestInvalid(ValueError):
    """The request is wrong, found before anything was sent: ``field`` names it (with the record's
    index: ``ChildUpdate[1].Involvement[0].CafAssessment``), ``problem`` says what is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


class MissingField(RequestInvalid):
    """A field the contract requires is missing."""


class UnknownField(RequestInvalid):
    """A field the contract does not have (a typo, or something the index never holds)."""


class InvalidValue(RequestInvalid):
    """A value of the wrong kind: a date not written YYYY-MM-DD, text for a yes/no, a code not in the list."""


def _check_date(value, field: str) -> None:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return
    # xsd:date's written form (years beyond 9999 and a time zone included: the gateway judges the range)
    if isinstance(value, str) and re.fullmatch(r"-?\d{4,}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(Z|[+-]\d{2}:\d{2})?",
                                                value):
        return
    raise InvalidValue(field, f"not a date ({type(value).__name__}): give a datetime.date or 'YYYY-MM-DD'")


# Access through another authorised user (Requester/OnBehalfOf): the fields, their limits (the XSD's
# OnBehalfOfType) and how the requester's identity may have been checked (IdentityCheckCodeType).
ON_BEHALF_FIELDS = {"name": 100, "organisation": 100, "role": 64, "phone": 32, "identity_check": 32,
                    "identity_note": 500}
IDENTITY_CHECKS = ("callback_switchboard", "callback_directory", "known_in_person", "secure_email", "other")
_PHONE = re.compile(r"\+?[0-9][0-9 ()-]{4,31}")


def on_behalf_element(on_behalf_of) -> dict:
    """``on_behalf_of`` (a dict of ON_BEHALF_FIELDS) checked and shaped as Requester/OnBehalfOf:
    `MissingField`, `UnknownField` or `InvalidValue` naming the field (``OnBehalfOf.phone``...)."""
    if not isinstance(on_behalf_of, dict):
        raise InvalidValue("OnBehalfOf", f"give a dict of {', '.join(ON_BEHALF_FIELDS)}")
    for key in on_behalf_of:
        if key not in ON_BEHALF_FIELDS:
            raise UnknownField(f"OnBehalfOf.{key}", f"not a field of OnBehalfOf (fields: {', '.join(ON_BEHALF_FIELDS)})")
    values = {}
    for key, limit in ON_BEHALF_FIELDS.items():
        value = on_behalf_of.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise MissingField(f"OnBehalfOf.{key}", "required, and not blank")
        if not isinstance(value, str):
            raise InvalidValue(f"OnBehalfOf.{key}", f"not text ({type(value).__name__}): give a str")
        value = " ".join(value.split())
        if len(value) > limit:
            raise InvalidValue(f"OnBehalfOf.{key}", f"at most {limit} characters ({len(value)} given)")
        values[key] = value
    if not _PHONE.fullmatch(values["phone"]):
        raise InvalidValue("OnBehalfOf.phone", "not a phone number: digits, spaces, brackets, dashes, a leading +")
    if values["identity_check"] not in IDENTITY_CHECKS:
        raise InvalidValue("OnBehalfOf.identity_check", f"not one of the codes: give one of {', '.join(IDENTITY_CHECKS)}")
    return {"Name": values["name"], "Organisation": values["organisation"], "Role": values["role"],
            "Phone": values["phone"], "IdentityCheck": {"_value_1": values["identity_note"],
                                                        "code": values["identity_check"]}}


def check_update(record, index: int) -> None:
    """``record`` (a ChildUpdate dict) against the contract's shape, read from the packaged schema:
    `RequestInvalid` naming the first field that is wrong."""
    from connectors import model
    from connectors.transforms import suggestion

    def leaf(node, value, field: str) -> None:
        kind = node.leaf.kind
        if kind == "date":
            _check_date(value, field)
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise InvalidValue(field, f"not True or False ({type(value).__name__}): give a bool")
        elif isinstance(value, (dict, list, tuple)):
            raise InvalidValue(field, f"not text ({type(value).__name__}): give a str")
        elif node.leaf.enumeration and value not in node.leaf.enumeration:
            raise InvalidValue(field, f"not one of the codes: give one of {', '.join(node.leaf.enumeration)}")

    def group(node, value, field: str) -> None:
        names = [c.name for c in node.children]
        if not isinstance(value, dict):
            raise InvalidValue(field, f"give a dict of {', '.join(names)}")
        for key in value:
            if key not in names:
                raise UnknownField(f"{field}.{key}", f"not a field of {node.name}{suggestion(key, names)}")
        for child in node.children:
            inner = f"{field}.{child.name}"
            given = value.get(child.name)
            if given is None or given == []:
                if child.required:
                    raise MissingField(inner, "required, and missing")
                continue
            if child.repeating and not isinstance(given, (list, tuple)):
                given = [given]
            elif not child.repeating and isinstance(given, (list, tuple)):
                raise InvalidValue(inner, "one value, not a list")
            for number, item in enumerate(given if child.repeating else [given]):
                at = f"{inner}[{number}]" if child.repeating and child.leaf is None else inner
                leaf(child, item, at) if child.leaf is not None else group(child, item, at)

    group(model.tree(), record, f"ChildUpdate[{index}]")


class GatewayFault(GatewayError):
    """The gateway refused the request. ``code`` is the contract's fault code; ``request_id`` names
    the exchange in the gateway's audit trail and logs (quote it when asking why)."""

    code = "Unknown"

    def __init__(self, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.request_id = request_id


FAULT_CLASSES: dict[str, type[GatewayFault]] = {
    code: type(f"{code}Fault", (GatewayFault,), {"code": code, "__doc__": f"The gateway answered {code}."})
    for code in FAULT_CODES
}
globals().update({cls.__name__: cls for cls in FAULT_CLASSES.values()})


def fault_from(code: str, message: str, request_id: str | None = None) -> GatewayFault:
    return FAULT_CLASSES.get(code, GatewayFault)(code, message, request_id)


class _MutualTLSAdapter(HTTPAdapter):
    """Every connection uses one TLS context, built once: the organisation's certificate and key, and
    only the gateway's CA as trust (never the system store, and never a CA bundle named by
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, which requests would otherwise let override it: #3829).
    Connections are pooled and kept alive (up to ``pool_size`` per gateway)."""

    def __init__(self, context: ssl.SSLContext, pool_size: int):
        self._context = context
        super().__init__(pool_connections=1, pool_maxsize=pool_size)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host_params, {"ssl_context": self._context, "cert_reqs": "CERT_REQUIRED"}

    def cert_verify(self, conn, url, verify, cert):
        """Nothing to add: the context holds the trust and the client certificate."""


def tls_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return context


class _RecordingTransport(Transport):
    """Remembers (per thread) the digest of the exact bytes posted, to check the answer's
    RequestDigest against."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = threading.local()

    def post_xml(self, address, envelope, headers):
        message = etree_to_string(envelope)
        self.sent.digest = request_digest(message)
        return self.post(address, message, headers)


class _WsSecurity:
    """zeep's wsse hook: sign outgoing envelopes, verify incoming ones."""

    def __init__(self, signer: wsse.EnvelopeSigner, verifier: AnswerVerifier,
                 transport: _RecordingTransport, clock: Callable[[], dt.datetime]):
        self._signer = signer
        self._verifier = verifier
        self._transport = transport
        self._clock = clock

    def apply(self, envelope, headers):
        self._signer.sign(envelope, created=self._clock())
        return envelope, headers

    def verify(self, envelope):
        self._verifier.verify(envelope, getattr(self._transport.sent, "digest", None))
        return envelope


class GatewayClient:
    """A connecting organisation's client: one per process (it is thread-safe), reused for every call.

    Only the organisation's key (`contactgate csr`) and the files `contactgate cert approve CODE --proposal ID --out-dir DIR` wrote are needed: ``cert`` and ``key``
    (the organisation's), and beside them ``ca.pem`` (the gateway CA: the only trust for the
    gateway's TLS certificate and its signing certificate) and ``gateway-signing.pem`` (the pinned
    certificates that sign the gateway's answers); ``ca`` and ``gateway_signing_cert`` name them
    elsewhere. The key and certificates are read once, here.

    ``timeout`` (seconds) bounds connecting and each answer; ``pool_size`` is how many kept-alive
    connections to the gateway it holds for concurrent threads."""

    def __init__(self, base_url: str, *, cert: Path | str, key: Path | str, ca: Path | str | None = None,
                 gateway_signing_cert: Path | str | None = None, binary_token: bool = True, timeout: float = 60,
                 pool_size: int = 10, clock: Callable[[], dt.datetime] | None = None, wsdl: str | None = None):
        cert, key = Path(cert), Path(key)
        ca = Path(ca) if ca is not None else cert.parent / "ca.pem"
        gateway_signing_cert = (Path(gateway_signing_cert) if gateway_signing_cert is not None
                                else cert.parent / "gateway-signing.pem")
        self.base_url = base_url.rstrip("/")
        self.endpoint = self.base_url + SOAP_PATH
        self.timeout = timeout
        self.session = requests.Session()
        self.session.mount("https://", _MutualTLSAdapter(tls_context(cert, key, ca), pool_size))
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.signer = wsse.EnvelopeSigner(key.read_bytes(), cert.read_bytes(), binary_token=binary_token)
        self.verifier = AnswerVerifier(TrustAnchors.from_files([ca]),
                                       x509.load_pem_x509_certificates(gateway_signing_cert.read_bytes()))
        self.transport = _RecordingTransport(session=self.session, timeout=timeout,
                                             operation_timeout=timeout)
        wsdl = wsdl or self._packaged_wsdl()  # same version as this SDK; or pass "<base>/soap/v1?wsdl"
        self.zeep = zeep.Client(wsdl, transport=self.transport,
                                wsse=_WsSecurity(self.signer, self.verifier, self.transport, self._now))
        self.service = self.zeep.create_service(BINDING, self.endpoint)
        self._wsdl = wsdl
        # connectors.submit_xml builds from the packaged schema: only for a client of the packaged WSDL
        self._built_from_schema = wsdl == self._packaged_wsdl()
        self._unsigned: zeep.Client | None = None

    def close(self) -> None:
        """Close the kept-alive connections (the client may still be used: it reconnects)."""
        self.session.close()

    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _packaged_wsdl() -> str:
        from importlib import resources

        return str(resources.files("contactgate_schemas").joinpath(schemas.WSDL_NAME))

    def _now(self) -> dt.datetime:
        return self.clock()

    @classmethod
    def from_directory(cls, base_url: str, directory: Path | str, **kwargs) -> "GatewayClient":
        """Use the directory holding key.pem (`contactgate csr`) and the files `cert approve --out-dir` wrote."""
        d = Path(directory)
        return cls(base_url, cert=d / "cert.pem", key=d / "key.pem", **kwargs)

    # ---- operations ------------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs):
        try:
            with _own_errors():
                result = getattr(self.service, operation)(**kwargs)
        except zeep.exceptions.Fault as fault:
            raise self._fault(fault) from None
        except (zeep.exceptions.TransportError, requests.RequestException, etree.XMLSyntaxError) as exc:
            raise GatewayUnreachable(f"{operation}: {exc}") from exc
        return serialize_object(result, dict)

    @staticmethod
    def _fault(fault: zeep.exceptions.Fault) -> GatewayError:
        detail = fault.detail
        code = detail.findtext(f"{{{CG}}}Error/{{{CG}}}Code") if detail is not None else None
        request_id = detail.findtext(f"{{{CG}}}Error/{{{CG}}}RequestId") if detail is not None else None
        return fault_from(code or "Unknown", fault.message or "", request_id)

    @staticmethod
    def _who(user_id: str, role: str, reason_code: str | None, reason_text: str | None,
             on_behalf_of: dict | None = None) -> dict:
        call = {"Requester": {"UserId": user_id, "Role": role}}
        if on_behalf_of is not None:  # only when given: a gateway from before the element refuses it
            call["Requester"]["OnBehalfOf"] = on_behalf_element(on_behalf_of)
        if reason_code is not None or reason_text is not None:
            call["Reason"] = {"_value_1": reason_text or "", "code": reason_code or ""}
        return call

    def submit_updates(self, updates: list[dict]) -> list[UpdateResult]:
        """Send 1 to 1,000 child records (scope ``push``), each a dict shaped like the WSDL's
        ``ChildUpdate``; one `UpdateResult` per record, in order.

            results = client.submit_updates([{
                "SourceRecordId": "LA-0001",
                "Identity": {"FamilyName": "Okonkwo", "GivenName": ["Chidi"], "DateOfBirth": "2016-02-11",
                             "Gender": "male", "NhsNumber": "9434765919"},
                "Address": {"Line1": "12 Acacia Avenue", "Town": "Leeds", "Postcode": "LS6 2AB"},
                "Involvement": [{"Service": "Children's social care", "Start": "2025-09-01",
                                 "CafAssessment": True, "LeadProfessional": True}],
            }])
            results[0].outcome, results[0].child_id   # ("created", "…"); or updated, matched, rejected
                                                      # (with the reason in .detail); review only from
                                                      # gateways before issue 22

        Sending the same records again (a retry) returns the first answer and applies nothing twice."""
        for index, record in enumerate(updates):
            check_update(record, index)
        answer = self._call("SubmitUpdates", ChildUpdate=updates)
        return [UpdateResult.from_wire(r) for r in answer["Result"]]

    def find_child(self, *, user_id: str, role: str, reason_code: str | None, reason_text: str | None,
                   family_name: str | None = None, given_name: str | None = None,
                   date_of_birth: str | dt.date | None = None, gender: str | None = None,
                   postcode: str | None = None, nhs_number: str | None = None, pupil_number: str | None = None,
                   include_score: bool = True, on_behalf_of: dict | None = None) -> list[Candidate]:
        """Candidates for a child (scope ``query``), best first, at most 10: by ``nhs_number`` or
        ``pupil_number``, or by ``family_name`` + ``date_of_birth`` (``given_name``, ``gender`` and
        ``postcode`` narrow it). Every read names the practitioner and why.

            for candidate in client.find_child(user_id="dr.ahmed", role="paediatrician",
                                               reason_code="care_coordination", reason_text="case conference",
                                               family_name="Okonkwo", date_of_birth="2016-02-11"):
                print(candidate.child_id, candidate.given_names, candidate.locality, candidate.score)

        No candidate is an empty list: it never says whether the child exists elsewhere.

        ``on_behalf_of``: a mediator's search for a requester with no access of their own (only an
        organisation accredited for mediation, with ``role="mediator"``; docs/integrators.md):

            client.find_child(user_id="contact.team.1", role="mediator", reason_code="safeguarding",
                              reason_text="health visitor's home visit tomorrow", family_name="Okonkwo",
                              date_of_birth="2016-02-11", on_behalf_of={
                                  "name": "Jane Smith", "organisation": "Leeds Community Healthcare",
                                  "role": "health visitor", "phone": "0113 496 0000",
                                  "identity_check": "callback_switchboard",
                                  "identity_note": "called back on the trust's published switchboard number"})"""
        if date_of_birth is not None:
            _check_date(date_of_birth, "DateOfBirth")
        call = self._who(user_id, role, reason_code, reason_text, on_behalf_of)
        criteria = {"FamilyName": family_name, "GivenName": given_name, "DateOfBirth": date_of_birth,
                    "Gender": gender, "Postcode": postcode, "NhsNumber": nhs_number,
                    "PupilNumber": pupil_number, "IncludeScore": include_score}
        call.update({k: v for k, v in criteria.items() if v is not None})
        return [Candidate.from_wire(c) for c in self._call("FindChild", **call).get("Candidate") or []]

    def get_contacts(self, child_id: str, *, user_id: str, role: str, reason_code: str | None,
                     reason_text: str | None, include_provenance: bool = False,
                     on_behalf_of: dict | None = None) -> Child:
        """A child's identity and current involvements with their practitioners' contact details
        (scope ``query``), as far as ``role`` may see them.

            child = client.get_contacts(child_id, user_id="dr.ahmed", role="paediatrician",
                                        reason_code="care_coordination", reason_text="case conference")
            lead = [c for c in child.contacts if c.involvement.lead_professional]
            print(child.identity.family_name, lead[0].organisation, lead[0].involvement.phone)

        ``include_provenance=True``: ``child.address_source`` says which organisation supplied the
        address shown and when the gateway received it (``.organisation``, ``.received``).

        An unknown child and one this organisation may not see are the same `NotFoundFault`.

        ``on_behalf_of``: as for `find_child`; the answer is then limited to what both the
        requester's role and the mediator's may see."""
        call = self._who(user_id, role, reason_code, reason_text, on_behalf_of)
        if include_provenance:  # only when asked: a gateway from before the element refuses it
            call["IncludeProvenance"] = True
        return Child.from_wire(self._call("GetContacts", ChildId=child_id, **call)["Child"])

    def set_shielding(self, child_id: str, shielded: bool, *, user_id: str, role: str, reason_code: str | None,
                      reason_text: str | None) -> Shielding:
        """Shield (or unshield) a child (scope ``shield``): its location is then withheld from every
        role not allowed to see it.

            client.set_shielding(child_id, True, user_id="sw1", role="social worker",
                                 reason_code="safeguarding", reason_text="risk of harm").shielded  # True"""
        call = self._who(user_id, role, reason_code, reason_text)
        return Shielding.from_wire(self._call("SetShielding", ChildId=child_id, Shielded=shielded, **call))

    def ping(self, *, user_id: str, role: str) -> PingAnswer:
        """The onboarding check (accreditation needed, no scope): the organisation the gateway sees,
        its accreditation's end and scopes, and the gateway's clock.

            answer = client.ping(user_id="it-admin", role="onboarding")
            answer.organisation, answer.scopes, answer.accreditation_expires, answer.gateway_time"""
        return PingAnswer.from_wire(self._call("Ping", Requester={"UserId": user_id, "Role": role}))

    def push_file(self, extract, mapping, *, state, rejects, **kwargs):
        """Push a source extract with a declarative mapping (connectors.push.push_file): rows mapped
        and checked, bad rows to ``rejects``, the rest in signed batches of up to 1,000, retried,
        resumable and sent only when changed (``state``). Returns a connectors.push.Summary."""
        from connectors.push import push_file  # when used: calling the gateway needs no mapping machinery

        return push_file(self, extract, mapping, state=state, rejects=rejects, **kwargs)

    # ---- lower level: for tools and tests that need the exact bytes ------------------------------

    def build_request(self, operation: str, *, sign: bool = True, created: dt.datetime | None = None,
                      **kwargs) -> bytes:
        """The signed request bytes zeep would send for ``operation``. A SubmitUpdates is built
        straight from the schema's types (`connectors.submit_xml`: the same bytes, ~8 times faster)
        when its records are plain dicts of str and bool and the client uses the packaged WSDL, by
        zeep otherwise (a client given another WSDL builds as that one says)."""
        envelope = None
        if operation == "SubmitUpdates" and self._built_from_schema and set(kwargs) == {"ChildUpdate"}:
            envelope = submit_updates_envelope(kwargs["ChildUpdate"])
        if envelope is None:
            envelope = self._zeep_envelope(operation, **kwargs)
        if sign:
            self.signer.sign(envelope, created=created or self.clock())
        return etree_to_string(envelope)

    def _zeep_envelope(self, operation: str, **kwargs) -> etree._Element:
        """The unsigned envelope zeep builds for ``operation`` (its checks as the SDK's own errors)."""
        if self._unsigned is None:  # zeep applies its wsse hook in create_message: use a plain twin
            self._unsigned = zeep.Client(self._wsdl, transport=self.transport)
        with _own_errors():
            return self._unsigned.create_message(self._unsigned.create_service(BINDING, self.endpoint),
                                                 operation, **kwargs)

    def _post(self, operation: str, data: bytes) -> requests.Response:
        return self.session.post(self.endpoint, data=data, timeout=self.timeout, headers={
            "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}{operation}"'})

    def post_raw(self, operation: str, data: bytes, *, verify_response: bool = True) -> tuple[int, etree._Element]:
        """POST bytes as-is; return (HTTP status, response envelope), the signature checked."""
        response = self._post(operation, data)
        envelope = etree.fromstring(response.content, soap.thread_parser())  # hardened, one per thread
        if verify_response:
            self.verifier.verify(envelope, request_digest(data))
        return response.status_code, envelope

    def exchange(self, operation: str, data: bytes) -> tuple[int, etree._Element]:
        """POST signed request bytes (from `build_request`); return (HTTP status, the answer's
        verified soap:Body: only what the gateway signed). `GatewayUnreachable` when no SOAP answer
        came back (connection, timeout, or a page that is not SOAP), `ResponseNotTrusted` when the
        answer is not the gateway's answer to these bytes."""
        try:
            response = self._post(operation, data)
        except requests.RequestException as exc:
            raise GatewayUnreachable(f"{operation}: {exc}") from exc
        try:
            envelope = soap.parse_untrusted(response.content)
        except soap.UnsafeXML:
            raise GatewayUnreachable(f"{operation}: HTTP {response.status_code} without a SOAP answer") from None
        return response.status_code, self.verifier.verify(envelope, request_digest(data)).body

    fault_code = staticmethod(soap.fault_code)


class _own_errors:
    """zeep's checks of a request, as the SDK's own errors (a ValidationError's path names the field)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, zeep.exceptions.ValidationError):
            field = ".".join(str(p) for p in (error.path or [])) or "request"
            raise InvalidValue(field, str(error.message or error)) from None
        if isinstance(error, TypeError) and "unexpected keyword argument" in str(error):
            name = re.search(r"argument '([^']+)'", str(error))
            raise UnknownField(name[1] if name else "request", "not a field of this request") from None
        return False
