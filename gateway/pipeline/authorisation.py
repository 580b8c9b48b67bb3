"""Step 7: who is asking (practitioner and role, from the signed Body), why (every read states a
reason), and how often (per-organisation and per-user rate limits)."""

from __future__ import annotations

from gateway.pipeline import contactgate_v1 as dialect
from contactgate_wire.faults import RateLimited, ReasonRequired
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
    settings = services.settings
    keys = [f"org:{exchange.org_code}"]
    if exchange.user_id:
        keys.append(f"user:{exchange.org_code}:{exchange.user_id}")
    counts = services.store.hit(keys, RATE_WINDOW_S)
    if counts[0] > settings.rate_limit_per_org:
        raise RateLimited(f"organisation over {settings.rate_limit_per_org} messages a minute")
    if len(counts) > 1 and counts[1] > settings.rate_limit_per_user:
        raise RateLimited(f"user over {settings.rate_limit_per_user} messages a minute")
