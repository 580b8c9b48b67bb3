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


def _flashes(response) -> list[str]:
    import html
    import re

    return [html.unescape(m) for m in re.findall(r'<p class="flash [^"]*" role="[^"]*">(.*?)</p>',
                                                 response.get_data(as_text=True), re.S)]


def test_approving_declining_and_removing_a_provider_say_what_they_did_to_the_letter(browser, registry_home):
    import json

    registry_home.add_org("IDPFLASH", "health", ["query"])
    a, b = browser("officer-a"), browser("officer-b")
    form = {**FORM, "org": "IDPFLASH", "client_id": "console-flashes"}

    def proposed() -> int:
        a.post("/identity-providers/propose", form, follow_redirects=True)
        listed = json.loads(registry_home.cli("idp", "list", "--org", "IDPFLASH", "--json", officer="officer-a").output)
        return max(p["id"] for p in listed if p["status"] == "pending")

    def said(who, idp_id: int, step: str, data=None) -> list[str]:
        return _flashes(who.post(f"/identity-providers/{idp_id}/{step}", data, step_up=True, follow_redirects=True))

    first = proposed()
    assert said(a, first, "approve") == [f"Not done: proposal {first} was made by officer-a: a second officer decides it"]
    assert said(b, first, "approve") == [f"Provider {first} approved: IDPFLASH's practitioners may sign in through it."]
    assert said(b, first, "approve") == [f"Not done: proposal {first} is approved already"]
    second = proposed()
    assert said(b, second, "decline", {"reason": " "}) == ["Not done: a reason is required"]
    assert said(b, second, "decline", {"reason": "wrong tenant"}) == [f"Provider {second} declined."]
    assert said(b, second, "decline", {"reason": "again"}) == [f"Not done: proposal {second} is declined already"]
    assert said(a, first, "remove", {"reason": ""}) == ["Not done: a reason is required"]
    assert said(a, first, "remove", {"reason": "contract ended"}) == [
        f"Provider {first} removed: its portal sessions end at their next page."]
    assert a.post("/identity-providers/99999/approve", step_up=True).status_code == 404
    ops = [(e["operation"], e["outcome"], e["detail"]) for e in registry_home.audit_entries_after(0)
           if e["operation"].startswith("idp.") and e["org_code"] == "IDPFLASH"]
    assert [(o, outcome) for o, outcome, _ in ops] == [
        ("idp.propose", "done"), ("idp.approve", "refused"), ("idp.approve", "done"), ("idp.approve", "refused"),
        ("idp.propose", "done"), ("idp.decline", "refused"), ("idp.decline", "done"), ("idp.decline", "refused"),
        ("idp.remove", "refused"), ("idp.remove", "done")]
    assert ops[6][2] == f"declined proposal {second} by officer-a: wrong tenant"
