"""RateLimited: per practitioner, counted in the shared store, refused and audited like any fault."""

import pytest

from connectors.client import RateLimitedFault
from tests.support import private_gateway

READ = dict(user_id="busy.user", role="gp", reason_code="referral", reason_text="checking",
            family_name="Nobody", date_of_birth="2010-01-01")


@pytest.fixture(scope="module")
def limited_gateway(tmp_path_factory):
    with private_gateway("sqlite", tmp_path_factory.mktemp("home-limited"), workers=2,
                         orgs={"HEALTH": ("health", ["query"])},
                         extra_env={"CONTACTGATE_RATE_LIMIT_PER_USER": "3"}) as gw:
        yield gw


def test_a_practitioner_over_the_limit_is_refused_and_audited(limited_gateway):
    client = limited_gateway.client("health")
    # Fixed one-minute windows: a boundary may fall inside the test, so allow a second window's 3.
    answered = 0
    for _ in range(7):
        seq = limited_gateway.audit_seq()
        try:
            client.find_child(**READ)
            answered += 1
        except RateLimitedFault:
            break
    else:
        pytest.fail("never refused")
    assert 3 <= answered <= 6
    [entry] = limited_gateway.audit_entries_after(seq)
    assert entry["fault_code"] == "RateLimited" and entry["user_id"] == "busy.user"
    # another practitioner of the same organisation is not affected
    assert client.find_child(**dict(READ, user_id="other.user")) == []
