"""Step 10: every answer, fault or not, is a SOAP envelope signed by the gateway (Body + Timestamp),
carrying the request's digest so the client can bind it to what it sent."""

from __future__ import annotations

from lxml import etree

from contactgate_wire.faults import Refusal
from gateway.pipeline.context import Services
from contactgate_wire.soap import fault_payload, new_envelope, to_bytes


def signed_response(payload: etree._Element, services: Services) -> bytes:
    envelope = new_envelope(payload)
    services.signer.sign(envelope, created=services.clock())
    return to_bytes(envelope)


def signed_fault(refusal: Refusal, request_digest: str | None, services: Services,
                 request_id: str | None = None) -> bytes:
    payload = fault_payload(refusal.faultcode, refusal.public_message, refusal.code, request_digest, request_id)
    return signed_response(payload, services)
