"""`contactgate signing-key`: rotate the key the gateway signs its answers with (status, rotate, promote,
discard, retire, bundle), each step audited with its senior officer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from cryptography import x509

from gateway import files, officers
from gateway.cli.base import CannotRun, Context, fail, group, pass_ctx
from gateway.cli.changes import key_entry, key_officer
from gateway.home import load_ca
from gateway.security import hsm
from gateway.trust import pki, signing_keys


@group("signing-key")
def signing_key() -> None:
    """Rotate the key the gateway signs its answers with, with a grace period (a senior officer).

    rotate (stage a new key; clients pin the bundle of both) -> promote (sign with the new key,
    after the grace period; reload the gateway) -> retire (drop the old certificate)."""


def _signing_step(ctx: Context, actor: officers.Officer, detail: str, step, *args, **kwargs):
    """Run one rotation step inside the transaction that audits it with its officer (a step that
    fails writes no entry); a step that cannot be taken now exits 2."""
    trail = ctx.trail
    try:
        with ctx.engine.begin() as conn:
            result = step(ctx.settings.layout, *args, **kwargs)
            certificate = result if isinstance(result, x509.Certificate) else result.current
            trail.append(conn, key_entry(actor, "signing_key", f"{detail}: {pki.fingerprint(certificate)}"))
    except signing_keys.SigningKeyError as exc:
        fail(str(exc))
    except hsm.HsmError as exc:  # the signing key is kept in a PKCS#11 token that cannot be used now
        raise CannotRun(str(exc)) from None
    return result


def _show_signing(label: str, certificate) -> None:
    click.echo(f"{label:9} {pki.fingerprint(certificate)}  {certificate.signature_hash_algorithm.name}  "
               f"from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M}  until "
               f"{certificate.not_valid_after_utc:%Y-%m-%d}")


@signing_key.command("status")
@pass_ctx
def signing_key_status(ctx: Context) -> None:
    """Show the current, staged and previous signing certificates (all three are published)."""
    key_officer(ctx, "signing-key status")
    try:
        keys = signing_keys.load(ctx.settings.layout)
    except signing_keys.SigningKeyError as exc:
        fail(str(exc))
    _show_signing("current", keys.current)
    if keys.next is not None:
        _show_signing("staged", keys.next)
    if keys.previous is not None:
        _show_signing("previous", keys.previous)


@signing_key.command("rotate")
@click.option("--ec", is_flag=True, help="Make the new key ECDSA P-256 (default RSA-2048).")
@pass_ctx
def signing_key_rotate(ctx: Context, ec: bool) -> None:
    """Stage a new signing key. The gateway keeps signing with the current one; send the bundle
    (`signing-key bundle`) to every organisation so that their systems pin both."""
    actor = key_officer(ctx, "signing-key rotate")
    ca_key, ca_cert = load_ca(ctx.settings)
    cert = _signing_step(ctx, actor, "new signing key staged", signing_keys.stage_next, ca_key, ca_cert, ec=ec)
    _show_signing("staged", cert)
    click.echo("next: send `contactgate signing-key bundle` to every organisation; after the grace period, "
               "`contactgate signing-key promote` and reload the gateway")


@signing_key.command("promote")
@click.option("--grace-days", default=14, show_default=True, type=click.IntRange(min=0),
              help="Refuse unless the staged key was published at least this many days ago.")
@pass_ctx
def signing_key_promote(ctx: Context, grace_days: int) -> None:
    """Sign with the staged key from the gateway's next start or reload (`systemctl reload`, or
    SIGHUP to the server process); the old certificate stays published until `retire`."""
    actor = key_officer(ctx, "signing-key promote")
    keys = _signing_step(ctx, actor, "staged signing key promoted", signing_keys.promote,
                         min_grace=dt.timedelta(days=grace_days))
    _show_signing("current", keys.current)
    _show_signing("previous", keys.previous)
    click.echo("next: reload the gateway so that it signs with the new key")


@signing_key.command("discard")
@pass_ctx
def signing_key_discard(ctx: Context) -> None:
    """Delete a staged key that has not been promoted."""
    actor = key_officer(ctx, "signing-key discard")
    _show_signing("discarded", _signing_step(ctx, actor, "staged signing key discarded", signing_keys.discard_next))


@signing_key.command("retire")
@pass_ctx
def signing_key_retire(ctx: Context) -> None:
    """Stop publishing the certificate of the key before the current one."""
    actor = key_officer(ctx, "signing-key retire")
    _show_signing("retired", _signing_step(ctx, actor, "previous signing certificate retired",
                                           signing_keys.retire_previous))


@signing_key.command("bundle")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the bundle here (default: standard output).")
@pass_ctx
def signing_key_bundle(ctx: Context, out: Path | None) -> None:
    """The certificates clients should pin now (current, staged, previous), as PEM."""
    key_officer(ctx, "signing-key bundle")
    try:
        bundle = signing_keys.bundle_pem(ctx.settings.layout)
    except signing_keys.SigningKeyError as exc:
        fail(str(exc))
    if out is None:
        click.echo(bundle.decode(), nl=False)
    else:
        write = pki.write_private if files.is_under(out, ctx.settings.layout.root) else pki.write_public
        write(out, bundle)
        click.echo(f"wrote {out}")
