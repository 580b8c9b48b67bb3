"""`contactgate backup` and `contactgate restore`: one encrypted archive of the database, the data keys
it needs and the home's trust and signing material (gateway.backup); a restore, and its
acknowledgement by two officers before the gateway serves again (docs/operations.md "Backup and
restore", docs/officers.md "Acknowledging a restore")."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.backup import archive as archive_mod
from gateway.cli.base import CannotRun, CheckFailed, CommandGroup, Context, Refused, command, fail, pass_ctx
from gateway.cli.changes import key_officer, registry_call


def _backup_key(key_file: Path | None, passphrase_stdin: bool) -> archive_mod.BackupKey:
    if (key_file is None) == (not passphrase_stdin):
        fail("give the backup key: --key-file FILE or --passphrase-stdin (one of them)")
    try:
        if key_file is not None:
            return archive_mod.BackupKey.from_file(key_file)
        return archive_mod.BackupKey.from_passphrase(sys.stdin.readline())
    except archive_mod.BackupKeyError as exc:
        fail(str(exc))


def _key_options(fn):
    fn = click.option("--passphrase-stdin", is_flag=True,
                      help="Read the backup passphrase (at least 12 characters) from the first line of stdin.")(fn)
    return click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="The backup key: a file of 32 to 4096 bytes, readable by its owner only, "
                             "kept apart from the backups (`head -c 32 /dev/urandom > FILE`).")(fn)


def _as_cli_error(exc: Exception) -> click.ClickException:
    from gateway.backup import BackupError

    kind = getattr(exc, "kind", "")
    if isinstance(exc, BackupError) and kind == "cannot-run":
        return CannotRun(str(exc))
    if isinstance(exc, BackupError) and kind == "check":
        return CheckFailed(str(exc))
    return Refused(f"{exc}" + ("" if "nothing was" in str(exc) else ": nothing was changed"))


@command("backup")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The archive to write (readable by its owner only).")
@_key_options
@click.option("--retention-days", type=click.IntRange(1, 36500), default=90, show_default=True,
              help="How long the backup is kept: its data keys are not destroyed before.")
@click.option("--force", is_flag=True, help="Write over an existing file.")
@pass_ctx
def backup(ctx: Context, out: Path, key_file: Path | None, passphrase_stdin: bool, retention_days: int,
           force: bool) -> None:
    """Back the gateway up into one encrypted archive (the operator, as the gateway's user: no officer
    session, so that it can be scheduled): the database (SQLite's
    online backup, or pg_dump), the data keys it needs, the CA, TLS, trust and signing material,
    the audit chain key and the audit checkpoint it was made at. The archive is encrypted and
    authenticated under the backup key (--key-file or --passphrase-stdin), which is never in it.
    The backup is recorded in the audit chain. Exit 0 done, 1 the audit chain is broken (nothing
    backed up), 2 refused, 3 could not run."""
    from gateway import backup as backup_mod

    key = _backup_key(key_file, passphrase_stdin)
    if (out.exists() or out.is_symlink()) and not force:
        fail(f"{out} already exists: nothing was backed up (--force to write over it)")
    if not out.parent.is_dir():
        fail(f"no directory {out.parent}: nothing was backed up")
    try:
        made = backup_mod.make(ctx.settings, ctx.engine, ctx.trail, key, out, retention_days)
    except (backup_mod.BackupError, archive_mod.ArchiveError) as exc:
        raise _as_cli_error(exc) from None
    click.echo(f"backup {made.backup_id} written to {out} ({made.size} bytes): audit entry {made.seq}; "
               f"needs data keys {', '.join(made.needs)}; kept until {made.until.isoformat()}")


class RestoreGroup(CommandGroup):
    """`restore ARCHIVE` restores an archive; `restore acknowledge` and `restore status` are its
    subcommands. ARCHIVE is a path with a dot or a slash in it (./NAME for a bare name), so that a
    mistyped subcommand is refused as one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-") and (
                "." in args[0] or "/" in args[0]):
            args = ["archive", *args]
        return super().parse_args(ctx, args)


@click.group("restore", cls=RestoreGroup)
def restore() -> None:
    """Restore a backup, then have two officers acknowledge it.

    \b
    contactgate restore ARCHIVE --key-file FILE      (the gateway stopped; no officer needed)
    contactgate restore status
    contactgate restore acknowledge                  (a senior officer proposes)
    contactgate restore acknowledge --proposal ID    (a second senior officer approves)

    Until the restore is acknowledged the gateway answers every exchange Unavailable."""


@restore.command("archive", hidden=True, needs_home=False)
@click.argument("archive_file", metavar="ARCHIVE", type=click.Path(dir_okay=False, path_type=Path))
@_key_options
@pass_ctx
def restore_archive(ctx: Context, archive_file: Path, key_file: Path | None, passphrase_stdin: bool) -> None:
    """Check ARCHIVE whole (its authenticity with the backup key, then its structure), then put the
    database and the home's files in place (the audit checkpoints are left as they are) and continue
    the audit chain with a `restore` entry naming the entries lost since the backup. Exit 0 done,
    2 refused (an altered, foreign or unreadable archive, the wrong key: nothing changed), 3 could
    not run."""
    from gateway import backup as backup_mod
    from gateway.cli.base import local_origin

    key = _backup_key(key_file, passphrase_stdin)
    if not archive_file.is_file():
        raise CannotRun(f"no archive at {archive_file}")
    try:
        done = backup_mod.restore(ctx.settings, archive_file, key, origin=local_origin())
    except (backup_mod.BackupError, archive_mod.ArchiveError) as exc:
        error = _as_cli_error(exc)
        _record_refusal(ctx, archive_file, error.format_message())
        raise error from None
    click.echo(f"restored backup {done.backup_id} (made {done.created}, audit entry {done.backup_seq}); "
               f"the chain continues at entry {done.restore_seq}")
    if done.lost:
        click.echo(f"audit entries {done.lost[0]}..{done.lost[1]} (made after the backup) are lost: "
                   f"`contactgate audit verify` names them on every run")
    click.echo("the gateway refuses every exchange until two senior officers acknowledge the restore: "
               "`contactgate restore acknowledge`, then a second officer approves the proposal")


def _record_refusal(ctx: Context, archive_file: Path, why: str) -> None:
    """A refused restore, in the audit chain of the database as it is (when there is one to write to):
    the refusal changed nothing else."""
    from gateway import audit

    try:
        ctx.require_home()
        ctx.require_schema_at_head()
        with ctx.engine.begin() as conn:
            ctx.trail.append(conn, audit.Entry(operation="restore.refused", outcome="refused", role="operator",
                                               detail=f"restore of {str(archive_file)[:200]} refused: {why}"))
    except Exception:  # noqa: BLE001 - no database yet (a new machine): the refusal is said, not recorded
        pass


@restore.command("status")
@pass_ctx
def restore_status(ctx: Context) -> None:
    """Whether the gateway awaits the acknowledgement of a restore (exit 1 if it does)."""
    from gateway import backup as backup_mod

    with ctx.reader.connect() as conn:
        why = backup_mod.gate_reason(ctx.settings.layout, conn)
    if why is None:
        click.echo("no restore awaits acknowledgement: the gateway serves")
        return
    click.echo(f"the gateway refuses to serve: {why}")
    sys.exit(1)


@restore.command("acknowledge")
@click.option("--proposal", "proposal_id", type=int, default=None,
              help="Approve this acknowledgement (a second senior officer); without it, propose one.")
@pass_ctx
def restore_acknowledge(ctx: Context, proposal_id: int | None) -> None:
    """Acknowledge a restore: one senior officer proposes, a second approves (`--proposal ID`);
    then the gateway serves again. The entries lost stay named by `audit verify`."""
    from gateway import backup as backup_mod

    actor = key_officer(ctx, "restore acknowledge")
    if proposal_id is None:
        proposal = registry_call(ctx, backup_mod.acknowledge_proposal, actor)
        click.echo(f"proposal {proposal.id} ({proposal.kind}) by {proposal.proposed_by}: "
                   f"{backup_mod._summary(proposal.payload)}")
        click.echo(f"  a second senior officer approves it with: contactgate restore acknowledge "
                   f"--proposal {proposal.id}")
        return
    proposal = registry_call(ctx, backup_mod.acknowledge_approve, proposal_id, actor)
    click.echo(f"restore acknowledged by {proposal.proposed_by} and {proposal.decided_by}: the gateway serves again")
