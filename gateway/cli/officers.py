"""Officers and their sessions: `login`, `logout`, `whoami`, and `officer add|disable|reset|password|list`
(a senior officer manages the accounts)."""

from __future__ import annotations

import sys

import click

from gateway import officers
from gateway.cli.base import JSON_FLAG, Context, Refused, command, echo_json, fail, group, local_origin, pass_ctx


@command("login")
@click.option("--officer", "officer_id", default=None, help="The officer's id (asked for if not given).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input (and, when a change is due, "
                   "the new password from the second).")
@click.option("--code", default=None, help="The current code from the authenticator app (asked for if not given).")
@pass_ctx
def login(ctx: Context, officer_id: str | None, password_stdin: bool, code: str | None) -> None:
    """Sign in: password and authenticator code; the session lasts while used (see `whoami`)."""
    officer_id = officer_id or click.prompt("officer id")
    new_password = None
    if password_stdin:
        lines = sys.stdin.read().splitlines()
        password = lines[0] if lines else ""
        new_password = lines[1] if len(lines) > 1 else None
    else:
        password = click.prompt("password", hide_input=True)
    code = code or click.prompt("code")
    # Its own transactions (the password is checked outside them); failures lock this machine's
    # account out, not others.
    result = officers.sign_in(ctx.engine, ctx.trail, officer_id, password, code, settings=ctx.settings,
                              source=local_origin())
    if result.officer is None:
        fail("sign-in refused: the officer id, password or code is wrong, or the account is locked or "
              "disabled (every attempt is audited)")
    path = officers.session_path()
    officers.write_session(path, result.officer.officer_id, result.token,
                           officers.database_identity(ctx.settings.database_url))
    signed_in = f"signed in as {result.officer.officer_id} ({result.officer.role_text}); session in {path}"
    if result.officer.must_change_password:  # in this sign-in: its code is spent, and the session is open
        if new_password is None and password_stdin:
            fail(f"{signed_in}, but a new password is due before anything else: give it on the second line "
                 f"of standard input, or run `contactgate officer password` now (this session; no new code)")
        for attempt in range(1, NEW_PASSWORD_ATTEMPTS + 1):
            if new_password is None:
                new_password = click.prompt("a new password is due; new password", hide_input=True,
                                            confirmation_prompt=True)
            try:
                change_password(ctx, result.officer, new_password)
                break
            except Refused as exc:
                if password_stdin or attempt == NEW_PASSWORD_ATTEMPTS:
                    raise Refused(f"{exc.format_message()}; the session is open: `contactgate officer password` "
                                  f"changes it without a new code") from None
                click.echo(f"not changed: {exc.format_message()}; try another", err=True)
                new_password = None
    click.echo(signed_in)


NEW_PASSWORD_ATTEMPTS = 3


def change_password(ctx: Context, actor: officers.Officer, new_password: str) -> None:
    try:
        with ctx.engine.begin() as conn:
            officers.change_password(conn, ctx.trail, actor, new_password)
    except officers.OfficerError as exc:
        raise Refused(str(exc)) from None
    click.echo("password changed")


@command("logout")
@pass_ctx
def logout(ctx: Context) -> None:
    """End the session on this terminal."""
    path = officers.session_path()
    try:
        _, token = officers.read_session(path, officers.database_identity(ctx.settings.database_url))
    except officers.NotSignedIn:
        path.unlink(missing_ok=True)
        click.echo("not signed in")
        return
    with ctx.engine.begin() as conn:
        officers.end_session(conn, ctx.trail, token)
    path.unlink(missing_ok=True)
    click.echo("signed out")


@command("whoami")
@pass_ctx
def whoami(ctx: Context) -> None:
    """Who is signed in, with which roles."""
    actor = ctx.signed_in(tuple(officers.ROLES), action="whoami")
    click.echo(f"{actor.officer_id} ({actor.name}): {actor.role_text}")


@group("officer")
def officer_group() -> None:
    """Officer accounts (a senior officer adds, disables and resets them)."""


def _officer_call(ctx: Context, fn, *args, **kwargs):
    try:
        with ctx.engine.begin() as conn:
            return fn(conn, ctx.trail, *args, **kwargs)
    except officers.OfficerError as exc:
        raise Refused(str(exc)) from None


@officer_group.command("add")
@click.argument("officer_id")
@click.option("--name", required=True, help="The officer's full name.")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(officers.ROLES),
              help="A role (repeatable).")
@pass_ctx
def officer_add(ctx: Context, officer_id: str, name: str, roles: tuple[str, ...]) -> None:
    """Add an officer: prints a one-time password (changed at first sign-in) and the TOTP enrolment."""
    actor = ctx.signed_in(("senior_officer",), action="officer add")
    password, secret = officers.one_time_password(), officers.new_totp_secret()
    made = _officer_call(ctx, officers.create, actor, officer_id, name, roles, password, secret,
                         must_change_password=True)
    click.echo(f"added officer {made.officer_id} ({made.role_text})")
    click.echo(f"  one-time password (give it to them in person; changed at first sign-in): {password}")
    enrol(made.officer_id, secret)


@officer_group.command("disable")
@click.argument("officer_id")
@click.option("--reason", required=True, help="Why the account is disabled.")
@pass_ctx
def officer_disable(ctx: Context, officer_id: str, reason: str) -> None:
    """Disable an account: its sessions end and it signs in no more."""
    actor = ctx.signed_in(("senior_officer",), action="officer disable")
    made = _officer_call(ctx, officers.disable, actor, officer_id, reason)
    click.echo(f"disabled officer {made.officer_id}")


@officer_group.command("reset")
@click.argument("officer_id")
@pass_ctx
def officer_reset(ctx: Context, officer_id: str) -> None:
    """New one-time password and TOTP secret for an officer (also enables a disabled or locked account)."""
    actor = ctx.signed_in(("senior_officer",), action="officer reset")
    password, secret = officers.one_time_password(), officers.new_totp_secret()
    made = _officer_call(ctx, officers.reset, actor, officer_id, password, secret)
    click.echo(f"reset officer {made.officer_id}")
    click.echo(f"  one-time password (changed at first sign-in): {password}")
    enrol(made.officer_id, secret)


@officer_group.command("password")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@pass_ctx
def officer_password(ctx: Context, password_stdin: bool) -> None:
    """Change your own password."""
    actor = ctx.session_officer()
    new = (sys.stdin.readline().rstrip("\n") if password_stdin
           else click.prompt("new password", hide_input=True, confirmation_prompt=True))
    change_password(ctx, actor, new)


@officer_group.command("list")
@JSON_FLAG
@pass_ctx
def officer_list(ctx: Context, as_json: bool) -> None:
    """Every officer account, its roles and state."""
    ctx.signed_in(tuple(officers.ROLES), action="officer list")
    with ctx.reader.connect() as conn:
        found = officers.list_all(conn)
    if as_json:
        echo_json([{"id": o.officer_id, "name": o.name, "roles": sorted(o.roles), "disabled": o.disabled,
                     "locked_until": o.locked_until, "must_change_password": o.must_change_password}
                    for o in found])
        return
    for o in found:
        state = "disabled" if o.disabled else ("locked" if o.locked_until and o.locked_until > officers._now()
                                               else "active")
        click.echo(f"{o.officer_id}  {o.name}  roles={o.role_text}  {state}")


def enrol(officer_id: str, secret: str) -> None:
    """Show a new TOTP secret for an authenticator app: as a QR code, and typed out."""
    uri = officers.provisioning_uri(officers.canonical_id(officer_id), secret)
    click.echo("  scan this with an authenticator app (or type the secret in):")
    click.echo(officers.terminal_qr(uri))
    click.echo(f"  secret: {secret}")
