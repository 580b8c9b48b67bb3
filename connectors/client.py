"""The client SDK: call the gateway from a connecting system.

Built on zeep over a requests session that presents the organisation's TLS certificate. Each
request gets a wsu:Timestamp and a WS-Security signature over Body + Timestamp (RSA-SHA256 or
ECDSA-SHA256, SHA-256 digests) with the same organisation's key. Each response must be signed by the
gateway's response-signing certificate (pinned) and carry the SHA-256 digest of the exact bytes that
were sent; otherwise `ResponseNotTrusted` is raised. Faults raise a `GatewayFault` subclass named
after the contract's fault code (e.g. `ScopeDeniedFault`), with ``.code``.

    client = GatewayClient.from_directory("https://gateway:8443", "certs/LA1")
    client.submit_updates([{"SourceRecordId": "r1", "Identity": {...}}])
    client.find_child(user_id="u1", role="gp", reason_code="referral", reason_text="...",
                      family_name="Smith", date_of_birth="2015-04-01")
"""

from __future__ import annotations

import datetime as dt
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
from contactgate_wire.answers import AnswerVerifier, GatewayError, ResponseNotTrusted
from contactgate_wire.certificates import TrustAnchors
from contactgate_wire.faults import FAULT_CODES
from contactgate_wire.soap import CG, SOAP_ACTION_PREFIX, SOAP_PATH
from contactgate_wire.soap import digest_b64 as request_digest  # SHA-256, base64: what RequestDigest carries

BINDING = f"{{{CG}}}ContactGateBinding"


class GatewayUnreachable(GatewayError):
    """No SOAP answer came back: the connection or the TLS handshake failed (a certificate the
    gateway does not accept ends here), or the answer was not a SOAP envelope."""


class GatewayFault(GatewayError):
    """The gateway refused the request. ``code`` is the contract's fault code."""

    code = "Unknown"

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


FAULT_CLASSES: dict[str, type[GatewayFault]] = {
    code: type(f"{code}Fault", (GatewayFault,), {"code": code, "__doc__": f"The gateway answered {code}."})
    for code in FAULT_CODES
}
globals().update({cls.__name__: cls for cls in FAULT_CLASSES.values()})


def fault_from(code: str, message: str) -> GatewayFault:
    return FAULT_CLASSES.get(code, GatewayFault)(code, message)


class _GatewayCAAdapter(HTTPAdapter):
    def __init__(self, ca_file: str):
        self._ca_file = ca_file
        super().__init__()

    def send(self, request, **kwargs):
        kwargs["verify"] = self._ca_file
        return super().send(request, **kwargs)


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


_SNAKE = {
    "family_name": "FamilyName", "given_name": "GivenName", "date_of_birth": "DateOfBirth",
    "gender": "Gender", "postcode": "Postcode", "nhs_number": "NhsNumber", "pupil_number": "PupilNumber",
    "include_score": "IncludeScore",
}


class GatewayClient:
    def __init__(self, base_url: str, *, cert: Path | str, key: Path | str, ca: Path | str,
                 gateway_signing_cert: Path | str, binary_token: bool = True, timeout: float = 60,
                 clock: Callable[[], dt.datetime] | None = None, wsdl: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.endpoint = self.base_url + SOAP_PATH
        self.session = requests.Session()
        self.session.cert = (str(cert), str(key))
        self.session.verify = str(ca)
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify (requests #3829):
        # the gateway's CA must win, whatever the environment says.
        self.session.mount("https://", _GatewayCAAdapter(str(ca)))
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.signer = wsse.EnvelopeSigner(Path(key).read_bytes(), Path(cert).read_bytes(),
                                          binary_token=binary_token)
        self.verifier = AnswerVerifier(
            TrustAnchors.from_files([Path(ca)]),
            x509.load_pem_x509_certificates(Path(gateway_signing_cert).read_bytes()))
        self.transport = _RecordingTransport(session=self.session, timeout=timeout,
                                             operation_timeout=timeout)
        wsdl = wsdl or self._packaged_wsdl()  # same version as this SDK; or pass "<base>/soap/v1?wsdl"
        self.zeep = zeep.Client(wsdl, transport=self.transport,
                                wsse=_WsSecurity(self.signer, self.verifier, self.transport, self._now))
        self.service = self.zeep.create_service(BINDING, self.endpoint)
        self._wsdl = wsdl
        self._unsigned: zeep.Client | None = None

    @staticmethod
    def _packaged_wsdl() -> str:
        from importlib import resources

        return str(resources.files("contactgate_schemas").joinpath(schemas.WSDL_NAME))

    def _now(self) -> dt.datetime:
        return self.clock()

    @classmethod
    def from_directory(cls, base_url: str, directory: Path | str, **kwargs) -> "GatewayClient":
        """Use the files `contactgate cert issue CODE --out-dir DIR` wrote."""
        d = Path(directory)
        return cls(base_url, cert=d / "cert.pem", key=d / "key.pem", ca=d / "ca.pem",
                   gateway_signing_cert=d / "gateway-signing.pem", **kwargs)

    # ---- operations ------------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs):
        try:
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
        return fault_from(code or "Unknown", fault.message or "")

    @staticmethod
    def _who(user_id: str, role: str, reason_code: str | None, reason_text: str | None) -> dict:
        call = {"Requester": {"UserId": user_id, "Role": role}}
        if reason_code is not None or reason_text is not None:
            call["Reason"] = {"_value_1": reason_text or "", "code": reason_code or ""}
        return call

    def submit_updates(self, updates: list[dict]) -> list[dict]:
        """Push child records; returns one Result dict per update (ChildId, Outcome, Detail)."""
        return self._call("SubmitUpdates", ChildUpdate=updates)["Result"]

    def find_child(self, *, user_id: str, role: str, reason_code: str | None, reason_text: str | None,
                   **criteria) -> list[dict]:
        """Find candidates by family_name + date_of_birth, or nhs_number / pupil_number."""
        call = self._who(user_id, role, reason_code, reason_text)
        call.update({_SNAKE[k]: v for k, v in criteria.items() if v is not None})
        call.setdefault("IncludeScore", True)
        return self._call("FindChild", **call).get("Candidate") or []

    def get_contacts(self, child_id: str, *, user_id: str, role: str, reason_code: str | None,
                     reason_text: str | None) -> dict:
        """The child's identity and current involvements with contact details."""
        call = self._who(user_id, role, reason_code, reason_text)
        return self._call("GetContacts", ChildId=child_id, **call)["Child"]

    def set_shielding(self, child_id: str, shielded: bool, *, user_id: str, role: str, reason_code: str | None,
                      reason_text: str | None) -> dict:
        """Shield (or unshield) a child: its location is then withheld from every role not allowed."""
        call = self._who(user_id, role, reason_code, reason_text)
        return self._call("SetShielding", ChildId=child_id, Shielded=shielded, **call)

    def ping(self, *, user_id: str, role: str) -> dict:
        """The onboarding check: the organisation the gateway sees, its accreditation expiry and scopes,
        and the gateway's time (accreditation needed, no scope)."""
        return self._call("Ping", Requester={"UserId": user_id, "Role": role})

    def push_file(self, extract, mapping, *, state, rejects, **kwargs):
        """Push a source extract with a declarative mapping (connectors.push.push_file): rows mapped
        and checked, bad rows to ``rejects``, the rest in signed batches of up to 1,000, retried,
        resumable and sent only when changed (``state``). Returns a connectors.push.Summary."""
        from connectors.push import push_file

        return push_file(self, extract, mapping, state=state, rejects=rejects, **kwargs)

    # ---- lower level: for tools and tests that need the exact bytes ------------------------------

    def build_request(self, operation: str, *, sign: bool = True, created: dt.datetime | None = None,
                      **kwargs) -> bytes:
        """The signed request bytes zeep would send for ``operation``."""
        if self._unsigned is None:  # zeep applies its wsse hook in create_message: use a plain twin
            self._unsigned = zeep.Client(self._wsdl, transport=self.transport)
        envelope = self._unsigned.create_message(self._unsigned.create_service(BINDING, self.endpoint),
                                                 operation, **kwargs)
        if sign:
            self.signer.sign(envelope, created=created or self.clock())
        return etree_to_string(envelope)

    def post_raw(self, operation: str, data: bytes, *, verify_response: bool = True) -> tuple[int, etree._Element]:
        """POST bytes as-is; return (HTTP status, response envelope), the signature checked."""
        response = self.session.post(self.endpoint, data=data, headers={
            "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}{operation}"'})
        envelope = etree.fromstring(response.content, etree.XMLParser(resolve_entities=False, no_network=True))
        if verify_response:
            self.verifier.verify(envelope, request_digest(data))
        return response.status_code, envelope

    fault_code = staticmethod(soap.fault_code)
