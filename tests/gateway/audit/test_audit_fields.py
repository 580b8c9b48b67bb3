"""Every audit entry says where the request came from and what was answered (issue 10, item 1):
the client's address, the request id sent back as X-Request-Id, the digests of the request and of
the exact answer, and for GetContacts the field groups disclosed, whatever the role. Through the
real gateway on both backends, and for the CLI."""

from __future__ import annotations

import base64
import hashlib

from sqlalchemy import select, update

from gateway.db import audit_log
from gateway.index import disclosure
from tests.support import child_update, unique, unique_name

WHO = dict(user_id="af.tester", role="social worker", reason_code="referral", reason_text="audit fields test")


def _local_account() -> str:
    """The command line's origin: the real uid, with its name from the password database."""
    import os
    import pwd

    return f"local:uid {os.getuid()} ({pwd.getpwuid(os.getuid()).pw_name})"


def _digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _entry(gateway, request_id: str):
    with gateway.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.request_id == request_id)).one()


def _child(clients) -> str:
    update_ = child_update(unique("af-"), unique_name("Field"), unique_name("Kid"), "2015-05-05")
    [result] = clients("la").submit_updates([update_])
    return result["ChildId"]


def test_an_answered_exchange_records_address_request_id_and_both_digests(clients, gateway):
    child_id = _child(clients)
    la = clients("la")
    data = la.build_request("GetContacts", ChildId=child_id, **la._who(**WHO))
    response = la.session.post(la.endpoint, data=data, headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:contactgate:v1#GetContacts"'})
    assert response.status_code == 200
    request_id = response.headers["X-Request-Id"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    entry = _entry(gateway, request_id)
    assert entry.operation == "GetContacts" and entry.outcome == "accepted" and entry.child_ids == child_id
    assert entry.source_address == "127.0.0.1"
    assert entry.request_digest == _digest(data)
    assert entry.response_digest == _digest(response.content)
    # a role without limits still has what it was shown recorded: every field group, by name
    assert f"fields={','.join(disclosure.GROUPS)}" in entry.detail


def test_a_refusal_records_the_digest_of_the_fault_it_was_answered(clients, gateway):
    la = clients("la")
    data = la.build_request("GetContacts", sign=False, ChildId="CG-0000-0000-0000", **la._who(**WHO))
    response = la.session.post(la.endpoint, data=data, headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:contactgate:v1#GetContacts"'})
    assert response.status_code >= 400
    entry = _entry(gateway, response.headers["X-Request-Id"])
    assert entry.outcome == "refused" and entry.fault_code
    assert entry.source_address == "127.0.0.1" and entry.response_digest == _digest(response.content)


def test_each_exchange_gets_its_own_request_id(clients, gateway):
    ids = set()
    for _ in range(3):
        la = clients("la")
        data = la.build_request("Ping", Requester={"UserId": "af.tester", "Role": "integration engineer"})
        response = la.session.post(la.endpoint, data=data, headers={
            "Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:contactgate:v1#Ping"'})
        ids.add(response.headers["X-Request-Id"])
    assert len(ids) == 3


def test_a_command_records_the_account_that_ran_it(gateway):
    gateway.cli("org", "add", unique("AF").upper(), "--name", "Audit fields", "--kind", "other")
    with gateway.engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.operation == "org.add")
                             .order_by(audit_log.c.seq.desc()).limit(1)).one()
    assert entry.source_address == _local_account()


def test_changing_a_new_field_or_the_public_link_breaks_the_chain(gateway):
    """On a copy of the rows: the fields added later are hashed like the others."""
    with gateway.engine.connect() as conn:
        last = conn.execute(select(audit_log).where(audit_log.c.response_digest.is_not(None))
                            .order_by(audit_log.c.seq.desc()).limit(1)).one()
    for column, value in (("source_address", "10.9.9.9"), ("response_digest", None), ("public_hash", "0" * 64)):
        with gateway.engine.begin() as conn:
            conn.execute(update(audit_log).where(audit_log.c.seq == last.seq).values({column: value}))
        try:
            result = gateway.cli("audit", "verify", expect_ok=False)
            assert result.exit_code == 1 and f"entry {last.seq}" in result.output, (column, result.output)
        finally:
            with gateway.engine.begin() as conn:
                conn.execute(update(audit_log).where(audit_log.c.seq == last.seq)
                             .values({column: getattr(last, column)}))
    assert gateway.cli("audit", "verify").exit_code == 0
