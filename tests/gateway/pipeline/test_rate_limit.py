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
    for _ in range(3):
        assert client.find_child(**READ) == []
    seq = limited_gateway.audit_seq()
    with pytest.raises(RateLimitedFault):
        client.find_child(**READ)
    [entry] = limited_gateway.audit_entries_after(seq)
    assert entry["fault_code"] == "RateLimited" and entry["user_id"] == "busy.user"
    # another practitioner of the same organisation is not affected
    assert client.find_child(**dict(READ, user_id="other.user")) == []
