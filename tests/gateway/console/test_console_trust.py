"""The trust list in the console: shown to every officer; a CA is proposed (uploaded) by a senior
officer and approved by a second with the step-up; only a CA is accepted; an officer without the
senior role is refused by the server, whatever the page shows."""

from __future__ import annotations

import io

from gateway.trust import anchors, pki


def _ca(name: str):
    ca_key, ca_cert = pki.make_ca(name)
    return pki.cert_pem(ca_cert), pki.make_crl(ca_key, ca_cert, [], 30, 1), ca_cert


def _upload(b, pem: bytes, crl: bytes | None):
    data = {"ca": (io.BytesIO(pem), "ca.pem")}
    if crl:
        data["crl"] = (io.BytesIO(crl), "ca.crl")
    return b.post("/trust/add", data, content_type="multipart/form-data")


def test_a_ca_is_added_by_two_senior_officers(browser, console):
    settings = console.extensions["contactgate"]["settings"]
    pem, crl, ca_cert = _ca("Console Regional CA")
    s = browser("senior-s")
    assert "(the gateway's own CA)" in s.get("/trust").get_data(as_text=True)
    _upload(s, pem, crl)
    page = s.get("/trust").get_data(as_text=True)
    assert "Console Regional CA" in page and "You made this proposal" in page
    proposal = int(page.split("Proposal ", 1)[1].split(" ", 1)[0])
    s.post(f"/proposals/{proposal}/approve", step_up=True)  # forged by the proposer: refused
    assert len(anchors.list_anchors(settings)) == 1

    officer = browser("alice")  # an officer, not senior: no button, and refused by the server
    assert "Approve proposal" not in officer.get("/trust").get_data(as_text=True)
    officer.post(f"/proposals/{proposal}/approve", step_up=True)
    assert len(anchors.list_anchors(settings)) == 1
    assert _upload(officer, pem, crl).status_code == 403

    t = browser("senior-t")
    t.get("/trust")
    t.post(f"/proposals/{proposal}/approve", step_up=True)
    added = [a for a in anchors.list_anchors(settings) if not a.gateway_ca]
    assert [a.fingerprint for a in added] == [pki.fingerprint(ca_cert)]

    # ... and removed the same way.
    s.post("/trust/remove", {"fingerprint": added[0].fingerprint})
    page = s.get("/trust").get_data(as_text=True)
    removal = int(page.split("Proposal ", 1)[1].split(" ", 1)[0])
    t.post(f"/proposals/{removal}/approve", step_up=True)
    assert [a for a in anchors.list_anchors(settings) if not a.gateway_ca] == []


def test_a_certificate_that_is_not_a_ca_is_refused(browser, registry_home):
    s = browser("senior-s")
    leaf = (registry_home.certs["la"] / "cert.pem").read_bytes()
    _upload(s, leaf, None)
    assert "Not done" in s.get("/trust").get_data(as_text=True)
    assert "Proposal" not in s.get("/trust").get_data(as_text=True).split("<h1>", 1)[1].split("Propose trusting")[0]


def test_the_gateway_ca_cannot_be_proposed_for_removal(browser, console):
    settings = console.extensions["contactgate"]["settings"]
    [own] = [a for a in anchors.list_anchors(settings) if a.gateway_ca]
    s = browser("senior-s")
    s.post("/trust/remove", {"fingerprint": own.fingerprint})
    assert "cannot be removed" in s.get("/trust").get_data(as_text=True)


def test_an_approval_whose_commit_fails_changes_no_trust_file(browser, console, registry_home):
    """The console's approval goes the same way as `trust approve`: the database first, then the
    files; a commit that fails (a deferred constraint checked at COMMIT) leaves them as they were."""
    from tests.gateway.trust.test_trust_list import _break_commits_that_approve, _mend_commits, _trust_files

    settings = console.extensions["contactgate"]["settings"]
    pem, crl, ca_cert = _ca("Console Commit CA")
    s, t = browser("senior-s"), browser("senior-t")
    _upload(s, pem, crl)
    page = s.get("/trust").get_data(as_text=True)
    proposal = int(page.split("Proposal ", 1)[1].split(" ", 1)[0])
    before = _trust_files(registry_home.home)
    _break_commits_that_approve(registry_home.engine)
    try:
        t.get("/trust")
        response = t.post(f"/proposals/{proposal}/approve", step_up=True)
        assert response.status_code == 500 and "nothing was changed" in response.get_data(as_text=True)
        assert _trust_files(registry_home.home) == before
        assert f"Proposal {proposal} " in t.get("/trust").get_data(as_text=True)  # still pending
    finally:
        _mend_commits(registry_home.engine)
    t.post(f"/proposals/{proposal}/approve", step_up=True)
    assert pki.fingerprint(ca_cert) in [a.fingerprint for a in anchors.list_anchors(settings)]
