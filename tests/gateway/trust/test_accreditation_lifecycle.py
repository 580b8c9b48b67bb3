"""The accreditation lifecycle as officers work it: proposals with ids, declines, supersession,
reinstatement by a second officer, revocation, expiry shown as such, the history, and input an
officer can trust. Through the CLI, signed in, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from sqlalchemy import select, update

from gateway.db import audit_log, make_engine, organisations
from contactgate_local import LocalGateway, proposal_id
from gateway.trust import registry


@pytest.fixture
def gw(tmp_path, database_url):
    gateway = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gateway.cli("init")
    return gateway


def run(gw, *args, officer="officer-a", ok=True):
    result = gw.cli(*args, expect_ok=False, officer=officer)
    assert (result.exit_code == 0) == ok, result.output
    return result


def engine_of(gw):
    return make_engine(gw.database_url, keys=gw.home / "keys" / "data-keys.json")


def org(gw, code):
    with engine_of(gw).connect() as conn:
        return registry.get_org(conn, code)


def future(days=200):
    return (dt.date.today() + dt.timedelta(days=days)).isoformat()


def propose(gw, code, *scopes, officer="officer-a", days=200, extra=()):
    args = ["org", "accredit", code, *[a for s in scopes for a in ("--scope", s)], "--expires", future(days), *extra]
    return proposal_id(run(gw, *args, officer=officer).output)


def registered(gw, code="LA1"):
    run(gw, "org", "add", code, "--name", "Leeds City Council", "--kind", "local_authority")
    return code


def test_an_approval_must_name_the_proposal_and_is_shown_what_it_approves(gw):
    registered(gw)
    first = propose(gw, "LA1", "query", extra=("--evidence", "ISA-2026-14"))
    refused = run(gw, "org", "approve", "LA1", officer="officer-b", ok=False).output
    assert f"--proposal" in refused and f"proposal {first}" in refused
    assert "scopes=query" in refused and "ISA-2026-14" in refused and f"expires={future()}" in refused
    assert org(gw, "LA1").status == "pending_approval"


def test_a_changed_proposal_needs_a_new_approval(gw):
    registered(gw)
    first = propose(gw, "LA1", "query")
    # another officer widens it before approval: the first id now approves nothing
    second = propose(gw, "LA1", "query", "push", "shield", officer="carol")
    refused = run(gw, "org", "approve", "LA1", "--proposal", first, officer="officer-b", ok=False).output
    assert "superseded" in refused and f"replaced by proposal {second}" in refused
    assert org(gw, "LA1").status == "pending_approval" and org(gw, "LA1").scopes == frozenset()
    run(gw, "org", "approve", "LA1", "--proposal", second, officer="officer-b")
    assert org(gw, "LA1").scopes == {"push", "query", "shield"}
    assert "is approved" in run(gw, "org", "approve", "LA1", "--proposal", second, officer="bob", ok=False).output


def test_a_proposal_of_another_organisation_is_not_approved_through_this_one(gw):
    registered(gw, "LA1")
    registered(gw, "LA2")
    other = propose(gw, "LA2", "query")
    assert "no proposal" in run(gw, "org", "approve", "LA1", "--proposal", other, officer="officer-b", ok=False).output


def test_a_proposal_is_declined_with_a_reason(gw):
    registered(gw)
    proposal = propose(gw, "LA1", "query")
    assert "reason" in run(gw, "org", "decline", "LA1", "--proposal", proposal, "--reason", "  ",
                           officer="officer-b", ok=False).output
    run(gw, "org", "decline", "LA1", "--proposal", proposal, "--reason", "no signed agreement", officer="officer-b")
    assert org(gw, "LA1").status == "registered" and org(gw, "LA1").pending == ()
    assert "declined" in run(gw, "org", "approve", "LA1", "--proposal", proposal, officer="bob", ok=False).output
    history = json.loads(run(gw, "org", "show", "LA1", "--json").output)["history"]
    assert [h["operation"] for h in history] == ["org.add", "org.accredit", "org.decline"]
    assert history[-1]["officer"] == "officer-b" and "no signed agreement" in history[-1]["detail"]


def test_reinstatement_after_suspension_needs_a_second_officer(gw):
    registered(gw)
    run(gw, "org", "approve", "LA1", "--proposal", propose(gw, "LA1", "query"), officer="officer-b")
    assert "reason" in run(gw, "org", "suspend", "LA1", "--reason", "", ok=False).output
    run(gw, "org", "suspend", "LA1", "--reason", "breach under investigation")
    assert "reason" in run(gw, "org", "reinstate", "LA1", "--reason", " ", ok=False).output
    proposal = proposal_id(run(gw, "org", "reinstate", "LA1", "--reason", "investigation closed").output)
    assert org(gw, "LA1").status == "suspended"
    assert "second officer" in run(gw, "org", "approve", "LA1", "--proposal", proposal, ok=False).output
    run(gw, "org", "approve", "LA1", "--proposal", proposal, officer="bob")
    assert org(gw, "LA1").status == "accredited"


def test_a_revoked_organisation_loses_its_certificates_and_cannot_be_accredited_again(gw):
    registered(gw)
    run(gw, "org", "approve", "LA1", "--proposal", propose(gw, "LA1", "query"), officer="officer-b")
    gw.issue_cert("LA1", "la1")
    run(gw, "org", "revoke", "LA1", "--reason", "organisation dissolved")
    assert org(gw, "LA1").status == "revoked"
    listing = json.loads(run(gw, "cert", "list", "LA1", "--json").output)
    assert listing and all(c["revoked_at"] for c in listing)
    assert "revoked" in run(gw, "org", "accredit", "LA1", "--scope", "query", "--expires", future(), ok=False).output
    from connectors import credentials

    made = credentials.make_request("LA1", gw.home / "again")
    assert "revoked" in run(gw, "cert", "issue", "LA1", "--csr", str(made.request_path), ok=False).output


def test_an_expired_accreditation_is_listed_as_expired_and_as_expiring(gw):
    registered(gw, "LA1")
    registered(gw, "LA2")
    for code in ("LA1", "LA2"):
        run(gw, "org", "approve", code, "--proposal", propose(gw, code, "query", days=300), officer="officer-b")
    with engine_of(gw).begin() as conn:  # the date passes (the clock, moved)
        conn.execute(update(organisations).where(organisations.c.code == "LA1")
                     .values(expires=dt.date.today() - dt.timedelta(days=1)))
    listing = run(gw, "org", "list").output
    assert "LA1  Leeds City Council  kind=local_authority  status=expired" in listing
    assert "LA2  Leeds City Council  kind=local_authority  status=accredited" in listing
    expiring = [o["code"] for o in json.loads(run(gw, "org", "list", "--expiring", "30", "--json").output)]
    assert expiring == ["LA1"]
    assert json.loads(run(gw, "org", "list", "--json").output)[0]["status"] == "expired"


def test_org_list_pending_shows_what_awaits_a_second_officer(gw):
    registered(gw, "LA1")
    registered(gw, "LA2")
    proposal = propose(gw, "LA2", "push")
    pending = json.loads(run(gw, "org", "list", "--pending", "--json").output)
    assert [o["code"] for o in pending] == ["LA2"]
    assert pending[0]["pending"][0]["id"] == int(proposal) and pending[0]["pending"][0]["proposed_by"] == "officer-a"


def test_certificates_expiring_are_listed(gw):
    registered(gw)
    gw.issue_cert("LA1", "la1")
    assert json.loads(run(gw, "cert", "list", "--expiring", "30", "--json").output) == []
    soon = json.loads(run(gw, "cert", "list", "--expiring", "400", "--json").output)
    assert [c["org_code"] for c in soon] == ["LA1"]
    assert [o["code"] for o in json.loads(run(gw, "org", "list", "--expiring", "400", "--json").output)] == ["LA1"]


def test_evidence_files_are_recorded_by_digest_in_the_history(gw, tmp_path):
    registered(gw)
    agreement = tmp_path / "isa.pdf"
    agreement.write_bytes(b"%PDF- information sharing agreement, signed")
    digest = hashlib.sha256(agreement.read_bytes()).hexdigest()
    proposal = propose(gw, "LA1", "query", extra=("--evidence", "ISA-7", "--evidence-file", str(agreement)))
    run(gw, "org", "approve", "LA1", "--proposal", proposal, officer="officer-b")
    shown = run(gw, "org", "show", "LA1").output
    assert f"file=isa.pdf sha256={digest}" in shown
    history = json.loads(run(gw, "org", "show", "LA1", "--json").output)["history"]
    assert digest in history[-1]["detail"] and history[-1]["officer"] == "officer-b"


# ---- input an officer can trust ----------------------------------------------------------------------

def test_organisation_codes_are_unique_whatever_their_case(gw):
    registered(gw, "LEEDS_LA")
    refused = run(gw, "org", "add", "leeds_la", "--name", "Other", "--kind", "health", ok=False).output
    assert "already exists" in refused and "'LEEDS_LA'" in refused
    assert "LEEDS_LA" in run(gw, "org", "show", "leeds_la").output  # found whatever the case


@pytest.mark.parametrize("name", ["", "   ", "\t"])
def test_a_blank_name_is_refused(gw, name):
    assert "name" in run(gw, "org", "add", "LA1", "--name", name, "--kind", "health", ok=False).output
    assert org(gw, "LA1") is None


def test_a_blank_evidence_reference_is_refused(gw):
    registered(gw)
    result = run(gw, "org", "accredit", "LA1", "--scope", "query", "--expires", future(), "--evidence", " ", ok=False)
    assert "evidence" in result.output and org(gw, "LA1").pending == ()


def test_an_expiry_beyond_the_maximum_is_refused(gw, monkeypatch):
    registered(gw)
    result = run(gw, "org", "accredit", "LA1", "--scope", "query", "--expires", future(100 * 365), ok=False)
    assert "at most 1096 days" in result.output
    monkeypatch.setenv("CONTACTGATE_MAX_ACCREDITATION_DAYS", "90")
    assert "at most 90 days" in run(gw, "org", "accredit", "LA1", "--scope", "query", "--expires", future(91),
                                    ok=False).output
    propose(gw, "LA1", "query", days=90)


def test_every_officer_action_is_audited_with_its_officer(gw, tmp_path):
    registered(gw)
    cert_dir = gw.issue_cert("LA1", "la1")
    from gateway.trust import pki

    fingerprint = pki.fingerprint(pki.load_cert_pem((cert_dir / "cert.pem").read_bytes()))
    run(gw, "cert", "revoke", fingerprint, "--reason", "key lost", officer="carol")
    with engine_of(gw).connect() as conn:
        rows = {r.operation: r for r in conn.execute(select(audit_log).where(audit_log.c.org_code == "LA1"))}
    assert rows["org.add"].user_id == "officer-a" and rows["cert.propose"].user_id == "officer-a"
    assert rows["cert.issue"].user_id == "officer-b" and "proposed by officer-a" in rows["cert.issue"].detail
    assert rows["cert.revoke"].user_id == "carol" and "key lost" in rows["cert.revoke"].detail
