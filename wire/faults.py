"""One exception per refusal, each carrying its contract fault code.

The pipeline raises these; `contactgate_wire.soap.render_fault` is the single place that turns them into SOAP
faults. ``public_message`` is what the client is told; ``detail`` is the exact reason, kept for the
audit trail only (like Fernet folding every failure into InvalidToken, the client learns only what is
safe: never whether a child exists, never internals).
"""

from __future__ import annotations


class Refusal(Exception):
    code: str = "MalformedMessage"
    faultcode: str = "soap:Client"
    http_status: int = 500
    public_message: str = "The message was refused."

    def __init__(self, detail: str = "", *, public_message: str | None = None):
        super().__init__(detail or self.public_message)
        self.detail = detail or self.public_message
        if public_message is not None:
            self.public_message = public_message


class NotAccredited(Refusal):
    code = "NotAccredited"
    public_message = "The organisation is not accredited for this gateway."


class CertificateRejected(Refusal):
    code = "CertificateRejected"
    public_message = "The certificate is not accepted."


class SignatureInvalid(Refusal):
    code = "SignatureInvalid"
    public_message = "The WS-Security signature is missing or invalid."


class SignerMismatch(Refusal):
    code = "SignerMismatch"
    public_message = "The message was not signed by the organisation of the TLS client certificate."


class MessageExpired(Refusal):
    code = "MessageExpired"
    public_message = "The message's wsu:Timestamp is unreadable, expired or in the future."


class Replay(Refusal):
    code = "Replay"
    public_message = "This message has already been received."


class MalformedMessage(Refusal):
    code = "MalformedMessage"
    public_message = "The message is not a well-formed SOAP 1.1 request."


class SchemaInvalid(Refusal):
    code = "SchemaInvalid"
    public_message = "The message does not conform to the ContactGate schema."


class ScopeDenied(Refusal):
    code = "ScopeDenied"
    public_message = "The organisation's accreditation does not cover this operation."


class ReasonRequired(Refusal):
    code = "ReasonRequired"
    public_message = "Every read must state a reason code and a reason text."


class RateLimited(Refusal):
    code = "RateLimited"
    public_message = "Too many requests; slow down and retry later."


class TooLarge(Refusal):
    code = "TooLarge"
    public_message = "The message is larger than the gateway accepts."


class NotFound(Refusal):
    code = "NotFound"
    public_message = "No record is available for that request."


class Unavailable(Refusal):
    code = "Unavailable"
    faultcode = "soap:Server"
    http_status = 503
    public_message = "The gateway cannot answer now; retry later."


FAULT_CODES = tuple(
    cls.code
    for cls in (
        NotAccredited, CertificateRejected, SignatureInvalid, SignerMismatch, MessageExpired, Replay,
        MalformedMessage, SchemaInvalid, ScopeDenied, ReasonRequired, RateLimited, TooLarge, NotFound,
        Unavailable,
    )
)
