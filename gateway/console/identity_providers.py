"""The console's page of organisations' identity providers (issue 27; gateway.trust.identity_providers):
one officer proposes a provider (with private_key_jwt the gateway makes the key and the page shows
its public JWK for the provider's administrator), a second approves or declines it, confirming with
their password and a code; removing one (it takes access away) needs one officer, confirmed the
same way. Every step and refusal is audited by gateway.trust.identity_providers."""

from __future__ import annotations

import json

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from gateway.console import views
from gateway.trust import identity_providers as idps

blueprint = Blueprint("idps", __name__)
blueprint.before_request(views._signed_in)


def _run(operation: str, fn, *args, org_code=None):
    app = views._app()
    try:
        return idps.run(app["engine"], app["trail"], operation, g.officer, fn, *args, org_code=org_code)
    except idps.IdentityProviderError as exc:
        flash(f"Not done: {exc}", "error")
        return None


def _found(idp_id: int) -> idps.IdentityProvider:
    with views._read() as conn:
        found = idps.get(conn, idp_id)
    if found is None:
        abort(404)
    return found


@blueprint.route("/identity-providers")
@views._needs(*idps.ROLES)
def listing():
    with views._read() as conn:
        found = idps.listed(conn, everything=request.args.get("all") == "1")
    return render_template("identity_providers.html", providers=found, json=json,
                           shown=request.args.get("shown", type=int))


def _roles():
    from gateway.index import disclosure

    return disclosure.load(views._app()["settings"].roles_path)


@blueprint.route("/identity-providers/propose", methods=["POST"])
@views._needs(*idps.ROLES)
def propose():
    form = request.form
    mapping = {}
    for line in (form.get("role_map") or "").splitlines():
        value, sep, role = line.partition("=")
        if sep and value.strip() and role.strip():
            mapping[value.strip()] = role.strip()
    registration = idps.Registration(
        form.get("org", ""), form.get("issuer", ""), form.get("client_id", ""), form.get("redirect_uri", ""),
        form.get("client_auth", "private_key_jwt"), form.get("client_secret") or None,
        form.get("person_claim", "") or "preferred_username", form.get("role_claim", "") or "groups", mapping,
        tuple((form.get("acr_values") or "").split()), tuple((form.get("amr_values") or "").split()),
        form.get("without_two_factors", "refuse"), form.get("scopes") or "openid profile")
    done = _run("idp.propose", idps.propose, registration, views._now(), _roles(),
                org_code=(form.get("org") or "").strip().upper()[:32])
    if done is None:
        return redirect(url_for("idps.listing"))
    flash(f"Proposed {done.id}: a second officer approves it. "
          + ("Send the provider's administrator the client's public key shown below." if done.public_jwk else ""), "ok")
    return redirect(url_for("idps.listing", shown=done.id))


def _stepped_up_then(idp_id: int, operation: str, fn, *args, said: str):
    """``fn(…, idp_id, *args, now)`` on an existing provider once the officer has confirmed with their
    password and a code; when done, ``said`` (with {id} and {org}) is flashed."""
    found = _found(idp_id)
    if views._stepped_up() and _run(operation, fn, idp_id, *args, views._now(), org_code=found.org_code):
        flash(said.format(id=idp_id, org=found.org_code), "ok")
    return redirect(url_for("idps.listing"))


@blueprint.route("/identity-providers/<int:idp_id>/approve", methods=["POST"])
@views._needs(*idps.ROLES)
def approve(idp_id: int):
    return _stepped_up_then(idp_id, "idp.approve", idps.approve,
                            said="Provider {id} approved: {org}'s practitioners may sign in through it.")


@blueprint.route("/identity-providers/<int:idp_id>/decline", methods=["POST"])
@views._needs(*idps.ROLES)
def decline(idp_id: int):
    return _stepped_up_then(idp_id, "idp.decline", idps.decline, request.form.get("reason", ""),
                            said="Provider {id} declined.")


@blueprint.route("/identity-providers/<int:idp_id>/remove", methods=["POST"])
@views._needs(*idps.ROLES)
def remove(idp_id: int):
    return _stepped_up_then(idp_id, "idp.remove", idps.remove, request.form.get("reason", ""),
                            said="Provider {id} removed: its portal sessions end at their next page.")
