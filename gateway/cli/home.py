"""Making and repairing the home: `init` (CA, server certificate, signing key, database schema, the
first officers) and `migrate` (the database schema to the newest revision)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from gateway import officers
from gateway.cli.base import CheckFailed, Context, Refused, command, fail, pass_ctx
from gateway.cli.changes import publish_crl
from gateway.cli.officers import enrol
from gateway.home import init_home


@command("init", needs_home=False, short_help="Create the home and database schema (or repair them).")
@click.option("--server-name", "server_names", multiple=True,
              help="Extra DNS name or IP for the server certificate (repeatable); replaces the "
                   "server certificate.")
@click.option("--officers", "officers_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSON list of the first officers ({id, name, roles, password, totp_secret}; "
                                 "password_hash, argon2id, instead of password) for automated set-up; without "
                                 "it, init asks for the first senior officer.")
@click.option("--signing-key", "signing_key", type=click.Choice(["rsa", "ec"]), default="rsa", show_default=True,
              help="The key the gateway signs its answers with, when init makes it: RSA-2048, or ECDSA P-256 "
                   "(about 20 times cheaper to sign with; every caller's stack must verify ECDSA-SHA256). "
                   "Change an existing key with `signing-key rotate [--ec]`.")
@pass_ctx
def init(ctx: Context, server_names: tuple[str, ...], officers_file: Path | None, signing_key: str) -> None:
    """Create the home: CA, server TLS certificate, signing key, database schema, first officers.

    Safe to run twice: what exists is kept, the schema is migrated to the newest revision, and
    files readable by others are tightened (home and directories 0700, files 0600). The first
    senior officer is asked for (or read from --officers) only while there is no officer at all."""
    ctx.settings  # a bad setting stops here, before anything is made
    ctx.check_database_reachable()
    ctx.check_redis_reachable()
    wanted = _read_officers_file(officers_file) if officers_file else None
    report = init_home(ctx.settings, list(server_names), signing_key=signing_key)
    for verb, item in report.lines:
        click.echo(f"{verb:<8} {item}")
    publish_crl(ctx)
    _first_officers(ctx, wanted)


def _read_officers_file(path: Path) -> list[dict]:
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("not a JSON list of objects")
        for e in entries:
            missing = {"id", "name", "roles", "totp_secret"} - set(e)
            if "password" not in e and "password_hash" not in e:
                missing.add("password (or password_hash, argon2id)")
            if missing:
                raise ValueError(f"an entry lacks {', '.join(sorted(missing))}")
    except ValueError as exc:
        fail(f"--officers {path}: {exc}")
    if not any("senior_officer" in (e.get("roles") or ()) for e in entries):
        fail(f"--officers {path}: at least one officer must hold senior_officer")
    return entries


def _first_officers(ctx: Context, wanted: list[dict] | None) -> None:
    with ctx.engine.begin() as conn:
        existing = officers.count(conn)
    if existing:
        if wanted:
            click.echo(f"kept     {existing} officer account(s); --officers ignored (officers are added "
                       f"with `contactgate officer add`)")
        return
    if wanted is None:
        if not sys.stdin.isatty():
            click.echo("note     no officer yet: run `contactgate init` on a terminal, or with --officers FILE")
            return
        wanted = [_ask_first_officer()]
    try:
        with ctx.engine.begin() as conn:
            for entry in wanted:
                made = officers.create(conn, ctx.trail, None, entry["id"], entry["name"], entry["roles"],
                                       entry.get("password"), entry["totp_secret"],
                                       must_change_password=bool(entry.get("must_change_password", False)),
                                       password_hash=entry.get("password_hash"))
                click.echo(f"created  officer {made.officer_id} ({made.role_text})")
    except officers.OfficerError as exc:
        raise Refused(f"first officers: {exc}") from None


def _ask_first_officer() -> dict:
    click.echo("The first senior officer (they add the others with `contactgate officer add`):")
    officer_id = click.prompt("  officer id")
    name = click.prompt("  full name")
    password = click.prompt(f"  password (at least {officers.MIN_PASSWORD} characters)", hide_input=True,
                            confirmation_prompt=True)
    secret = officers.new_totp_secret()
    enrol(officer_id, secret)
    while not officers.code_matches(secret, click.prompt("  code from the authenticator app")):
        click.echo("  that code does not match: check the app's clock and try again")
    return {"id": officer_id, "name": name, "roles": ["senior_officer", "officer"], "password": password,
            "totp_secret": secret}


@command("migrate", needs_home=False, short_help="Upgrade the database schema to the newest revision.")
@click.option("--check", is_flag=True,
              help="Change nothing: exit 0 if the schema is at the newest revision, 1 if not.")
@pass_ctx
def migrate(ctx: Context, check: bool) -> None:
    """Upgrade the database schema to the newest revision (run after upgrading contactgate)."""
    from gateway.migrations import upgrade

    current, head = ctx.schema_revision()
    if check:
        if current != head:
            raise CheckFailed(f"database schema at {current}, head is {head}: run `contactgate migrate`")
        click.echo(f"database schema at head ({head})")
        return
    if current == head:
        click.echo(f"database schema: already at head ({head})")
        return
    before, after = upgrade(ctx.settings.database_url, keys=ctx.settings.layout.data_keys)
    click.echo(f"database schema: migrated from {before} to {after}")
