"""`contactgate hsm`: the keys a PKCS#11 token holds instead of the home (gateway.security.hsm): the
key-encryption key the data keyring is sealed under, and the gateway's signing key. Each change is
audited with its senior officer."""

from __future__ import annotations

import json
import os

import click

from gateway.cli.base import CannotRun, Context, fail, group, pass_ctx
from gateway.cli.changes import key_entry, key_officer
from gateway.security import hsm, vault
from gateway.trust import pki


@group("hsm")
def hsm_group() -> None:
    """Keys in a hardware security module (PKCS#11; a senior officer).

    The token is named by CONTACTGATE_PKCS11_MODULE, _TOKEN and _PIN_FILE (or _PIN); the keys by
    CONTACTGATE_PKCS11_KEK and _SIGNING_KEY. create-kek -> wrap-keyring (the data keyring sealed
    under the token's key) -> import-signing-key (the signing key into the token, its file deleted)."""


def _token(ctx: Context, needs: str) -> hsm.TokenConfig:
    try:
        cfg = hsm.config()
    except hsm.HsmError as exc:
        fail(str(exc))
    if cfg is None:
        fail(f"no token is configured: set {hsm.ENV_MODULE}, {hsm.ENV_TOKEN} and {hsm.ENV_PIN_FILE} "
             f"(docs/operations.md, \"Keys in a hardware security module\")")
    if needs and not getattr(cfg, needs):
        fail(f"set {hsm.ENV_KEK if needs == 'kek_label' else hsm.ENV_SIGNING_KEY} to the label of the key in the token")
    return cfg


def _audited(ctx: Context, actor, detail: str) -> None:
    with ctx.engine.begin() as conn:
        ctx.trail.append(conn, key_entry(actor, "hsm", detail))


@hsm_group.command("status")
@pass_ctx
def hsm_status(ctx: Context) -> None:
    """The token, whether it answers, and which of the gateway's keys it holds."""
    key_officer(ctx, "hsm status")
    cfg = _token(ctx, "")
    problem = hsm.probe(cfg)
    click.echo(f"token      {cfg.token!r} in {cfg.module}: {problem or 'answers, PIN accepted'}")
    if problem:
        raise CannotRun(problem)
    if cfg.kek_label:
        text = ctx.settings.layout.data_keys.read_text() if ctx.settings.layout.data_keys.exists() else ""
        try:
            sealed = hsm.is_wrapped(json.loads(text))
        except ValueError:
            sealed = False
        click.echo(f"kek        {cfg.kek_label!r}: data keyring {'sealed under it' if sealed else 'NOT sealed under it'}")
    if cfg.signing_label:
        try:
            from gateway.trust.signing_keys import token_key

            token_key(ctx.settings.layout)
            where = "in the token"
        except hsm.HsmError as exc:
            where = f"NOT in the token ({exc})"
        click.echo(f"signing    {cfg.signing_label!r}: the key of signing/cert.pem {where}")


@hsm_group.command("create-kek")
@pass_ctx
def hsm_create_kek(ctx: Context) -> None:
    """Make the key-encryption key in the token (AES-256, never extractable), under CONTACTGATE_PKCS11_KEK."""
    actor = key_officer(ctx, "hsm create-kek")
    cfg = _token(ctx, "kek_label")
    try:
        hsm.create_kek(cfg)
    except hsm.HsmError as exc:
        fail(str(exc))
    _audited(ctx, actor, f"key-encryption key {cfg.kek_label!r} made in token {cfg.token!r}")
    click.echo(f"key-encryption key {cfg.kek_label!r} made in token {cfg.token!r}; next: `contactgate hsm wrap-keyring`")


@hsm_group.command("wrap-keyring")
@pass_ctx
def hsm_wrap_keyring(ctx: Context) -> None:
    """Seal the home's data keyring (keys/data-keys.json) under the token's key-encryption key: from
    now on the file opens only in the token. The keys are the same: nothing is re-sealed."""
    actor = key_officer(ctx, "hsm wrap-keyring")
    cfg = _token(ctx, "kek_label")
    if os.environ.get(vault.ENV_VAR):
        fail(f"the data keys come from {vault.ENV_VAR}: seal them where that secret is kept")
    path = ctx.settings.layout.data_keys
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
    except (OSError, ValueError) as exc:
        raise CannotRun(f"cannot read the data keyring {path}: {exc}") from None
    if hsm.is_wrapped(doc):
        click.echo(f"the data keyring is already sealed under {doc.get('kek')!r}")
        return
    try:
        ring = vault.Keyring.from_json(text)
        vault.write_keyring(path, ring)  # sealed under the KEK (vault.keyring_to_text)
        vault.read_keyring(path)  # and it opens again, in the token
    except vault.KeyringError as exc:
        fail(str(exc))
    _audited(ctx, actor, f"data keyring sealed under key-encryption key {cfg.kek_label!r} of token {cfg.token!r}")
    click.echo(f"data keyring {path} sealed under {cfg.kek_label!r} in token {cfg.token!r} "
               f"({len(ring.data_keys)} data key(s)); copies of the file in clear (backups of the home, the "
               f"disk's old blocks) still open the data: follow with `contactgate keys rotate` and `keys retire` "
               f"(docs/operations.md, section 8c)")


@hsm_group.command("import-signing-key")
@pass_ctx
def hsm_import_signing_key(ctx: Context) -> None:
    """Move the gateway's signing key (signing/key.pem, and a staged signing/next-key.pem) into the
    token, not extractable, and delete the files. The certificate, and what clients pin, stay."""
    actor = key_officer(ctx, "hsm import-signing-key")
    cfg = _token(ctx, "signing_label")
    layout = ctx.settings.layout
    moved = []
    for key_path, cert_path in ((layout.signing_key, layout.signing_cert),
                                (layout.signing_next_key, layout.signing_next_cert)):
        if not key_path.exists():
            continue
        key = pki.load_key_pem(key_path.read_bytes())
        certificate = pki.load_cert_pem(cert_path.read_bytes())
        if hsm.key_id(key.public_key()) != hsm.key_id(certificate.public_key()):
            fail(f"{key_path} is not the key of {cert_path}: nothing was moved")
        try:
            hsm.import_signing_key(cfg, key)
            hsm.TokenKey(cfg, certificate).sign(b"check")  # it signs there before the file goes
        except hsm.HsmError as exc:
            fail(str(exc))
        key_path.unlink()
        moved.append(key_path.name)
    if not moved:
        fail(f"no signing key file in {layout.signing_key.parent} to move (already in the token?)")
    from gateway.trust.signing_keys import record_token

    record_token(layout, cfg)  # init, rotate, serve and restore now refuse to run without the token
    _audited(ctx, actor, f"signing key(s) {', '.join(moved)} moved into token {cfg.token!r} as {cfg.signing_label!r}")
    click.echo(f"moved {', '.join(moved)} into token {cfg.token!r} as {cfg.signing_label!r} (the files are deleted); "
               f"restart the gateway with {hsm.ENV_SIGNING_KEY}={cfg.signing_label}.\n"
               f"The key existed outside the token: copies remain in earlier backups, other nodes' homes and "
               f"the disk's old blocks. Replace it with a key made in the token: `contactgate signing-key rotate`, "
               f"`promote`, `retire` (docs/operations.md, section 8c)")
