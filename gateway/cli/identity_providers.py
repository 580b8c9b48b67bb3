"""`contactgate idp`: an organisation's OpenID Connect provider, through which its practitioners sign
in to the portal (gateway.trust.identity_providers): one officer proposes, a second approves or
declines; one officer may remove it."""

from __future__ import annotations

import datetime as dt
import json

import click

from gateway.cli.base import JSON_FLAG, Context, echo_json, fail, group, pass_ctx


@group("idp")
def idp_group() -> None:
    """Register an organisation's identity provider for the portal (four-eyes)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _run(ctx: Context, operation: str, fn, *args, org_code=None):
    from gateway.trust import identity_providers as idps

    actor = ctx.signed_in(idps.ROLES, action=operation.replace(".", " "))
    try:
        return idps.run(ctx.engine, ctx.trail, operation, actor, fn, *args, org_code=org_code)
    except idps.IdentityProviderError as exc:
        fail(str(exc))


def _org_of(ctx: Context, idp_id: int) -> str | None:
    from gateway.trust import identity_providers as idps

    with ctx.reader.connect() as conn:
        found = idps.get(conn, idp_id)
    return found.org_code if found else None


def _print(idp) -> None:
    click.echo(f"{idp.id} {idp.status}: {idp.summary()}")
    click.echo(f"  redirect URI (register it at the provider): {idp.redirect_uri}")
    if idp.public_jwk:
        click.echo("  the client's public key (register it at the provider as the client's jwks):")
        click.echo("  " + json.dumps({"keys": [idp.public_jwk]}, sort_keys=True))


@idp_group.command("propose")
@click.argument("org_code", metavar="ORG")
@click.option("--issuer", required=True, help="The provider's issuer URL (https), exactly as its discovery says.")
@click.option("--client-id", required=True, help="The portal's client id at the provider.")
@click.option("--redirect-uri", required=True, help="The portal's https://HOST[:PORT]/oidc/callback, as registered.")
@click.option("--client-auth", default="private_key_jwt", show_default=True,
              type=click.Choice(["private_key_jwt", "client_secret_basic", "client_secret_post"]),
              help="How the portal authenticates to the token endpoint (private_key_jwt: the gateway makes the key).")
@click.option("--client-secret-file", type=click.File("r"), default=None,
              help="A file holding the client secret (client_secret_*: never on the command line).")
@click.option("--person-claim", default="preferred_username", show_default=True,
              help="The claim naming the person: their portal user id.")
@click.option("--role-claim", default="groups", show_default=True, help="The claim (string or list) giving the role.")
@click.option("--role", "roles", multiple=True, required=True, metavar="VALUE=ROLE",
              help="A value of the role claim and the roles file's role it gives (repeat).")
@click.option("--acr", "acr", multiple=True, help="An acr value that counts as two factors (repeat).")
@click.option("--amr", "amr", multiple=True, help="An amr value that counts as two factors (repeat).")
@click.option("--without-two-factors", default="refuse", show_default=True, type=click.Choice(["refuse", "portal_totp"]),
              help="Without that evidence: refuse, or ask for the practitioner's own portal TOTP code.")
@click.option("--scope", "scopes", default="openid profile", show_default=True, help="Scopes asked for.")
@JSON_FLAG
@pass_ctx
def propose(ctx: Context, org_code, issuer, client_id, redirect_uri, client_auth, client_secret_file, person_claim,
            role_claim, roles, acr, amr, without_two_factors, scopes, as_json) -> None:
    """Propose ORG's identity provider; a second officer approves it. With private_key_jwt the
    gateway makes the client's key and prints its public JWK for the provider's administrator."""
    from gateway.index import disclosure
    from gateway.trust import identity_providers as idps

    mapping = {}
    for pair in roles:
        value, sep, role = pair.partition("=")
        if not sep or not value.strip() or not role.strip():
            fail(f"--role takes VALUE=ROLE, not {pair!r}")
        mapping[value.strip()] = role.strip()
    secret = client_secret_file.read().strip() if client_secret_file else None
    registration = idps.Registration(org_code, issuer, client_id, redirect_uri, client_auth, secret, person_claim,
                                     role_claim, mapping, tuple(acr), tuple(amr), without_two_factors, scopes)
    found = _run(ctx, "idp.propose", idps.propose, registration, _now(), disclosure.load(ctx.settings.roles_path),
                 org_code=org_code.strip().upper()[:32])
    if as_json:
        echo_json(found.as_json())
        return
    _print(found)
    click.echo(f"  a second officer approves it with: contactgate idp approve {found.id}")


@idp_group.command("approve")
@click.argument("idp_id", type=int)
@pass_ctx
def approve(ctx: Context, idp_id: int) -> None:
    """Approve a proposed provider (not your own proposal): its people may sign in from now."""
    from gateway.trust import identity_providers as idps

    _print(_run(ctx, "idp.approve", idps.approve, idp_id, _now(), org_code=_org_of(ctx, idp_id)))


@idp_group.command("decline")
@click.argument("idp_id", type=int)
@click.option("--reason", required=True, help="Why (recorded in the audit).")
@pass_ctx
def decline(ctx: Context, idp_id: int, reason: str) -> None:
    """Decline a proposed provider."""
    from gateway.trust import identity_providers as idps

    _print(_run(ctx, "idp.decline", idps.decline, idp_id, reason, _now(), org_code=_org_of(ctx, idp_id)))


@idp_group.command("remove")
@click.argument("idp_id", type=int)
@click.option("--reason", required=True, help="Why (recorded in the audit).")
@pass_ctx
def remove(ctx: Context, idp_id: int, reason: str) -> None:
    """Remove a provider (one officer may: it takes access away); its portal sessions end."""
    from gateway.trust import identity_providers as idps

    _print(_run(ctx, "idp.remove", idps.remove, idp_id, reason, _now(), org_code=_org_of(ctx, idp_id)))


@idp_group.command("list")
@click.option("--org", "org_code", default=None, help="Only this organisation's.")
@click.option("--all", "everything", is_flag=True, help="Also declined, superseded and removed ones.")
@JSON_FLAG
@pass_ctx
def list_(ctx: Context, org_code, everything, as_json) -> None:
    """The providers in force and proposed."""
    from gateway.trust import identity_providers as idps

    ctx.signed_in(action="idp list")
    with ctx.reader.connect() as conn:
        found = idps.listed(conn, org_code=org_code, everything=everything)
    if as_json:
        echo_json([f.as_json() for f in found])
        return
    for each in found:
        click.echo(f"{each.id} {each.status}: {each.summary()}")


@idp_group.command("show")
@click.argument("idp_id", type=int)
@JSON_FLAG
@pass_ctx
def show(ctx: Context, idp_id: int, as_json) -> None:
    """One provider, with the client's public JWK (private_key_jwt) to register at the provider."""
    from gateway.trust import identity_providers as idps

    ctx.signed_in(action="idp show")
    with ctx.reader.connect() as conn:
        found = idps.get(conn, idp_id)
    if found is None:
        fail(f"no identity provider {idp_id}")
    if as_json:
        echo_json(found.as_json())
        return
    _print(found)
