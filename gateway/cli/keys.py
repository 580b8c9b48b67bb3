"""`contactgate keys`: the data keys that seal identifying values at rest (status, rotate with
re-sealing while the gateway serves, retire a key no value uses)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from gateway.cli.base import Context, fail, group, pass_ctx
from gateway.cli.changes import key_entry, key_officer
from gateway.security import vault


@group("keys")
def keys_group() -> None:
    """The data keys that seal identifying values at rest (keys/data-keys.json in the home; a senior officer).

    rotate (a new key; every value re-sealed under it in batches while the gateway serves) ->
    status (how many values each key seals) -> retire KEY (a key no value uses, out of the keyring
    into the archive keyring) -> destroy KEY (once no recorded backup inside its retention needs it)."""


def _keyring_file(ctx: Context) -> Path:
    if os.environ.get(vault.ENV_VAR):
        fail(f"the data keys come from {vault.ENV_VAR}: rotate them where that secret is kept "
              f"(docs/operations.md, \"Data keys\")")
    path = ctx.settings.layout.data_keys
    try:
        vault.read_keyring(path)
    except vault.KeyringError as exc:
        fail(str(exc))
    return path


def _key_usage(ctx: Context) -> dict[str, int]:
    from gateway.index import at_rest

    with ctx.reader.connect() as conn:
        return at_rest.key_usage(conn)


@keys_group.command("status")
@pass_ctx
def keys_status(ctx: Context) -> None:
    """Each data key, whether it is active, and how many stored values it seals."""
    key_officer(ctx, "keys status")
    path = ctx.settings.layout.data_keys
    try:
        env = os.environ.get(vault.ENV_VAR)
        ring = vault.keyring_from_env(env) if env else vault.read_keyring(path)  # as it is now, not as cached
    except vault.KeyringError as exc:
        fail(str(exc))
    usage = _key_usage(ctx)
    for kid in sorted(ring.data_keys):
        click.echo(f"{kid}  {'active ' if kid == ring.active else 'old    '}  {usage.get(kid, 0)} value(s)")
    archived = {} if env else _archived(ctx, ring)
    for kid in sorted(archived):
        click.echo(f"{kid}  archived  {usage.get(kid, 0)} value(s)  (retired; `keys destroy {kid}` once no backup needs it)")
    unknown = sorted(set(usage) - set(ring.data_keys) - set(archived))
    if unknown:
        click.echo(f"values sealed under keys this keyring does not hold: {', '.join(unknown)}")


@keys_group.command("rotate")
@click.option("--resume", is_flag=True, help="Do not add a key: finish re-sealing under the active one.")
@pass_ctx
def keys_rotate(ctx: Context, resume: bool) -> None:
    """Add a new data key and make it active; then re-seal every stored value under it, a batch per
    transaction, while the gateway serves (its workers take up the new key within seconds). Old
    keys stay in the keyring until `keys retire`: nothing sealed under them is lost."""
    from gateway.index import at_rest

    actor = key_officer(ctx, "keys rotate")
    path = _keyring_file(ctx)
    ring = vault.read_keyring(path)
    trail = ctx.trail
    if not resume:
        ring = ring.with_new_active_key()
        vault.write_keyring(path, ring)
        with ctx.engine.begin() as conn:
            trail.append(conn, key_entry(actor, "keys", f"data key {ring.active} added, active"))
        click.echo(f"new data key {ring.active} is active")
        time.sleep(vault.RELOAD_CHECK_S + 0.5)  # serving workers take it up before values move to it
    v = vault.Vault(ring)
    total = 0
    for _ in range(3):  # a value a worker sealed under the old key meanwhile is taken on the next pass
        moved = at_rest.rekey(ctx.engine, v)
        total += moved
        if moved == 0:
            break
    with ctx.engine.begin() as conn:
        trail.append(conn, key_entry(actor, "keys", f"{total} value(s) re-sealed under data key {ring.active}"))
    click.echo(f"{total} value(s) re-sealed under {ring.active}")
    left = {kid: n for kid, n in _key_usage(ctx).items() if kid != ring.active}
    if left:
        click.echo("still sealed under older keys (run `keys rotate --resume`): "
                   + ", ".join(f"{k}: {n}" for k, n in sorted(left.items())))
    else:
        click.echo("no value uses an older key: `keys retire KEY` removes one")


def _models_sealed_under(ctx: Context, key_id: str) -> list[str]:
    """The linkage model files in the home whose sealed name table a key opens."""
    from gateway.index.linkage import versions

    found = []
    for version, path in versions.list_files(ctx.settings.layout.root):
        try:
            table = versions.parse(versions.read_bytes(path)).get("term_frequencies") or {}
        except versions.ModelError:
            continue
        if isinstance(table, dict) and vault.key_id_of(table.get("sealed")) == key_id:
            found.append(version)
    return found


@keys_group.command("retire")
@click.argument("key_id")
@pass_ctx
def keys_retire(ctx: Context, key_id: str) -> None:
    """Take an old data key out of the keyring, into the archive keyring (keys/archived-keys.json,
    wrapped under the active key); refused while any stored value is sealed under it. Serving
    processes no longer hold it; a restore of a backup that needs it still finds it, and
    `keys destroy` removes it once no recorded backup inside its retention needs it."""
    actor = key_officer(ctx, "keys retire")
    path = _keyring_file(ctx)
    ring = vault.read_keyring(path)
    if key_id not in ring.data_keys:
        fail(f"no data key {key_id} in the keyring")
    if key_id == ring.active:
        fail(f"{key_id} is the active key: rotate first")
    used = _key_usage(ctx).get(key_id, 0)
    if used:
        fail(f"{used} stored value(s) are still sealed under {key_id}: run `keys rotate --resume` first")
    models = _models_sealed_under(ctx, key_id)
    if models:
        fail(f"the name table of linkage model(s) {', '.join(models)} is sealed under {key_id} (re-sealing would "
             f"change an approved file): train a new model and put it in use, or remove those files, first")
    archive = _archived(ctx, ring)
    kept = ring.without(key_id)
    # The archive first (every key in it wrapped anew under the active key): a crash between the two
    # writes leaves the key in both files, never in neither.
    vault.write_archived(ctx.settings.layout.archived_keys, kept, {**archive, key_id: ring.data_keys[key_id]})
    vault.write_keyring(path, kept)
    with ctx.engine.begin() as conn:
        ctx.trail.append(conn, key_entry(actor, "keys", f"data key {key_id} retired to the archive keyring"))
    click.echo(f"data key {key_id} retired (kept wrapped in the archive keyring until `keys destroy {key_id}`)")


def _archived(ctx: Context, ring: vault.Keyring) -> dict[str, bytes]:
    try:
        return vault.read_archived(ctx.settings.layout.archived_keys, ring)
    except vault.KeyringError as exc:
        fail(str(exc))


@keys_group.command("destroy")
@click.argument("key_id")
@pass_ctx
def keys_destroy(ctx: Context, key_id: str) -> None:
    """Destroy a retired data key for good: refused while a recorded backup (`contactgate backup`)
    that needs it is inside its retention."""
    import datetime as dt

    from gateway.backup import BackupError, backups_needing

    actor = key_officer(ctx, "keys destroy")
    path = _keyring_file(ctx)
    ring = vault.read_keyring(path)
    if key_id in ring.data_keys:
        fail(f"{key_id} is still in the keyring: `keys retire {key_id}` first")
    archive = _archived(ctx, ring)
    if key_id not in archive:
        fail(f"no data key {key_id} in the archive keyring")
    today = dt.date.today()
    try:
        with ctx.reader.connect() as conn:
            needing = backups_needing(ctx.settings, conn, key_id, today)
    except BackupError as exc:
        fail(str(exc))
    if needing:
        last = max(needing, key=lambda b: b["until"])
        why = (f"{len(needing)} recorded backup(s) inside their retention need {key_id} (the last, "
               f"{last['id']}, until {last['until']}): it can be destroyed after {last['until']}")
        from gateway.cli.changes import refuse_officer

        refuse_officer(ctx, actor, "keys destroy", ValueError(why))
    vault.write_archived(ctx.settings.layout.archived_keys, ring, {k: v for k, v in archive.items() if k != key_id})
    with ctx.engine.begin() as conn:
        ctx.trail.append(conn, key_entry(actor, "keys", f"data key {key_id} destroyed"))
    click.echo(f"data key {key_id} destroyed")
