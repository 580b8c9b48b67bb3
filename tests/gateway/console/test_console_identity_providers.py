"""The console's page of organisations' identity providers (issue 27): one officer proposes a
provider (the gateway makes the private_key_jwt key and shows its public JWK), a second approves or
declines it after confirming with their password and a code; the proposer cannot approve their
own; removing one takes one officer. Each step is audited."""

from __future__ import annotations

import pytest

FORM = {"org": "LA", "issuer": "https://login.la.example/realms/staff", "client_id": "contactgate-portal",
        "redirect_uri": "https://portal.example/oidc/callback", "client_auth": "private_key_jwt",
        "person_claim": "preferred_username", "role_claim": "groups", "role_map": "hv=health visitor\nsw=social worker",
        "acr_values": "", "amr_values": "otp hwk", "without_two_factors": "refuse"}


def test_a_provider_is_proposed_by_one_officer_and_approved_by_another_in_the_console(browser, registry_home):
    a, b = browser("officer-a"), browser("officer-b")
    page = a.get("/identity-providers")
    assert page.status_code == 200 and "Propose" in page.get_data(as_text=True)
    proposed = a.post("/identity-providers/propose", FORM, follow_redirects=True)
    text = proposed.get_data(as_text=True)
    assert proposed.status_code == 200 and "pending" in text and '"kty": "EC"' in text.replace("&#34;", '"')
    idp_id = registry_home.cli("idp", "list", "--json", officer="officer-a").output
    import json

    [found] = [p for p in json.loads(idp_id) if p["org"] == "LA" and p["status"] == "pending"]
    own = a.post(f"/identity-providers/{found['id']}/approve", step_up=True, follow_redirects=True)
    assert "second officer" in own.get_data(as_text=True)
    approved = b.post(f"/identity-providers/{found['id']}/approve", step_up=True, follow_redirects=True)
    assert "approved" in approved.get_data(as_text=True)
    removed = a.post(f"/identity-providers/{found['id']}/remove", {"reason": "test over"}, step_up=True,
                     follow_redirects=True)
    assert "removed" in removed.get_data(as_text=True)
    ops = [(e["operation"], e["outcome"]) for e in registry_home.audit_entries_after(0) if e["operation"].startswith("idp.")]
    assert ("idp.propose", "done") in ops and ("idp.approve", "refused") in ops and ("idp.approve", "done") in ops
    assert ("idp.remove", "done") in ops


def test_a_bad_registration_is_refused_saying_why_and_changes_nothing(browser, registry_home):
    a = browser("officer-a")
    refused = a.post("/identity-providers/propose", {**FORM, "issuer": "http://login.la.example"},
                     follow_redirects=True)
    assert "must be https" in refused.get_data(as_text=True)
    refused = a.post("/identity-providers/propose", {**FORM, "amr_values": ""}, follow_redirects=True)
    assert "say what counts as two factors" in refused.get_data(as_text=True)
    assert "login.la.example" not in refused.get_data(as_text=True).split("Propose an organisation")[0]
