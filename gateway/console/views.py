"""The console's pages and actions. Every route authorises on the server (``_needs``); every change
goes through the registry (which audits it and applies the four-eyes rule) in one transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from functools import wraps

from flask import (Blueprint, abort, current_app, flash, g, redirect, render_template, request, send_file,
                   session, url_for)
from sqlalchemy import func, select

from gateway import backup, officers
from gateway.db import audit_log, certificates
from gateway.trust import registry
from gateway.trust.registry import RegistryError

auth = Blueprint("auth", __name__)
pages = Blueprint("pages", __name__)

STEP_UP_ACTIONS = "approving, declining, suspending and revoking"


def _app():
    return current_app.extensions["contactgate"]


def _now() -> dt.datetime:
    return _app()["clock"]()


# ---- signing in ----------------------------------------------------------------------------------

UNCHECKED = {
    429: "Sign-in refused: too many attempts from this address. Wait a minute and try again.",
    503: "Sign-in refused: the console is busy checking other sign-ins. Try again in a moment.",
}


def _refused_unchecked(refusal, officer_id: str, *, step_up: bool = False) -> None:
    """An attempt the gate refused before any check: the first of a run from an address is audited
    (the rest are in the access log); a busy refusal is not (it says nothing of the caller)."""
    if refusal.status == 429 and refusal.first:
        officers.refuse_unchecked(
            _app()["engine"], _app()["trail"], officer_id, step_up=step_up,
            why=f"more than {_app()['settings'].signin_per_minute} attempts a minute from {refusal.source} "
                f"(throttled; the attempts refused until it has one again are not recorded one by one)")


@auth.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        form = request.form
        # Before any check, whatever the id: the address's rate, and a place among the process's
        # checks (gateway.console.throttle). Neither depends on the account, so neither says
        # whether it exists.
        with _app()["signin_gate"].attempt(request.remote_addr) as refusal:
            if refusal is None:  # a refusal's count and audit record are committed too
                result = officers.sign_in(_app()["engine"], _app()["trail"], form.get("officer", ""),
                                          form.get("password", ""), form.get("code", "").strip(),
                                          settings=_app()["settings"], now=_now(), source=request.remote_addr)
        if refusal is not None:
            _refused_unchecked(refusal, form.get("officer", ""))
            return (render_template("login.html", error=UNCHECKED[refusal.status]), refusal.status,
                    {"Retry-After": str(refusal.retry_after)})
        if result.officer is not None:
            session.clear()
            session["token"] = result.token
            session.permanent = True
            return redirect(url_for("pages.dashboard"))
        # The same answer whatever failed: the audit trail records which.
        error = "Sign-in refused: check the officer id, password and code (after repeated failures " \
                "sign-in from this address is locked for a while)."
    return render_template("login.html", error=error), (401 if error else 200)


@auth.route("/logout", methods=["POST"])
def logout():
    token = session.pop("token", None)
    if token:
        with _app()["engine"].begin() as conn:
            officers.end_session(conn, _app()["trail"], token)
    session.clear()
    return redirect(url_for("auth.login"))


@pages.before_request
def _signed_in():
    token = session.get("token")
    if not token:
        return redirect(url_for("auth.login"))
    refusal = None
    with _app()["engine"].begin() as conn:  # an ended session is deleted (committed) and refused
        try:
            g.officer = officers.resume(conn, token, settings=_app()["settings"], now=_now())
        except officers.OfficerError as exc:
            refusal = str(exc)
    if refusal is not None:
        session.clear()
        flash("Your session has ended; sign in again.", "error")
        return redirect(url_for("auth.login"))
    if g.officer.must_change_password:
        session.clear()
        flash("Your password must be changed first: run `contactgate officer password`.", "error")
        return redirect(url_for("auth.login"))
    return None


def _needs(*roles: str):
    """The route is for officers holding one of ``roles`` (checked on the server, every request)."""
    def wrap(view):
        @wraps(view)
        def checked(*args, **kwargs):
            if not g.officer.holds(*roles):
                registry.record_refusal(_app()["engine"], _app()["trail"], g.officer, f"console {request.path}",
                                        f"needs the role {' or '.join(roles)}")
                abort(403, f"This needs the role {' or '.join(roles)}; you hold {g.officer.role_text or 'none'}.")
            return view(*args, **kwargs)
        checked.roles = roles
        return checked
    return wrap


def _stepped_up(keeps_what_was_typed: bool = False) -> bool:
    """The password and a fresh code, given again in the form of a sensitive action (through the
    same gate as a sign-in: it costs the same check)."""
    with _app()["signin_gate"].attempt(request.remote_addr) as refusal:
        if refusal is None:
            result = officers.sign_in(_app()["engine"], _app()["trail"], g.officer.officer_id,
                                      request.form.get("password", ""), request.form.get("code", "").strip(),
                                      settings=_app()["settings"], now=_now(), source=request.remote_addr,
                                      open_session=False)
    if refusal is not None:
        _refused_unchecked(refusal, g.officer.officer_id, step_up=True)
        flash("Not done: " + ("too many attempts from this address; wait a minute and try again."
                              if refusal.status == 429 else "the console is busy; try again in a moment."), "error")
        return False
    if result.officer is None:
        # the same words whatever was wrong: saying "code used" only after a right password would tell
        # whoever holds the session that the password was right
        flash("Not done: confirm with your password and a current code (each code works once: if you signed "
              "in within the last 30 s, wait for the next code, then confirm again)."
              + (" What you typed is kept." if keeps_what_was_typed else ""), "error")
        return False
    return True


KEPT_REASON_CHARS = 500


def _shown_again_with_reason(proposal: registry.Proposal):
    """The page of a decline refused at its step-up, rendered again with the reason as posted (never
    kept in the session: its cookie is signed, not encrypted, and holds a token only)."""
    g.kept_reasons = {str(proposal.id): request.form.get("reason", "")[:KEPT_REASON_CHARS]}
    if proposal.org_code:
        return organisation(proposal.org_code)
    return trust()


def _not_done(action: str, why: Exception) -> None:
    """An officer's request refused before any change: in the audit chain, and said on the page."""
    registry.record_refusal(_app()["engine"], _app()["trail"], g.officer, action, str(why))
    flash(f"Not done: {why}", "error")


def _change(fn, *args, **kwargs):
    """A registry change in one transaction (audited by the registry, a refusal too); its refusal is
    shown, not raised."""
    try:
        return registry.run_change(_app()["engine"], _app()["trail"], fn, *args, **kwargs)
    except (RegistryError, officers.OfficerError) as exc:
        flash(f"Not done: {exc}", "error")
        return None


def _read():
    return _app()["engine"].connect()


# ---- dashboard -----------------------------------------------------------------------------------

def _audit_since(hours: int) -> str:
    return (_now() - dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pages.route("/")
@_needs(*registry.READ_ROLES)
def dashboard():
    today = _now().date()
    since = _audit_since(24)
    with _read() as conn:
        pending = registry.list_proposals(conn)
        expiring_orgs = registry.list_orgs(conn, expiring_days=30, today=today)
        expiring_certs = registry.list_certs(conn, expiring_days=30, today=today)
        refusals = conn.execute(
            select(audit_log.c.org_code, audit_log.c.fault_code, func.count())
            .where(audit_log.c.at >= since, audit_log.c.outcome == "refused", audit_log.c.fault_code.is_not(None))
            .group_by(audit_log.c.org_code, audit_log.c.fault_code)
            .order_by(func.count().desc())).all()
        traffic = conn.execute(
            select(audit_log.c.org_code, func.count())
            .where(audit_log.c.at >= since, audit_log.c.org_code.is_not(None),
                   audit_log.c.cert_fingerprint.is_not(None))
            .group_by(audit_log.c.org_code).order_by(func.count().desc())).all()
        additional = registry.additional_certificates(conn, _now() - dt.timedelta(days=30))
        restored = backup.gate_reason(_app()["settings"].layout, conn)
    top = max((n for _, n in traffic), default=0)
    bars = [{"org": org, "count": n, "width": round(400 * n / top) if top else 0, "y": 28 * i}
            for i, (org, n) in enumerate(traffic[:20])]
    return render_template("dashboard.html", pending=pending, expiring_orgs=expiring_orgs,
                           expiring_certs=expiring_certs, refusals=refusals, bars=bars, today=today,
                           additional=additional, restored=restored)


# ---- organisations -------------------------------------------------------------------------------

STATUSES = ("registered", "pending_approval", "accredited", "suspended", "revoked", "expired")


@pages.route("/organisations")
@_needs(*registry.READ_ROLES)
def organisations():
    today = _now().date()
    wanted = request.args.get("status") or None
    if wanted is not None and wanted not in STATUSES:
        wanted = None
    with _read() as conn:
        orgs = registry.list_orgs(conn)
    if wanted:
        orgs = [o for o in orgs if o.effective_status(today) == wanted]
    return render_template("organisations.html", orgs=orgs, statuses=STATUSES, wanted=wanted, today=today,
                           kinds=registry.KINDS)


@pages.route("/organisations/new", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES)
def organisation_new():
    form = request.form
    org = _change(registry.add_org, form.get("code", ""), form.get("name", ""), form.get("kind", ""), g.officer)
    if org is None:
        return redirect(url_for("pages.organisations"))
    flash(f"Registered {org.code}. Next: propose its accreditation.", "ok")
    return redirect(url_for("pages.organisation", code=org.code))


@pages.route("/organisations/<code>")
@_needs(*registry.READ_ROLES)
def organisation(code: str):
    today = _now().date()
    with _read() as conn:
        org = registry.get_org(conn, code)
        if org is None:
            abort(404)
        history = registry.history(conn, org.code)
        certs = registry.list_certs(conn, org.code)
        exchanges = conn.execute(
            select(audit_log.c.seq, audit_log.c.at, audit_log.c.operation, audit_log.c.outcome,
                   audit_log.c.fault_code)
            .where(audit_log.c.org_code == org.code, audit_log.c.cert_fingerprint.is_not(None))
            .order_by(audit_log.c.seq.desc()).limit(20)).all()
    default_expiry = min(today + dt.timedelta(days=365),
                         today + dt.timedelta(days=_app()["settings"].max_accreditation_days))
    return render_template("organisation.html", org=org, history=history, certs=certs, exchanges=exchanges,
                           today=today, scopes=registry.SCOPES, default_expiry=default_expiry)


def _evidence_digests() -> list[dict]:
    digests = []
    for upload in request.files.getlist("evidence_file"):
        if upload and upload.filename:
            digests.append({"name": upload.filename.rsplit("/", 1)[-1][:200],
                            "sha256": hashlib.sha256(upload.read()).hexdigest()})
    return digests


@pages.route("/organisations/<code>/accredit", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES)
def organisation_accredit(code: str):
    form = request.form
    try:
        expires = dt.date.fromisoformat(form.get("expires", ""))
    except ValueError:
        flash("Not done: the expiry must be a date (YYYY-MM-DD).", "error")
        return redirect(url_for("pages.organisation", code=code))
    evidence = form.get("evidence") or None
    proposal = _change(registry.propose_accreditation, code, form.getlist("scope"), expires, g.officer,
                       evidence, _now().date(), evidence_files=_evidence_digests(),
                       max_days=_app()["settings"].max_accreditation_days)
    if proposal is not None:
        flash(f"Proposal {proposal.id} made: a second officer approves it.", "ok")
    return redirect(url_for("pages.organisation", code=code))


@pages.route("/organisations/<code>/suspend", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES)
def organisation_suspend(code: str):
    if _stepped_up() and _change(registry.suspend, code, g.officer, request.form.get("reason", "")):
        flash(f"{code} is suspended: its messages are refused from now on.", "ok")
    return redirect(url_for("pages.organisation", code=code))


@pages.route("/organisations/<code>/reinstate", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES)
def organisation_reinstate(code: str):
    proposal = _change(registry.reinstate, code, g.officer, request.form.get("reason", ""))
    if proposal is not None:
        flash(f"Proposal {proposal.id} made: a second officer approves the reinstatement.", "ok")
    return redirect(url_for("pages.organisation", code=code))


@pages.route("/organisations/<code>/revoke", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES)
def organisation_revoke(code: str):
    if _stepped_up() and _change(registry.revoke_org, code, g.officer, request.form.get("reason", "")):
        _publish_crl()
        flash(f"{code} is revoked, with its certificates.", "ok")
    return redirect(url_for("pages.organisation", code=code))


# ---- proposals -----------------------------------------------------------------------------------

@pages.route("/proposals")
@_needs(*registry.READ_ROLES)
def proposals():
    with _read() as conn:
        pending = registry.list_proposals(conn)
    return render_template("proposals.html", pending=pending)


def _proposal(proposal_id: int) -> registry.Proposal:
    with _read() as conn:
        proposal = registry.get_proposal(conn, proposal_id)
    if proposal is None:
        abort(404)
    return proposal


def _back(proposal: registry.Proposal):
    if proposal.org_code:
        return redirect(url_for("pages.organisation", code=proposal.org_code))
    return redirect(url_for("pages.trust"))


def _restore_by_command_line(proposal: registry.Proposal):
    flash(f"Proposal {proposal.id} ({proposal.kind}) is decided with the command line: "
          f"contactgate restore acknowledge", "error")
    return redirect(url_for("pages.proposals"))


@pages.route("/proposals/<int:proposal_id>/approve", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES, *registry.TRUST_ROLES)
def proposal_approve(proposal_id: int):
    proposal = _proposal(proposal_id)
    if proposal.kind in backup.RESTORE_PROPOSALS:
        return _restore_by_command_line(proposal)
    if not _stepped_up():
        return _back(proposal)
    if proposal.kind in registry.TRUST_PROPOSALS:
        from gateway.trust import anchors

        try:
            with anchors.approving(_app()["settings"], _app()["engine"]) as apply:  # the database first
                done = _change(registry.decide_trust_change, proposal.id, g.officer, approve=True, apply=apply)
        except anchors.TrustFilesNotChanged as exc:
            flash(f"Not done on disk: {exc}", "error")
            done = None
    elif proposal.kind in registry.CERT_PROPOSALS:
        done = _approve_certificate(proposal)
        if done is not None:
            flash(f"Approved proposal {proposal.id}: certificate {done.fingerprint[:16]}… is bound to "
                  f"{done.org_code}; download it below and send it to the organisation.", "ok")
        return _back(proposal)
    else:
        done = _change(registry.approve, proposal.org_code, proposal.id, g.officer)
    if done is not None:
        flash(f"Approved proposal {proposal.id} ({proposal.kind}): {proposal.summary()}", "ok")
    return _back(proposal)


@pages.route("/proposals/<int:proposal_id>/decline", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES, *registry.TRUST_ROLES)
def proposal_decline(proposal_id: int):
    proposal = _proposal(proposal_id)
    if proposal.kind in backup.RESTORE_PROPOSALS:
        return _restore_by_command_line(proposal)
    if not _stepped_up(keeps_what_was_typed=True):
        return _shown_again_with_reason(proposal)
    reason = request.form.get("reason", "")
    if proposal.kind in registry.TRUST_PROPOSALS:
        done = _change(registry.decide_trust_change, proposal.id, g.officer, approve=False, reason=reason)
    else:
        done = _change(registry.decline, proposal.org_code, proposal.id, g.officer, reason)
    if done is not None:
        flash(f"Declined proposal {proposal.id}.", "ok")
    return _back(proposal)


# ---- certificates --------------------------------------------------------------------------------

def _publish_crl() -> None:
    from gateway.trust import crl

    if _app()["settings"].layout.ca_key.exists():
        crl.renew(_app()["settings"], _app()["engine"], ca=_gateway_ca())


def _gateway_ca():
    """The gateway CA's key and certificate, read from the home once per process."""
    if "ca" not in _app():
        from gateway.home import load_ca

        _app()["ca"] = load_ca(_app()["settings"])
    return _app()["ca"]


@pages.route("/organisations/<code>/certificates", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES)
def certificate_issue(code: str):
    """Propose a certificate for the organisation's uploaded CSR: a second officer approves it (with
    the step-up), and only then is it signed. The console never makes a key: an organisation that
    cannot make one is served by the CLI (`cert issue --gateway-key`), which encrypts the bundle."""
    from gateway.trust import issuing

    with _read() as conn:
        org = registry.get_org(conn, code)
    if org is None:
        abort(404)
    upload = request.files.get("csr")
    if upload is None or not upload.filename:
        _not_done("cert issue", issuing.IssueError(
            "upload the organisation's certificate signing request (it makes its key on its own machine: "
            "`contactgate csr`); the console never makes a key"))
        return redirect(url_for("pages.organisation", code=org.code))
    try:
        payload = issuing.csr_payload(org, upload.read())
    except issuing.IssueError as exc:
        _not_done("cert issue", exc)
        return redirect(url_for("pages.organisation", code=org.code))
    proposal = _change(registry.propose_certificate, org.code, "cert_issue", payload, g.officer)
    if proposal is not None:
        flash(f"Proposal {proposal.id} made: a second officer approves it, and the certificate is signed then.", "ok")
    return redirect(url_for("pages.organisation", code=org.code))


def _approve_certificate(proposal: registry.Proposal):
    """A second officer's approval of a certificate proposal (after the step-up): signed (or checked
    again) and bound in one transaction; the certificate is then downloaded from the organisation's page."""
    from gateway.app import trust_anchor_files
    from gateway.trust import issuing, pki

    settings = _app()["settings"]
    make, made = issuing.made_on_approval(settings, anchors=pki.TrustAnchors.from_files(trust_anchor_files(settings)),
                                          ca=_gateway_ca(), gateway_key_allowed=False)
    try:
        return registry.run_change(_app()["engine"], _app()["trail"], registry.approve_certificate,
                                   proposal.org_code, proposal.id, g.officer, make=make)
    except (RegistryError, officers.OfficerError) as exc:
        flash(f"Not done: {exc}", "error")
    except issuing.IssueError as exc:
        _not_done("cert approve", exc)
    return None


@pages.route("/certificates/<fingerprint>.pem")
@_needs(*registry.READ_ROLES)
def certificate_download(fingerprint: str):
    """A bound certificate (public: what the organisation presents), to send to the organisation."""
    with _read() as conn:
        row = conn.execute(select(certificates.c.pem, certificates.c.org_code)
                           .where(certificates.c.fingerprint == fingerprint.lower())).first()
    if row is None:
        abort(404)
    return send_file(io.BytesIO(row.pem.encode()), mimetype="application/x-pem-file", as_attachment=True,
                     download_name=f"{row.org_code.lower()}-cert.pem")


@pages.route("/certificates/<fingerprint>/revoke", methods=["POST"])
@_needs(*registry.ORGANISATION_ROLES)
def certificate_revoke(fingerprint: str):
    with _read() as conn:
        record = registry.get_cert(conn, fingerprint)
    if record is None:
        abort(404)
    if _stepped_up() and _change(registry.revoke_cert, fingerprint, request.form.get("reason", ""),
                                 g.officer) is not None:
        _publish_crl()
        flash(f"Certificate {fingerprint[:16]}… revoked; the gateway refuses it at the handshake within "
              f"a second.", "ok")
    return redirect(url_for("pages.organisation", code=record.org_code))


# ---- the data-quality review queue ---------------------------------------------------------------

REVIEW_STATUSES = ("open", "linked", "distinct", "merged")


@pages.route("/review")
@_needs("data_quality")
def review_queue():
    from gateway.index import review

    wanted = request.args.get("status", "open")
    if wanted not in (*REVIEW_STATUSES, "all"):
        wanted = "open"
    from gateway.index import settling

    with _read() as conn:
        entries = review.list_entries(conn, None if wanted == "all" else wanted, 200, officer_roles=g.officer.roles,
                                      shield_roles=_app()["settings"].review_shield_roles)
        value_conflicts = settling.list_conflicts(conn, "open", 200, officer_roles=g.officer.roles,
                                                  shield_roles=_app()["settings"].review_shield_roles)
    return render_template("review_list.html", entries=entries, statuses=REVIEW_STATUSES, wanted=wanted,
                           value_conflicts=value_conflicts)


@pages.route("/review/<int:review_id>")
@_needs("data_quality")
def review_entry(review_id: int):
    """Both children's records side by side: reading them is access to both, audited in this transaction."""
    from gateway.index import review

    try:
        with _app()["engine"].begin() as conn:
            entry = review.show(conn, _app()["trail"], review_id, g.officer.officer_id, officer_roles=g.officer.roles,
                                shield_roles=_app()["settings"].review_shield_roles)
    except review.ReviewError:
        abort(404)
    left, right = entry["stored_as"]["record"], entry["candidate"]["record"]
    rows = [(name, pick(left), pick(right)) for name, pick in review.DISPLAY_FIELDS]
    now = entry["comparison_now"]
    weights = now.get("weights")  # absent for a pair whose location is withheld: levels only
    agreements = [(f, now["levels"][f], None if weights is None else weights.get(f, 0.0)) for f in sorted(now["levels"])]
    return render_template("review_entry.html", entry=entry, rows=rows, agreements=agreements)


def _review_action(fn, *args):
    from gateway.index import review

    try:
        with _app()["engine"].begin() as conn:
            return fn(conn, _app()["trail"], *args, g.officer.officer_id, _now()), True
    except review.ReviewError as exc:
        registry.record_refusal(_app()["engine"], _app()["trail"], g.officer, fn.__name__, str(exc))
        flash(f"Not done: {exc}", "error")
        return None, False


@pages.route("/review/<int:review_id>/link", methods=["POST"])
@_needs("data_quality")
def review_link(review_id: int):
    from gateway.index import review

    merge_id, done = _review_action(review.link, review_id)
    if done:
        flash(f"Review {review_id}: linked as one child (merge {merge_id}; it can be undone).", "ok")
    return redirect(url_for("pages.review_queue"))


@pages.route("/review/<int:review_id>/distinct", methods=["POST"])
@_needs("data_quality")
def review_distinct(review_id: int):
    from gateway.index import review

    if _review_action(review.distinct, review_id)[1]:
        flash(f"Review {review_id}: recorded as different children.", "ok")
    return redirect(url_for("pages.review_queue"))


@pages.route("/review/merge", methods=["POST"])
@_needs("data_quality")
def review_merge():
    """Child ids come in the form's body, never in a URL."""
    from gateway.index import review

    survivor, merged = request.form.get("survivor", "").strip(), request.form.get("merged", "").strip()
    merge_id, done = _review_action(review.merge, survivor, merged)
    if done:
        flash(f"Merge {merge_id} done (it can be undone).", "ok")
    return redirect(url_for("pages.review_queue"))


@pages.route("/review/unmerge", methods=["POST"])
@_needs("data_quality")
def review_unmerge():
    from gateway.index import review

    try:
        merge_id = int(request.form.get("merge_id", ""))
    except ValueError:
        flash("Not done: a merge id is a number.", "error")
        return redirect(url_for("pages.review_queue"))
    if _review_action(review.unmerge, merge_id)[1]:
        flash(f"Merge {merge_id} undone.", "ok")
    return redirect(url_for("pages.review_queue"))


# ---- value conflicts (gateway.index.settling): in the same queue, settled by a data-quality officer ----

@pages.route("/review/conflict/<int:conflict_id>")
@_needs("data_quality")
def review_conflict(conflict_id: int):
    """Both values, who supplied each and when: reading them is access to the child, audited here."""
    from gateway.index import settling
    from gateway.index.review import ReviewError

    try:
        with _app()["engine"].begin() as conn:
            entry = settling.show(conn, _app()["trail"], conflict_id, g.officer.officer_id,
                                  officer_roles=g.officer.roles, shield_roles=_app()["settings"].review_shield_roles)
    except ReviewError:
        abort(404)
    return render_template("review_conflict.html", entry=entry, shown=settling.display(entry, "shown"),
                           submitted=settling.display(entry, "submitted"))


@pages.route("/review/conflict/<int:conflict_id>/settle", methods=["POST"])
@_needs("data_quality")
def review_settle(conflict_id: int):
    from gateway.index import settling

    keep = request.form.get("keep", "")

    def settle(conn, trail, conflict_id, keep, officer_id, now):
        return settling.settle(conn, trail, conflict_id, keep, officer_id, now, officer_roles=g.officer.roles,
                               shield_roles=_app()["settings"].review_shield_roles)

    status, done = _review_action(settle, conflict_id, keep)
    if done:
        flash(f"Value conflict {conflict_id}: {status}.", "ok")
    return redirect(url_for("pages.review_queue"))


# ---- audit ---------------------------------------------------------------------------------------



@pages.route("/audit")
@_needs("auditor")
def audit_page():
    return render_template("audit.html", rows=None, verified=None)


@pages.route("/audit/review", methods=["POST"])
@_needs("auditor")
def audit_review():
    """The misuse review (`contactgate audit review`): the same rules and thresholds over the trail
    from the day given to now, the findings with their review marks; the run is itself an entry in
    the audit chain, as the command's is. Marking a finding reviewed stays with the command."""
    from gateway import audit
    from gateway.audit import review

    text = request.form.get("since", "").strip()
    try:
        since = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return render_template("audit.html", rows=None, verified=None, since=text[:20],
                               review_problem="Give the first day to review as YYYY-MM-DD."), 400
    now = _now()
    if since >= now:
        return render_template("audit.html", rows=None, verified=None, since=text,
                               review_problem="The first day to review must be in the past."), 400
    try:
        thresholds = review.Thresholds.load(_app()["settings"].layout.review_file)
    except review.ReviewConfigError as exc:
        return render_template("audit.html", rows=None, verified=None, since=text,
                               review_problem=f"The review's settings cannot be used: {exc}"), 500
    from gateway.db import reader

    with reader(_app()["engine"]).begin() as conn:  # no write lock held while the rules run
        findings = review.run(conn, since, thresholds, until=now)
    with _app()["engine"].begin() as conn:
        _app()["trail"].append(conn, audit.Entry(
            operation="audit.review", outcome="done", user_id=g.officer.officer_id, role=g.officer.role_text,
            detail=f"in the console: since {since:%Y-%m-%d}: {len(findings)} findings"))
    return render_template("audit.html", rows=None, verified=None, since=text, findings=findings)


@pages.route("/audit/verify", methods=["POST"])
@_needs("auditor")
def audit_verify():
    result = _app()["trail"].verify(_app()["engine"])
    return render_template("audit.html", rows=None, verified=result)


def _report():
    """(rows, what) for the form's subject; the auditor's look-up is itself audited (a child's
    report is access to who saw that child). Subjects travel in POST bodies, never in URLs."""
    from gateway import audit

    kind, subject = request.form.get("kind"), request.form.get("subject", "").strip()
    if not subject or kind not in ("child", "user") or len(subject) > 200:
        return None, "Give a child id, or ORG:USER for a user."
    if kind == "user" and ":" not in subject:
        return None, "A user is given as ORG:USER (the organisation's code and the user's id)."
    with _app()["engine"].begin() as conn:
        if kind == "child":
            from gateway.index import ids

            subject = ids.normalise(subject) or subject.upper()  # as the gateway reads ids
            rows = audit.report_for_child(conn, subject)
        else:
            org_code, _, user_id = subject.partition(":")
            org = registry.get_org(conn, org_code.strip(), with_pending=False)  # codes are case-free
            rows = audit.report_for_user(conn, org.code if org else org_code.strip(), user_id.strip())
        _app()["trail"].append(conn, audit.Entry(
            operation="audit.report", outcome="done", user_id=g.officer.officer_id, role=g.officer.role_text,
            child_ids=[subject] if kind == "child" and rows else [],
            detail=f"{kind} report in the console: {len(rows)} entries"
                   + ("" if kind == "child" else f" for {subject}")))
    return rows, None


@pages.route("/audit/report", methods=["POST"])
@_needs("auditor")
def audit_report():
    rows, problem = _report()
    if problem:
        return render_template("audit.html", rows=None, verified=None, problem=problem,
                               kind=request.form.get("kind"), subject=request.form.get("subject", "")), 400
    from gateway.audit.report import COLUMNS

    return render_template("audit.html", rows=rows, verified=None, columns=COLUMNS,
                           kind=request.form.get("kind"), subject=request.form.get("subject", ""))


@pages.route("/audit/report.csv", methods=["POST"])
@_needs("auditor")
def audit_report_csv():
    from gateway.audit import report

    rows, problem = _report()
    if problem:
        abort(400, problem)
    return send_file(io.BytesIO(report.render(rows, "csv").encode()), mimetype="text/csv", as_attachment=True,
                     download_name="audit-report.csv")


# ---- the trust list ------------------------------------------------------------------------------

@pages.route("/trust")
@_needs(*registry.READ_ROLES)
def trust():
    from gateway.trust import anchors

    with _read() as conn:
        pending = registry.list_proposals(conn, kinds=registry.TRUST_PROPOSALS)
    return render_template("trust.html", anchors=anchors.list_anchors(_app()["settings"]), pending=pending)


@pages.route("/trust/add", methods=["POST"])
@_needs(*registry.TRUST_ROLES)
def trust_add():
    """Propose trusting a CA (uploaded PEM, and its CRL): a second senior officer approves it."""
    from gateway.trust import anchors

    upload, crl_upload = request.files.get("ca"), request.files.get("crl")
    try:
        payload = anchors.add_payload(upload.read() if upload is not None else b"",
                                      crl_upload.read() if crl_upload is not None and crl_upload.filename else None)
    except anchors.TrustError as exc:
        _not_done("trust add-ca", exc)
        return redirect(url_for("pages.trust"))
    proposal = _change(registry.propose_trust_change, g.officer, "trust_add", payload)
    if proposal is not None:
        flash(f"Proposal {proposal.id} made: a second senior officer approves it.", "ok")
    return redirect(url_for("pages.trust"))


@pages.route("/trust/remove", methods=["POST"])
@_needs(*registry.TRUST_ROLES)
def trust_remove():
    from gateway.trust import anchors

    try:
        payload = anchors.remove_payload(_app()["settings"], request.form.get("fingerprint", ""))
    except anchors.TrustError as exc:
        _not_done("trust remove", exc)
        return redirect(url_for("pages.trust"))
    proposal = _change(registry.propose_trust_change, g.officer, "trust_remove", payload)
    if proposal is not None:
        flash(f"Proposal {proposal.id} made: a second senior officer approves the removal.", "ok")
    return redirect(url_for("pages.trust"))
