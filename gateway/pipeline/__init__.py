"""The message pipeline (DESIGN.md "How a message flows"): one module per step, each of which can
refuse with a `contactgate_wire.faults.Refusal`. `handle` runs them in order and is the one place refusals
become audited, signed SOAP faults."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from gateway.pipeline import contactgate_v1 as dialect
from gateway import audit, metrics
from contactgate_wire.faults import CertificateRejected, Refusal, Unavailable
from gateway.index import ids
from gateway.index.linkage.versions import ModelUnavailable
from gateway.pipeline.accreditation import check_accreditation
from gateway.pipeline.authorisation import authorise, count_in_transaction
from gateway.pipeline.context import Exchange, Services
from gateway.pipeline.dispatch import dispatch
from gateway.pipeline.parse import parse_message
from gateway.pipeline.replay import AlreadyAnswered, check_replay
from gateway.pipeline.respond import signed_fault
from gateway.pipeline.schema import validate_schema
from gateway.pipeline.tls_client import identify_client
from gateway.pipeline.wssecurity import verify_security
from contactgate_wire.soap import fault_payload, new_envelope, to_bytes

log = logging.getLogger("contactgate.pipeline")

# A backend failure, not a bug: answered Unavailable with one line in the log, not a traceback.
DATABASE_FAILURES = (OperationalError, SQLAlchemyTimeoutError)


@dataclass
class ReceivedBody:
    """The request as read: ``data`` holds at most limit + 1 bytes; ``size`` and ``digest`` (base64
    SHA-256) describe everything received (digest None if reading stopped early)."""

    data: bytes
    size: int
    digest: str | None


@dataclass
class Answer:
    status: int
    body: bytes
    request_id: str | None = None  # the exchange's id in the audit trail (X-Request-Id)
    outcome: str = "accepted"      # as audited: accepted, refused, repeat
    fault_code: str | None = None


def handle(body: ReceivedBody, soap_action: str | None, peer_der: bytes | None, services: Services,
           source_address: str | None = None, certificate_problem: str | None = None,
           proxy_der: bytes | None = None) -> Answer:
    exchange = Exchange(raw=body.data, size=body.size, soap_action=soap_action, peer_der=peer_der,
                        received_at=services.clock(), request_digest=body.digest,
                        source_address=(source_address or None) and source_address[:64],
                        certificate_problem=certificate_problem, proxy_der=proxy_der)
    started = time.perf_counter()
    answer = _handle(exchange, services)
    answer.request_id = exchange.request_id
    metrics.exchange(exchange.operation, exchange.org_code, answer.outcome, answer.fault_code,
                     time.perf_counter() - started)
    return answer


def _handle(exchange: Exchange, services: Services) -> Answer:
    try:
        try:
            identify_client(exchange, services)
            parse_message(exchange, services)
            validate_schema(exchange, services)
            verify_security(exchange, services)
            refuse_while_restored(services)
            check_replay(exchange, services)
            check_accreditation(exchange, services)
            authorise(exchange, services)
            return Answer(200, dispatch(exchange, services))
        finally:
            exchange.close_lookups()  # the steps' shared read transaction (ended by the exchange's, if any)
    except AlreadyAnswered as repeat:
        return _repeat(exchange, repeat.answer, services)
    except Refusal as refusal:
        return _refuse(exchange, refusal, services)
    except DATABASE_FAILURES as exc:  # the database failed or timed out
        metrics.backend_error("database")
        log.warning("database unavailable: %s", _first_line(exc), extra={"request_id": exchange.request_id})
        cause = type(getattr(exc, "orig", None) or exc).__name__
        return _refuse(exchange, Unavailable(f"database unavailable ({cause})"), services)
    except ModelUnavailable as exc:  # the linkage model in use is missing or changed: link nothing
        log.error("linkage model unavailable: %s", exc, extra={"request_id": exchange.request_id})
        return _refuse(exchange, Unavailable("linkage model unavailable"), services)
    except Exception:  # a bug: fail closed, tell nothing
        log.exception("unexpected failure while handling a message", extra={"request_id": exchange.request_id})
        return _refuse(exchange, Unavailable("internal error"), services)


def refuse_while_restored(services: Services) -> None:
    """After `contactgate restore`, nothing is served until two officers acknowledge the restore
    (gateway.backup): the message is refused Unavailable, and audited as such."""
    why = services.restore_gate.reason()
    if why is not None:
        raise Unavailable(f"the gateway does not serve: {why}")


def _repeat(exchange: Exchange, first_answer: bytes, services: Services) -> Answer:
    """A retry of a SubmitUpdates already answered: the first answer again, once it is audited."""
    try:
        _audit_alone(exchange, services, exchange.audit_entry(
            "repeat", detail="retry of a processed message: first answer returned, nothing applied",
            answer=first_answer))
    except Exception:
        log.exception("could not audit a repeated message", extra={"request_id": exchange.request_id})
        return _refuse(exchange, Unavailable("audit unavailable"), services)
    return Answer(200, first_answer, outcome="repeat")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _audit_alone(exchange: Exchange, services: Services, entry: audit.Entry) -> None:
    """The entry of an exchange that made no effect, in a transaction of its own, which also counts
    the message if its rate count was to be made in the exchange's transaction and rolled back."""
    with services.write_transaction() as conn:
        count_in_transaction(conn, exchange, services, judge=False)
        services.audit.append(conn, entry)
    exchange.uncounted = None


# OpenSSL's reasons for a handshake the server refused over the client certificate.
REFUSED_CERTIFICATE_REASONS = frozenset({"PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED"})


# Refused handshakes audited per source address and minute (per worker process); the server's
# front counts them in memory and only logs the rest (gateway/front.py).
HANDSHAKE_AUDITS_PER_MINUTE = 5


def refuse_handshake(services: Services, peer_ip: str, reason: str) -> None:
    """Audit a TLS handshake refused for want of a trusted client certificate. Nobody can be named
    (no certificate was accepted), so the entry carries the address and OpenSSL's reason. Anyone
    who can reach the port can cause these: the caller decides which are worth an entry (the first
    HANDSHAKE_AUDITS_PER_MINUTE a minute per address, counted in memory, never in the shared store)
    and calls this off the event loop."""
    try:
        with services.write_transaction() as conn:
            services.audit.append(conn, audit.Entry(
                operation="tls_handshake", outcome="refused", fault_code=CertificateRejected.code,
                source_address=str(peer_ip)[:64], detail=f"TLS handshake from {peer_ip} refused: {reason}"))
    except Exception:
        log.exception("could not audit a refused TLS handshake")


def _requested_child(exchange: Exchange) -> list[str]:
    """The child a refused GetContacts or SetShielding asked for, so the attempt shows in that
    child's audit report. Taken only from a verified Body: an unsigned message cannot put entries
    in a child's report."""
    if exchange.payload is None or exchange.operation not in ("GetContacts", "SetShielding"):
        return []
    child_id = ids.normalise(dialect.read_get_contacts(exchange.payload))
    return [child_id] if child_id else []


def _refuse(exchange: Exchange, refusal: Refusal, services: Services) -> Answer:
    """The refusal as a signed fault, sent once it is audited (with the fault's digest); if it cannot
    be audited, an Unavailable fault instead; if no fault can be signed, an unsigned Unavailable."""
    body = _signed_fault_or_none(refusal, exchange, services)
    entry = exchange.audit_entry("refused", fault_code=refusal.code, detail=refusal.detail,
                                 child_ids=exchange.child_ids or _requested_child(exchange), answer=body)
    try:
        _audit_alone(exchange, services, entry)
    except DATABASE_FAILURES as exc:  # during an outage: one line per refusal, not a traceback
        metrics.backend_error("database")
        log.warning("could not audit a refusal (%s): database unavailable: %s", refusal.code, _first_line(exc),
                    extra={"request_id": exchange.request_id})
        refusal = Unavailable("audit unavailable")
        body = _signed_fault_or_none(refusal, exchange, services)
    except Exception:
        log.exception("could not audit a refusal", extra={"request_id": exchange.request_id})
        refusal = Unavailable("audit unavailable")
        body = _signed_fault_or_none(refusal, exchange, services)
    if body is None:
        unavailable = Unavailable()
        return Answer(503, to_bytes(new_envelope(fault_payload(unavailable.faultcode, unavailable.public_message,
                                                                unavailable.code, exchange.request_digest,
                                                                exchange.request_id))),
                      outcome="refused", fault_code=unavailable.code)
    return Answer(refusal.http_status, body, outcome="refused", fault_code=refusal.code)


def _signed_fault_or_none(refusal: Refusal, exchange: Exchange, services: Services) -> bytes | None:
    try:
        return signed_fault(refusal, exchange.request_digest, services, exchange.request_id)
    except Exception:
        log.exception("could not sign a fault")
        return None
