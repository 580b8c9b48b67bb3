"""Steps 8 and 9: the connector maps the verified request to the canonical model; the index
operation, its audit entry, the signed answer and the record that the message was answered
(gateway.pipeline.replay) are made in one transaction (no audit, no effect; no answer, no effect)."""

from __future__ import annotations

import random
import time
from collections import Counter

from sqlalchemy.exc import OperationalError

from gateway.pipeline import contactgate_v1 as dialect
from contactgate_wire.faults import NotFound, SchemaInvalid
from gateway.index import disclosure
from gateway.index.shielding import audit_mark, withhold_location
from gateway.index import store as index
from gateway.pipeline.context import Exchange, Services
from gateway.pipeline.replay import exchange_transaction, remember
from gateway.pipeline.respond import signed_response

def dispatch(exchange: Exchange, services: Services) -> bytes:
    handler = {"SubmitUpdates": _submit_updates, "FindChild": _find_child,
               "GetContacts": _get_contacts, "SetShielding": _set_shielding, "Ping": _ping}[exchange.operation]
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
        results = index.apply_updates(conn, exchange.org_code, updates, exchange.received_at,
                                      link_policy(services), services.settings.retention_purge_years)
        exchange.child_ids = [r.child_id or r.withheld_child_id for r in results if r.child_id or r.withheld_child_id]
        # The audit records the truth the answer does not tell: records held for review (answered
        # `created`/`updated`), and records whose NHS or pupil number another child holds (audit review's
        # identifier_probing).
        tally = Counter(result.recorded_outcome for result in results)
        archived = sum(1 for r in results if r.withheld_child_id)  # retention: a recorded death archived them
        if archived:
            tally["archived"] = archived
        conflicts = sum(1 for r in results if r.identifier_conflict)
        if conflicts:
            tally["identifier_conflict"] = conflicts
        questioned = sum(1 for r in results if r.value_conflict)  # kept as its own, a question for review
        if questioned:
            tally["value_conflict"] = questioned
        return _answer(conn, exchange, services, dialect.write_submit_updates_response(results, exchange.request_digest),
                       " ".join(f"{k}={v}" for k, v in sorted(tally.items())))


def link_policy(services: Services) -> index.LinkPolicy:
    return link_policy_of(services.settings)


def link_policy_of(settings) -> index.LinkPolicy:
    """The linkage and FindChild thresholds the settings hold (the portal's searches use them too)."""
    return index.LinkPolicy(upper=settings.link_upper, lower=settings.link_lower, find_floor=settings.find_floor,
                            find_min_probability=settings.find_min_probability)


def has_minimum_criteria(query) -> bool:
    """FindChild's minimum: family name and date of birth, or an NHS or pupil number (a portal
    search is held to the same)."""
    return bool(query.nhs_number or query.pupil_number or (query.family_name and query.date_of_birth))


def _find_child(exchange: Exchange, services: Services) -> bytes:
    query = dialect.read_find_child(exchange.payload)
    if not has_minimum_criteria(query):
        raise SchemaInvalid("FindChild without family name + date of birth or an identifier",
                            public_message="FindChild needs FamilyName and DateOfBirth, or NhsNumber "
                                           "or PupilNumber")
    with exchange_transaction(exchange, services) as conn:
        candidates = index.find_children(conn, query, link_policy(services), exchange.received_at.date())
        exchange.child_ids = [c.child_id for c in candidates]
        shielded = sum(c.shielded for c in candidates)  # each answered without its locality: marked
        return _answer(conn, exchange, services,
                       dialect.write_find_child_response(candidates, exchange.request_digest, query.include_score),
                       f"candidates={len(candidates)}" + (f" shielded={shielded} location=withheld" if shielded else ""))


def _get_contacts(exchange: Exchange, services: Services) -> bytes:
    """The answer is made and signed before the exchange's transaction, from the rows read in the
    steps' read transaction; inside it the rows are read again, and the answer is kept only if they
    are unchanged (else it is made again there). So the transaction — on SQLite, the database's one
    write lock — holds only the writing (rate count, audit entry, the record that it was answered),
    while what is answered is still what the index held when the audit entry was written."""
    requested = dialect.read_get_contacts(exchange.payload)
    today = exchange.received_at.date()
    lookups = exchange.lookup_connection(services)
    rows = index.child_rows(lookups, requested)
    prepared = _contacts_answer(lookups, exchange, services, rows, today)
    with exchange_transaction(exchange, services) as conn:
        current = index.child_rows(conn, requested)
        if current != rows:  # changed meanwhile (an update, shielding, a merge): made again from these
            prepared = _contacts_answer(conn, exchange, services, current, today)
        if prepared is None:
            # Refused (and audited by the caller) exactly like any other missing record.
            raise NotFound("no such child id")
        answer, detail, exchange.child_ids = prepared
        services.audit.append(conn, exchange.audit_entry("accepted", detail=detail, answer=answer))
        return remember(conn, exchange, answer)


def _contacts_answer(conn, exchange: Exchange, services: Services, rows: index.ChildRows | None,
                     today) -> tuple[bytes, str, list[str]] | None:
    """The signed GetContacts answer made from ``rows``, its audit detail and the child it names;
    None if no child is returned."""
    asked_provenance = dialect.read_include_provenance(exchange.payload)
    child = index.child_view(conn, rows, today, with_provenance=asked_provenance)
    if child is None:
        return None
    child, mark = disclosed(child, exchange.role, services.settings.shield_roles, services.roles,
                            exchange.on_behalf.role if exchange.on_behalf is not None else None)
    answer = signed_response(dialect.write_get_contacts_response(child, exchange.request_digest), services)
    return answer, f"contacts={len(child.contacts)} {mark}", [child.child_id]


def disclosed(child, role: str | None, shield_roles, roles: disclosure.RoleRules, on_behalf_role: str | None = None):
    """(the child as ``role`` may see it, the audit's mark of what was disclosed): a shielded child's
    location withheld unless the role is in ``shield_roles``, then the role's field rules
    (gateway.index.disclosure). The portal's contacts page shows what this returns.

    ``on_behalf_role``: a mediated read (gateway.mediation): only what both roles may see (the
    intersection of their field groups; the location only if both are shield roles)."""
    mark = ""
    if child.shielded:  # every access to a shielded child is marked in the audit
        shown = role in shield_roles and (
            on_behalf_role is None or on_behalf_role.casefold() in {r.casefold() for r in shield_roles})
        mark = f"{audit_mark(shown)} "
        if not shown:
            child = withhold_location(child)
    groups = roles.groups_for(role)
    if on_behalf_role is not None:
        groups = groups & roles.groups_for(on_behalf_role)
    if not groups >= set(disclosure.GROUPS):  # the role's field rules (gateway.index.disclosure)
        child = disclosure.limit(child, groups)
    # What was disclosed, always: the field groups sent (their names, never their values).
    mark += f"fields={','.join(g for g in disclosure.GROUPS if g in groups) or 'minimum'}"
    if child.address is not None and child.address_source is not None:
        mark += " provenance=address"
    return child, mark


def _set_shielding(exchange: Exchange, services: Services) -> bytes:
    requested, shielded = dialect.read_set_shielding(exchange.payload)
    with exchange_transaction(exchange, services) as conn:
        child_id = index.set_shielding(conn, requested, shielded, exchange.received_at.date())
        if child_id is None:
            raise NotFound("no such child id")  # as GetContacts: existence is never told apart
        exchange.child_ids = [child_id]
        return _answer(conn, exchange, services,
                       dialect.write_set_shielding_response(child_id, shielded, exchange.request_digest),
                       f"shielding {'set' if shielded else 'cleared'}")


def _ping(exchange: Exchange, services: Services) -> bytes:
    """The onboarding check: what the gateway sees of the caller (its accreditation was checked in
    step 6, as for every operation), and the gateway's time."""
    org = exchange.organisation
    with exchange_transaction(exchange, services) as conn:
        return _answer(conn, exchange, services,
                       dialect.write_ping_response(org.code, org.expires, org.scopes, exchange.received_at,
                                                   exchange.request_digest),
                       f"ping scopes={','.join(sorted(org.scopes))}")


def _answer(conn, exchange: Exchange, services: Services, payload, detail: str) -> bytes:
    """In the exchange's transaction: sign the answer, audit the exchange with the answer's digest,
    and `remember` it."""
    answer = signed_response(payload, services)
    services.audit.append(conn, exchange.audit_entry("accepted", detail=detail, answer=answer))
    return remember(conn, exchange, answer)
