"""Fail closed: with its database gone the gateway answers a signed Unavailable (HTTP 503) that
says nothing about why, and recovers by itself when the database is back."""

import pytest
from sqlalchemy import create_engine, text

from connectors.client import UnavailableFault
from tests.support import POSTGRES_ADMIN_URL, private_gateway

READ = dict(user_id="u1", role="gp", reason_code="referral", reason_text="checking",
            family_name="Nobody", date_of_birth="2010-01-01")


@pytest.fixture
def pg_only_gateway(tmp_path):
    # embedded store: in PostgreSQL too, so the outage takes it away as well
    with private_gateway("postgresql", tmp_path / "home", orgs={"HEALTH": ("health", ["query"])}) as gw:
        yield gw


def _take_database_away(name: str):
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        conn.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"'))

    def give_back():
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": f"{name}_away"})
            conn.execute(text(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"'))
        admin.dispose()

    return give_back


def test_database_outage_gives_signed_unavailable_and_recovers(pg_only_gateway):
    gw = pg_only_gateway
    client = gw.client("health")
    assert client.find_child(**READ) == []
    name = gw.database_url.rsplit("/", 1)[1]
    give_back = _take_database_away(name)
    try:
        with pytest.raises(UnavailableFault) as caught:  # the SDK verified the fault's signature
            client.find_child(**READ)
        assert caught.value.message == "The gateway cannot answer now; retry later."
        data = client.build_request("FindChild", Requester={"UserId": "u1", "Role": "gp"},
                                    Reason={"_value_1": "checking", "code": "referral"},
                                    FamilyName="Nobody", DateOfBirth="2010-01-01")
        status, envelope = client.post_raw("FindChild", data)
        assert status == 503 and client.fault_code(envelope) == "Unavailable"
        from lxml import etree

        text_ = etree.tostring(envelope)
        assert b"psycopg" not in text_ and b"Traceback" not in text_ and name.encode() not in text_
    finally:
        give_back()
    assert client.find_child(**READ) == []  # back without a restart
