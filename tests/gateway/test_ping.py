"""`Ping`, the onboarding check: signed both ways, audited, answered only to an organisation whose
accreditation is in force (no scope needed), with what the gateway sees of it and its time."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from connectors.client import GatewayFault
from gateway.db import audit_log

WHO = dict(user_id="onboarding.check", role="integration engineer")


def test_ping_answers_the_organisation_its_accreditation_scopes_and_the_gateways_time(clients, gateway):
    answer = clients("la").ping(**WHO)
    assert answer["Organisation"] == "LA"
    assert answer["AccreditationExpires"] == dt.date.today() + dt.timedelta(days=365)
    assert answer["Scope"] == ["push", "query"]
    skew = abs((answer["GatewayTime"] - dt.datetime.now(dt.timezone.utc)).total_seconds())
    assert skew < 30
    assert answer["RequestDigest"]
    with gateway.engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.operation == "Ping", audit_log.c.org_code == "LA")
                             .order_by(audit_log.c.seq.desc()).limit(1)).one()
    assert entry.outcome == "accepted" and entry.user_id == "onboarding.check" and "scopes=push,query" in entry.detail


def test_ping_needs_no_scope_beyond_the_accreditation(clients):
    assert clients("health").ping(**WHO)["Scope"] == ["query"]


@pytest.mark.parametrize("org", ["pending", "unacc", "susp", "expired"])
def test_ping_is_refused_without_an_accreditation_in_force(clients, gateway, org):
    with pytest.raises(GatewayFault) as refused:
        clients(org).ping(**WHO)
    assert refused.value.code == "NotAccredited"
    with gateway.engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.operation == "Ping", audit_log.c.org_code == org.upper())
                             .order_by(audit_log.c.seq.desc()).limit(1)).one()
    assert entry.outcome == "refused" and entry.fault_code == "NotAccredited"


def test_a_resent_ping_is_refused_as_a_replay(clients):
    client = clients("la")
    data = client.build_request("Ping", Requester={"UserId": "onboarding.check", "Role": "engineer"})
    status, _ = client.post_raw("Ping", data)
    assert status == 200
    status, again = client.post_raw("Ping", data)
    assert status == 500 and client.fault_code(again) == "Replay"
