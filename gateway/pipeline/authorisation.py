"""Step 7: who is asking (practitioner and role, from the signed Body), why (every read states a
reason), and how often (per-organisation and per-user rate limits).

Every message that reaches the rate limits is counted once, whatever its answer. With Redis (or the
embedded store on PostgreSQL) it is counted here, before any work. With the embedded store on SQLite
(``counts_in_transaction``) the count is made in the write transaction the message takes anyway,
so it takes the database's one write lock once: the exchange's own transaction counts and judges
it before doing anything else (`count_in_transaction`, from gateway.pipeline.replay), and if that
transaction rolls back — any refusal inside it, the limit's own included — the transaction that
audits the refusal counts it instead."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from gateway.pipeline import contactgate_v1 as dialect
from contactgate_wire.faults import RateLimited, ReasonRequired, SchemaInvalid, ScopeDenied
from gateway.pipeline.context import Exchange, Services

READ_OPERATIONS = frozenset({"FindChild", "GetContacts"})
REASONED_OPERATIONS = READ_OPERATIONS | {"SetShielding"}  # a reason code and text are required
RATE_WINDOW_S = 60


def authorise(exchange: Exchange, services: Services) -> None:
    requester = dialect.read_requester(exchange.payload)
    if requester is not None:
        exchange.user_id, exchange.role = requester.user_id, requester.role
    if exchange.operation in REASONED_OPERATIONS:
        reason = dialect.read_reason(exchange.payload)
        if reason is not None:
            exchange.reason_code, exchange.reason_text = reason.code, reason.text
        if reason is None or not reason.code or not reason.text:
            raise ReasonRequired("read without a reason code and text")
    if requester is not None and requester.on_behalf_of is not None:
        _mediated(exchange, services, requester.on_behalf_of)
    keys = [f"org:{exchange.org_code}"]
    if exchange.user_id:
        keys.append(f"user:{exchange.org_code}:{exchange.user_id}")
    if services.store.counts_in_transaction:
        exchange.uncounted = keys
        return
    _judge(services.store.hit(keys, RATE_WINDOW_S), services)


def _mediated(exchange: Exchange, services: Services, given: dict) -> None:
    """Requester/OnBehalfOf (gateway.mediation), after the reason: who may send it (fail closed:
    ScopeDenied unless a read, by an organisation whose accreditation holds the scope ``mediate``,
    with Role ``mediator``), then its details (a blank or unusable one: SchemaInvalid, saying which).
    Once checked they are on the exchange: the read's audit entry, and any later refusal's (a rate
    limit), names the requester."""
    from gateway.mediation import SCOPE, MediationRefused, OnBehalfOf, is_mediator

    def denied(why: str) -> ScopeDenied:  # the caller's own accreditation and message: said as it is
        return ScopeDenied(why, public_message=why)

    if exchange.operation not in READ_OPERATIONS:
        raise denied(f"OnBehalfOf on {exchange.operation}: only FindChild and GetContacts may be made on behalf "
                     f"of another")
    org = exchange.organisation
    if org is None or SCOPE not in org.scopes:
        raise denied(f"OnBehalfOf needs the organisation to be accredited for mediation (scope {SCOPE}); it is "
                     f"accredited for {', '.join(sorted(org.scopes)) if org else 'nothing'}")
    if not is_mediator(exchange.role):
        raise denied("OnBehalfOf needs Requester/Role mediator")
    try:
        exchange.on_behalf = OnBehalfOf.checked(**given, roles=services.roles)
    except MediationRefused as exc:
        raise SchemaInvalid(f"OnBehalfOf: {exc}", public_message=f"OnBehalfOf: {exc}") from None


def count_in_transaction(conn: Connection, exchange: Exchange, services: Services, *, judge: bool) -> None:
    """Count a message authorised but not yet counted, in ``conn``'s transaction (the caller clears
    ``exchange.uncounted`` once it commits); ``judge``: refuse it if it is over a limit."""
    if exchange.uncounted:
        counts = services.store.hit_in(conn, exchange.uncounted, RATE_WINDOW_S)
        if judge:
            _judge(counts, services)


def _judge(counts: list[int], services: Services) -> None:
    settings = services.settings
    if counts[0] > settings.rate_limit_per_org:
        raise RateLimited(f"organisation over {settings.rate_limit_per_org} messages a minute")
    if len(counts) > 1 and counts[1] > settings.rate_limit_per_user:
        raise RateLimited(f"user over {settings.rate_limit_per_user} messages a minute")
