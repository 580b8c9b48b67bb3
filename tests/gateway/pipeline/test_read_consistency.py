"""What a GetContacts answers is what the index held when its audit entry was written.

The answer is made and signed before the exchange's transaction (so that, on SQLite, the database's
one write lock is not held while signing), from rows read in the steps' read transaction; inside
the transaction the rows are read again and the answer is made again if they changed. These tests
change the child at the worst moment — while its answer is being signed, between the two reads —
through the index's own functions in a transaction of their own, on both backends."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree
from sqlalchemy import select

from gateway.db import audit_log
from gateway.index import store as index
from tests.support import child_update, in_process_gateway, unique, unique_name

READ = {"Requester": {"UserId": "rc.reader", "Role": "gp"}, "Reason": {"_value_1": "why", "code": "referral"}}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def home(request, tmp_path_factory):
    with in_process_gateway(request.param, tmp_path_factory.mktemp("home-rc"),
                            orgs={"LA": ("local_authority", ["push", "query"])}) as gw:
        yield gw


@pytest.fixture
def gw(home):
    signer = home.services.signer
    yield home
    home.services.signer = signer  # each test's own signer goes with it


class ChangeWhileSigning:
    """The gateway's signer, which runs ``change`` (once) in a transaction of its own just before it
    signs the next answer."""

    def __init__(self, signer, engine, change):
        self._signer, self._engine, self._change = signer, engine, change

    def sign(self, envelope, **kwargs):
        if self._change is not None:
            change, self._change = self._change, None
            with self._engine.begin() as conn:
                change(conn)
        return self._signer.sign(envelope, **kwargs)

    def __getattr__(self, name):
        return getattr(self._signer, name)


def _push(gw, **extra) -> tuple[str, dict]:
    update = child_update(unique("rc-"), unique_name("Consist"), "Ada", "2016-03-04", **extra)
    answer = gw.send("la", "SubmitUpdates", ChildUpdate=[update])
    assert answer.status == 200, answer.body
    [child_id] = etree.fromstring(answer.body).xpath("//*[local-name()='ChildId']/text()")
    return child_id, update


def _last_entry(gw) -> dict:
    with gw.services.engine.connect() as conn:
        row = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).first()
    return row._asdict()


def test_a_child_shielded_while_its_answer_is_signed_is_answered_shielded(gw):
    child_id, update = _push(gw)
    postcode = update["Address"]["Postcode"].encode()
    assert postcode in gw.send("la", "GetContacts", ChildId=child_id, **READ).body  # shown before

    gw.services.signer = ChangeWhileSigning(gw.services.signer, gw.services.engine, lambda conn: index.set_shielding(
        conn, child_id, True, dt.date.today()))
    answer = gw.send("la", "GetContacts", ChildId=child_id, **READ)
    assert answer.status == 200, answer.body
    assert b"<cg:Shielded>true</cg:Shielded>" in answer.body or b"Shielded>true<" in answer.body
    assert postcode not in answer.body
    assert "shielded=yes location=withheld" in _last_entry(gw)["detail"]


def test_a_child_archived_while_its_answer_is_signed_is_not_found(gw):
    """Retention archived the child between the two reads: the prepared answer is not sent."""
    from gateway.db import children

    child_id, _ = _push(gw)
    gw.services.signer = ChangeWhileSigning(gw.services.signer, gw.services.engine, lambda conn: conn.execute(
        children.update().where(children.c.child_id == child_id).values(
            archived_at=dt.datetime.now(dt.timezone.utc), archive_reason="test")))
    answer = gw.send("la", "GetContacts", ChildId=child_id, **READ)
    assert answer.fault_code == "NotFound"
    entry = _last_entry(gw)
    assert entry["outcome"] == "refused" and entry["fault_code"] == "NotFound"


def test_an_unchanged_child_is_answered_from_the_first_read(gw):
    """No change: the answer signed before the transaction is the one sent (one signature, not two)."""
    child_id, _ = _push(gw)
    signed = []
    signer = gw.services.signer

    class Counting:
        def sign(self, envelope, **kwargs):
            signed.append(1)
            return signer.sign(envelope, **kwargs)

        def __getattr__(self, name):
            return getattr(signer, name)

    gw.services.signer = Counting()
    assert gw.send("la", "GetContacts", ChildId=child_id, **READ).status == 200
    assert len(signed) == 1


def test_a_child_without_involvements_is_answered_without_contacts(gw):
    child_id, _ = _push(gw, involvements_=[])
    answer = gw.send("la", "GetContacts", ChildId=child_id, **READ)
    assert answer.status == 200 and b"Contact>" not in answer.body
    assert "contacts=0" in _last_entry(gw)["detail"]
