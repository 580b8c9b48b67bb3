"""Step 6: the organisation is accredited (approved by a second officer, not suspended, not expired)
and its scopes cover the operation. Checked on every message, so a change applies at once."""

from __future__ import annotations

from contactgate_wire.faults import NotAccredited, ScopeDenied
from gateway.pipeline.context import Exchange, Services
from gateway.trust import registry


def check_accreditation(exchange: Exchange, services: Services) -> None:
    org = exchange.organisation
    if org is None:
        raise NotAccredited("organisation is not registered")
    refusal = org.refusal_reason(exchange.received_at.date())
    if refusal:
        raise NotAccredited(refusal)
    needed = registry.OPERATION_SCOPES[exchange.operation]
    if needed is not None and needed not in org.scopes:
        raise ScopeDenied(f"{exchange.operation} needs scope {needed}; accredited for {sorted(org.scopes)}")
