"""Steps 8 and 9: the connector maps the verified request to the canonical model; the index
operation, its audit entry, the signed answer and the record that the message was answered
(gateway.pipeline.replay) are made in one transaction (no audit, no effect; no answer, no effect)."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import replace

from sqlalchemy.exc import OperationalError

from connectors import contactgate_v1 as dialect
from gateway.errors import NotFound, SchemaInvalid
from gateway.index import store as index
from gateway.index.model import ChildView
from gateway.pipeline.context import Exchange, Services
from gateway.pipeline.replay import exchange_transaction, remember
from gateway.pipeline.respond import signed_response

# Location details of a shielded child; withheld from every role not listed in the settings.
SHIELD_PERMITTED_ROLES: frozenset[str] = frozenset()


def dispatch(exchange: Exchange, services: Services) -> bytes:
    handler = {"SubmitUpdates": _submit_updates, "FindChild": _find_child,
               "GetContacts": _get_contacts}[exchange.operation]
    return handler(exchange, services)


TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
ATTEMPTS = 3


def _submit_updates(exchange: Exchange, services: Services) -> bytes:
    """Apply the batch; if PostgreSQL aborts it as a deadlock victim (nothing applied), run it again."""
    updates = dialect.read_submit_updates(exchange.payload)
    for attempt in range(1, ATTEMPTS):
        try:
            return _apply_batch(exchange, services, updates)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) not in TRANSIENT_SQLSTATES:
                raise
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    return _apply_batch(exchange, services, updates)


def _apply_batch(exchange: Exchange, services: Services, updates) -> bytes:
    with exchange_transaction(exchange, services) as conn:
        results = index.apply_updates(conn, exchange.org_code, updates, exchange.received_at)
        exchange.child_ids = [r.child_id for r in results if r.child_id]
        tally = Counter(result.outcome for result in results)
        services.audit.append(conn, exchange.audit_entry(
            "accepted", detail=" ".join(f"{k}={v}" for k, v in sorted(tally.items()))))
        return remember(conn, exchange, signed_response(
            dialect.write_submit_updates_response(results, exchange.request_digest), services))


def _find_child(exchange: Exchange, services: Services) -> bytes:
    query = dialect.read_find_child(exchange.payload)
    if not (query.nhs_number or query.pupil_number or (query.family_name and query.date_of_birth)):
        raise SchemaInvalid("FindChild without family name + date of birth or an identifier",
                            public_message="FindChild needs FamilyName and DateOfBirth, or NhsNumber "
                                           "or PupilNumber")
    with exchange_transaction(exchange, services) as conn:
        candidates = index.find_children(conn, query)
        exchange.child_ids = [c.child_id for c in candidates]
        services.audit.append(conn, exchange.audit_entry("accepted", detail=f"candidates={len(candidates)}"))
        return remember(conn, exchange, signed_response(
            dialect.write_find_child_response(candidates, exchange.request_digest), services))


def _get_contacts(exchange: Exchange, services: Services) -> bytes:
    requested = dialect.read_get_contacts(exchange.payload)
    with exchange_transaction(exchange, services) as conn:
        child = index.get_child(conn, requested, exchange.received_at.date())
        if child is None:
            # Refused (and audited by the caller) exactly like any other missing record.
            raise NotFound("no such child id")
        if child.shielded and exchange.role not in SHIELD_PERMITTED_ROLES:
            child = withhold_location(child)
        exchange.child_ids = [child.child_id]
        services.audit.append(conn, exchange.audit_entry("accepted", detail=f"contacts={len(child.contacts)}"))
        return remember(conn, exchange, signed_response(
            dialect.write_get_contacts_response(child, exchange.request_digest), services))


def withhold_location(child: ChildView) -> ChildView:
    return replace(
        child, address=None, educational_setting=None, gp_practice=None,
        carers=tuple(replace(c, address=None, phone=None, email=None) for c in child.carers),
        contacts=tuple(replace(c, involvement=replace(c.involvement, phone=None, email=None))
                       for c in child.contacts),
    )
