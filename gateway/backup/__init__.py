"""Backups and restores (`contactgate backup`, `contactgate restore`; docs/operations.md "Backup and
restore").

A backup is one archive (gateway.backup.archive) holding the database (SQLite's online backup API,
or `pg_dump -Fc`), the keyring with every data key the database needs, the home's trust, TLS and
signing material and the audit chain key, and the audit checkpoint it was made at; it is recorded in
the audit chain and in ``keys/backups.json`` (so `keys destroy` keeps the keys it needs until its
retention ends).

A restore checks the whole archive (authenticity first, then its structure) before it changes
anything, puts the database and the files in place, and continues the audit chain with a
``restore`` entry that names the entries lost since the backup: the highest entry any checkpoint
kept outside the restored data has seen (the home's checkpoints file, which a restore leaves alone,
and the copies in CONTACTGATE_CHECKPOINT_COPIES) is never reused. Until two officers acknowledge the
restore (`restore acknowledge`), the gateway answers every exchange Unavailable (`gate_reason`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, select, update
from sqlalchemy.engine import Connection

from gateway import audit, files
from gateway.audit.links import timestamp
from gateway.backup.archive import (ArchiveWriter, BackupKey, decrypt_to, read_manifest,
                                    sha256_of)
from gateway.config import Settings
from gateway.db import audit_head, audit_log, proposals
from gateway.home import sqlite_database_path
from gateway.security import vault

RESTORE_KIND = "restore"          # a proposals row: the restore, awaiting acknowledgement
ACKNOWLEDGE_KIND = "restore_ack"  # an officer's acknowledgement, approved by a second
RESTORE_PROPOSALS = (RESTORE_KIND, ACKNOWLEDGE_KIND)  # decided with `contactgate restore acknowledge` only
MANIFEST_FORMAT = 1
HOME_DIRECTORIES = ("ca", "keys", "linkage", "signing", "tls", "trust")  # linkage: the model versions, the approved one among them
HOME_FILES = ("roles.json", "review.json", "precedence.json")
# What the archive may put in the home: nothing else, and never a path taken from it as it stands.
_HOME_MEMBER = re.compile(r"home/(?:(?:ca|keys|linkage|signing|tls|trust)/[A-Za-z0-9][A-Za-z0-9._-]{0,100}|roles\.json|review\.json|precedence\.json)")
_NOT_ARCHIVED = {"keys/backups.json", "keys/archived-keys.json"}  # the home's own record, kept as it is


class BackupError(Exception):
    """A backup or restore that cannot be made; nothing was changed. ``kind`` as ArchiveError's, or
    "refused" / "cannot-run"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Made:
    backup_id: str
    seq: int
    needs: tuple[str, ...]
    until: dt.date
    size: int


@dataclass(frozen=True)
class Restored:
    backup_id: str
    created: str
    backup_seq: int
    restored_head: int
    restore_seq: int
    lost: tuple[int, int] | None  # first and last entry lost since the backup, if any


def backend_of(url: str) -> str:
    return "sqlite" if sqlite_database_path(url) is not None else "postgresql"


def libpq(url: str) -> tuple[str, dict]:
    """A SQLAlchemy PostgreSQL URL as pg_dump and pg_restore take it, without its password, and the
    environment that gives them the password (never on a command line, where `ps` shows it)."""
    from sqlalchemy.engine import make_url

    from gateway.security import hsm

    parsed = make_url(url)
    env = {k: v for k, v in os.environ.items() if k != hsm.ENV_PIN}  # the token's PIN is not pg_dump's
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def ca_fingerprint(layout) -> str | None:
    from gateway.trust import pki

    if not layout.ca_cert.exists():
        return None
    return pki.fingerprint(pki.load_cert_pem(layout.ca_cert.read_bytes()))


def current_keyring(settings: Settings) -> vault.Keyring:
    env = os.environ.get(vault.ENV_VAR)
    return vault.keyring_from_env(env) if env else vault.read_keyring(settings.layout.data_keys)


# ---- the record of backups (for `keys destroy`) ---------------------------------------------------

def recorded_backups(settings: Settings, conn: Connection | None = None) -> list[dict]:
    """Every backup recorded in the home's ``keys/backups.json`` and, with ``conn``, in the audit
    chain (a restore may have rolled one record or the other back): id, until, needs."""
    found: dict[str, dict] = {}
    path = settings.layout.backups
    if path.exists():
        try:
            for item in json.loads(path.read_text())["backups"]:
                found[item["id"]] = item
        except (ValueError, KeyError, TypeError):
            raise BackupError("refused", f"{path} is malformed: restore it from a copy (it lists the "
                                         f"backups whose data keys must be kept)") from None
    if conn is not None:
        for (detail,) in conn.execute(select(audit_log.c.detail).where(audit_log.c.operation == "backup")):
            item = parse_backup_detail(detail or "")
            if item is not None:
                found.setdefault(item["id"], item)
    return sorted(found.values(), key=lambda item: item["id"])


def backup_detail(backup_id: str, needs, until: dt.date) -> str:
    return f"backup {backup_id}: needs data keys {','.join(needs)}; kept until {until.isoformat()}"


_DETAIL = re.compile(r"backup (\S+): needs data keys (\S*); kept until (\d{4}-\d\d-\d\d)")


def parse_backup_detail(detail: str) -> dict | None:
    found = _DETAIL.match(detail)
    if not found:
        return None
    return {"id": found.group(1), "needs": [k for k in found.group(2).split(",") if k],
            "until": found.group(3)}


def backups_needing(settings: Settings, conn: Connection, kid: str, today: dt.date) -> list[dict]:
    return [b for b in recorded_backups(settings, conn)
            if kid in b["needs"] and dt.date.fromisoformat(b["until"]) >= today]


# ---- checkpoints kept outside the restored data -----------------------------------------------------

def highest_checkpointed(settings: Settings) -> int:
    """The highest entry any checkpoint file (the home's, and every copy) has recorded."""
    from gateway.audit.checkpoints import checkpoint_seqs

    return max((seq for path in (settings.layout.audit_checkpoints, *settings.checkpoint_copies)
                for seq, _ in checkpoint_seqs(path)), default=0)


# ---- backup -----------------------------------------------------------------------------------------

def make(settings: Settings, engine, trail: audit.AuditTrail, key: BackupKey, out: Path, retention_days: int,
         *, pg_dump: str = "pg_dump") -> Made:
    from gateway.index import at_rest
    from gateway.migrations import current_revision

    layout = settings.layout
    backend = backend_of(settings.database_url)
    ring = current_keyring(settings)
    archived = vault.read_archived(layout.archived_keys, ring)
    with engine.connect() as conn:
        usage = at_rest.key_usage(conn)
    needs = tuple(sorted(set(usage) | {ring.active}))
    held = {**archived, **ring.data_keys}
    missing = [kid for kid in needs if kid not in held]
    if missing:
        raise BackupError("refused", f"values are sealed under data keys neither the keyring nor the archive "
                                     f"keyring holds ({', '.join(missing)}): nothing was backed up")
    # From the newest trusted checkpoint, as the daily `audit verify` does (the weekly --full re-hashes
    # the rest): a daily backup of a trail of hundreds of millions of entries must not take hours.
    # A successful run records a checkpoint of the head, in the home and outside it.
    result = trail.verify(engine, incremental=True)
    if not result.ok:
        raise BackupError("check", f"the audit chain is broken at entry {result.first_bad_seq} "
                                   f"({result.problem}): nothing was backed up; run `contactgate audit verify`")
    backup_id = "b" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    until = dt.date.today() + dt.timedelta(days=retention_days)
    with engine.begin() as conn:
        seq, link = trail.append_linked(conn, audit.Entry(
            operation="backup", outcome="done", role="operator",  # the source: this machine's account
            detail=backup_detail(backup_id, needs, until)))
    trail.record_checkpoint(seq, link)  # the entry the backup was made at, recorded outside the data
    _record_backup(layout.backups, {"id": backup_id, "seq": seq, "needs": list(needs), "until": until.isoformat()})

    ring_out = vault.Keyring({kid: held[kid] for kid in sorted(set(needs) | set(ring.data_keys))}, ring.active,
                             ring.index_key)
    scratch = Path(tempfile.mkdtemp(prefix=".backup-", dir=layout.root))
    try:
        if backend == "sqlite":
            database = scratch / "database.sqlite"
            _sqlite_copy(sqlite_database_path(settings.database_url), database)
        else:
            database = scratch / "database.pgdump"
            where, env = libpq(settings.database_url)
            _run([pg_dump, "--format=custom", "--no-owner", "--no-privileges", f"--file={database}",
                  f"--dbname={where}"], "pg_dump", env)
        revision = current_revision(engine)
        home_files = _home_files(layout)
        manifest = {
            "format": MANIFEST_FORMAT, "id": backup_id, "created": timestamp(), "backend": backend,
            "schema_revision": revision, "checkpoint": {"seq": seq, "entry_hash": link},
            "needs": list(needs), "until": until.isoformat(), "ca_fingerprint": ca_fingerprint(layout),
            "members": {},
        }
        keyring_bytes = vault.keyring_to_text(ring_out, ca=manifest["ca_fingerprint"]).encode()  # sealed under the token's KEK too, when there is one
        members = {"database." + ("sqlite" if backend == "sqlite" else "pgdump"): database}
        manifest["members"][next(iter(members))] = _digest_file(database)
        blobs = {f"home/{rel}": path.read_bytes() for rel, path in home_files.items()
                 if rel != "keys/data-keys.json"}
        blobs["home/keys/data-keys.json"] = keyring_bytes
        for name, data in blobs.items():
            manifest["members"][name] = hashlib.sha256(data).hexdigest()
        staged = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                writer = ArchiveWriter(f, key, backup_id, manifest["created"])
                writer.add("manifest.json", json.dumps(manifest, sort_keys=True).encode())
                for name, path in members.items():
                    writer.add_file(name, path)
                for name, data in sorted(blobs.items()):
                    writer.add(name, data)
                writer.close()
                f.flush()
                os.fsync(f.fileno())
            os.replace(staged, out)
            files.fsync_directory(out.parent)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Made(backup_id, seq, needs, until, out.stat().st_size)


def _record_backup(path: Path, item: dict) -> None:
    doc = json.loads(path.read_text()) if path.exists() else {"format": 1, "backups": []}
    doc["backups"] = [b for b in doc["backups"] if b["id"] != item["id"]] + [item]
    files.replace_private(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup API: a consistent copy while the gateway writes."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst, pages=4096, sleep=0.005)
    finally:
        dst.close()
        src.close()
    os.chmod(target, 0o600)


def _digest_file(path: Path) -> str:


    digest = hashlib.sha256()
    with path.open("rb") as f:
        for part in iter(lambda: f.read(1 << 20), b""):
            digest.update(part)
    return digest.hexdigest()


def _home_files(layout) -> dict[str, Path]:
    found = {}
    for directory in HOME_DIRECTORIES:
        base = layout.root / directory
        if not base.is_dir():
            continue
        for path in sorted(base.iterdir()):
            rel = f"{directory}/{path.name}"
            if path.is_file() and not path.is_symlink() and rel not in _NOT_ARCHIVED \
                    and _HOME_MEMBER.fullmatch(f"home/{rel}"):
                found[rel] = path
    for name in HOME_FILES:
        path = layout.root / name
        if path.is_file() and not path.is_symlink():
            found[name] = path
    return found


def _run(command: list[str], what: str, env: dict) -> None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3600, env=env)
    except FileNotFoundError:
        raise BackupError("cannot-run", f"{what} is not installed (PostgreSQL's client tools: "
                                        f"`apt-get install postgresql-client`)") from None
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise BackupError("cannot-run", f"{what} failed: {first[:300]}")


# ---- restore ----------------------------------------------------------------------------------------

def restore(settings: Settings, archive_path: Path, key: BackupKey, *, origin: str,
            pg_restore: str = "pg_restore") -> Restored:
    """Check the archive whole, then put it in place and bar serving until it is acknowledged."""
    from gateway.migrations import head_revision

    layout = settings.layout
    backend = backend_of(settings.database_url)
    if not layout.root.exists():
        files.private_dir(layout.root)
    scratch = Path(tempfile.mkdtemp(prefix=".restore-", dir=layout.root))
    try:
        plain_path = scratch / "archive"
        fd = os.open(plain_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w+b") as plain:
            header = decrypt_to(archive_path, key, plain)          # authenticity first ...
            manifest, where = read_manifest(plain)                   # ... then structure
            _check_manifest(manifest, header, where, plain, backend)
            if manifest["schema_revision"] != head_revision():
                raise BackupError("refused", f"the backup is at schema revision {manifest['schema_revision']}, this "
                                             f"version is at {head_revision()}: restore it with the version "
                                             f"that made it, then upgrade")
            here = ca_fingerprint(layout)
            if here is not None and here != manifest["ca_fingerprint"]:
                raise BackupError("foreign", "this archive is a backup of another gateway (its CA is not this "
                                             "home's): nothing was restored")
            archived_ring = _archived_keyring(_member(plain, where, "home/keys/data-keys.json"), manifest["ca_fingerprint"])
            kept_signing = _signing_members_kept(layout, plain, where)
            audit_key = _member(plain, where, "home/keys/audit-chain.key")
            db_name = "database.sqlite" if backend == "sqlite" else "database.pgdump"
            checkpoint = manifest["checkpoint"]

            # Everything checked: from here on the restore changes things, behind the marker.
            files.replace_private(layout.restore_marker, json.dumps(
                {"backup": manifest["id"], "started": timestamp()}).encode())
            highest = max(highest_checkpointed(settings), int(checkpoint["seq"]))
            trail = audit.AuditTrail(audit_key)
            if backend == "sqlite":  # the chain continued in a staged copy, then the copy put in place
                target = sqlite_database_path(settings.database_url)
                staged = target.with_name(target.name + ".restoring")
                _extract(plain, where[db_name], staged)
                database_url = f"sqlite:///{staged}"
            else:
                dump = scratch / db_name
                _extract(plain, where[db_name], dump)
                target_db, env = libpq(settings.database_url)
                _run([pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
                      f"--dbname={target_db}", str(dump)], "pg_restore", env)
                database_url = settings.database_url
            engine = create_engine(database_url)
            try:
                with engine.begin() as conn:
                    done = _continue_chain(conn, trail, manifest, highest, origin)
            finally:
                engine.dispose()
            _install_home(layout, plain, where, archived_ring, kept_signing)
            if backend == "sqlite":
                for suffix in ("-wal", "-shm", "-journal"):
                    target.with_name(target.name + suffix).unlink(missing_ok=True)
                os.replace(staged, target)
                files.fsync_directory(target.parent)
            layout.restore_marker.unlink(missing_ok=True)  # the database's restore row bars serving now
            return done
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_manifest(manifest: dict, header: dict, where: dict, plain, backend: str) -> None:
    try:
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("id") != header["id"]:
            raise ValueError("format or id")
        listed = manifest["members"]
        int(manifest["checkpoint"]["seq"])
        str(manifest["checkpoint"]["entry_hash"])
        [str(k) for k in manifest["needs"]]
        dt.date.fromisoformat(manifest["until"])
        if not isinstance(listed, dict):
            raise ValueError("members")
    except (ValueError, KeyError, TypeError):
        raise BackupError("malformed", "the archive's manifest is malformed: nothing was restored") from None
    if manifest.get("backend") != backend:
        raise BackupError("refused", f"this is a backup of a {manifest.get('backend')} database; the gateway uses "
                                     f"{backend}: nothing was restored")
    present = set(where) - {"manifest.json"}
    if present != set(listed):
        raise BackupError("malformed", "the archive's members do not match its manifest: nothing was restored")
    database = "database.sqlite" if backend == "sqlite" else "database.pgdump"
    for name in present:
        if name != database and not _HOME_MEMBER.fullmatch(name):
            raise BackupError("malformed", f"the archive holds a member it may not ({name[:60]!r}): nothing was restored")
        if sha256_of(plain, *where[name]) != listed[name]:
            raise BackupError("malformed", f"the archive's member {name} does not match its manifest")
    for needed in (database, "home/keys/data-keys.json", "home/keys/audit-chain.key"):
        if needed not in present:
            raise BackupError("malformed", f"the archive lacks {needed}: nothing was restored")


def _member(plain, where: dict, name: str) -> bytes:
    offset, size = where[name]
    plain.seek(offset)
    return plain.read(size)


def _extract(plain, place: tuple[int, int], target: Path) -> None:
    offset, size = place
    plain.seek(offset)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        left = size
        while left:
            part = plain.read(min(1 << 20, left))
            out.write(part)
            left -= len(part)
        out.flush()
        os.fsync(out.fileno())


def _continue_chain(conn: Connection, trail: audit.AuditTrail, manifest: dict, highest: int,
                    origin: str) -> Restored:
    """The restore entry, after the highest entry ever checkpointed (no sequence number is used
    twice), naming the entries lost; and the restore awaiting two officers' acknowledgement."""
    head = conn.execute(select(audit_head.c.seq)).scalar_one()
    seq = max(head, highest) + 1
    lost = (head + 1, seq - 1) if seq - 1 > head else None
    what = (f"entries {lost[0]}..{lost[1]} lost (made after the backup)" if lost
            else "no checkpointed entry lost")
    detail = (f"restore of backup {manifest['id']} (made {manifest['created']} at entry "
              f"{manifest['checkpoint']['seq']}): chain restored to entry {head}; {what}")
    trail.append_at(conn, audit.Entry(operation="restore", outcome="done", role="operator", source_address=origin,
                                      detail=detail), seq)
    payload = {"backup": manifest["id"], "restore_seq": seq, "restored_head": head,
               "lost": list(lost) if lost else None}
    conn.execute(proposals.insert().values(
        kind=RESTORE_KIND, org_code=None, payload=json.dumps(payload, sort_keys=True), status="pending",
        proposed_by=origin[:64], proposed_at=dt.datetime.now(dt.timezone.utc)))
    return Restored(manifest["id"], manifest["created"], int(manifest["checkpoint"]["seq"]), head, seq, lost)


def _archived_keyring(text: bytes, ca: str | None) -> vault.Keyring:
    """The keyring in an archive that passed the backup key's check: sealed under the token's
    key-encryption key, opened there; or in clear (a backup made before `hsm wrap-keyring`), taken as
    it is: the restore writes it sealed (vault.write_keyring)."""
    from gateway.security import hsm

    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    try:
        if hsm.is_wrapped(doc):
            return vault.keyring_from_text(text.decode("utf-8"), where="the archive's data keyring", ca=ca)
        return vault.Keyring.from_json(text.decode("utf-8"))
    except (vault.KeyringError, UnicodeDecodeError, ValueError) as exc:
        raise BackupError("refused", f"the archive's data keyring does not open: {exc}: nothing was restored") from None


def _signing_members_kept(layout, plain, where: dict) -> set[str]:
    """The archive's signing members not to put back while the signing key is in a token: every
    private key file (the key lives in the token only; a backup from before `hsm import-signing-key`
    holds it), and a certificate whose key is not in the token (a backup from before a rotation:
    `retire` destroyed its key), for which the home's current one stays."""
    from gateway.security import hsm
    from gateway.trust import pki, signing_keys

    try:
        cfg = signing_keys.token_config(layout)  # the home's record of its key in a token, checked
        if cfg is None:
            return set()
        skipped = set()
        for name in where:
            if not name.startswith("home/signing/"):
                continue
            if name.endswith("key.pem"):
                skipped.add(name)
            elif name.endswith("cert.pem"):
                certificate = pki.load_cert_pem(_member(plain, where, name))
                if hsm._find_private(cfg, hsm.key_id(certificate.public_key())) is None:
                    skipped.add(name)
        return skipped
    except hsm.HsmError as exc:
        raise BackupError("cannot-run", f"the hardware security module: {exc}: nothing was restored") from None


def _install_home(layout, plain, where: dict, archived_ring: vault.Keyring, skipped: set[str] = frozenset()) -> None:
    """The archive's home files in place (but ``skipped``). The keyring is merged: the keys of the
    backup, any key the home holds now (none is dropped), the active key of the home's keyring if it
    has one."""
    for name in sorted(where):
        if not name.startswith("home/") or name == "home/keys/data-keys.json" or name in skipped:
            continue
        rel = name[len("home/"):]
        path = layout.root / rel
        if not path.parent.exists():
            files.private_dir(path.parent)
        files.replace_private(path, _member(plain, where, name))
    keys = dict(archived_ring.data_keys)
    active = archived_ring.active
    try:
        now = vault.read_keyring(layout.data_keys)
    except vault.KeyringError:
        now = None
    if now is not None and now.index_key == archived_ring.index_key:
        keys.update(now.data_keys)
        active = now.active
        archive = vault.read_archived(layout.archived_keys, now)
        if set(archive) & set(keys):  # a retired key the restored database uses again: live again
            kept = {k: v for k, v in archive.items() if k not in keys}
            vault.write_archived(layout.archived_keys, vault.Keyring(keys, active, now.index_key), kept)
    if not layout.data_keys.parent.exists():
        files.private_dir(layout.data_keys.parent)
    vault.write_keyring(layout.data_keys, vault.Keyring(keys, active, archived_ring.index_key))


# ---- the gate: no exchange is served until a restore is acknowledged --------------------------------

def pending_restore(conn: Connection):
    """The restore awaiting acknowledgement (a proposals row), or None."""
    from gateway.trust import registry

    row = conn.execute(select(proposals).where(proposals.c.kind == RESTORE_KIND, proposals.c.status == "pending")
                       .order_by(proposals.c.id).limit(1)).first()
    return registry.get_proposal(conn, row.id) if row else None


def gate_reason(layout, conn: Connection) -> str | None:
    """Why the gateway must not serve, or None."""
    if layout.restore_marker.exists():
        return "a restore is being put in place"
    restore_row = pending_restore(conn)
    if restore_row is not None:
        lost = restore_row.payload.get("lost")
        return (f"restored from backup {restore_row.payload.get('backup')}"
                + (f" (audit entries {lost[0]}..{lost[1]} lost)" if lost else "")
                + ": awaiting two officers' acknowledgement (`contactgate restore acknowledge`)")
    return None


class Gate:
    """`gate_reason`, looked up at most once a second per process (every exchange asks)."""

    def __init__(self, layout, engine, ttl_s: float = 1.0):
        self._layout, self._engine, self._ttl = layout, engine, ttl_s
        self._lock = threading.Lock()
        self._checked = -1e9
        self._reason: str | None = None

    def reason(self) -> str | None:
        now = time.monotonic()
        if now - self._checked >= self._ttl:
            with self._lock:
                if now - self._checked >= self._ttl:
                    with self._engine.connect() as conn:
                        self._reason = gate_reason(self._layout, conn)
                    self._checked = time.monotonic()
        return self._reason


def acknowledge_proposal(conn: Connection, trail: audit.AuditTrail, actor):
    """An officer proposes that the restore be acknowledged (a second approves)."""
    from gateway.trust import registry

    actor = registry.acting(conn, actor, ("senior_officer",), "acknowledging a restore")
    restore_row = pending_restore(conn)
    if restore_row is None:
        raise registry.RegistryError("no restore awaits acknowledgement")
    for old in registry.list_proposals(conn, kinds=(ACKNOWLEDGE_KIND,)):
        raise registry.RegistryError(f"proposal {old.id} (restore_ack) by {old.proposed_by} awaits a second "
                                     f"officer: approve it with `contactgate restore acknowledge --proposal {old.id}`")
    payload = {**restore_row.payload, "restore": restore_row.id}
    proposal = registry._new_proposal(conn, ACKNOWLEDGE_KIND, None, payload, actor)
    registry._record(conn, trail, "restore.acknowledge", actor, None,
                     f"proposal {proposal.id} (restore_ack): {_summary(payload)}")
    return proposal


def acknowledge_approve(conn: Connection, trail: audit.AuditTrail, proposal_id: int, actor):
    from gateway.trust import registry

    actor = registry.acting(conn, actor, ("senior_officer",), "acknowledging a restore")
    proposal = registry._proposal_for_decision(conn, proposal_id, None)
    if proposal.kind != ACKNOWLEDGE_KIND:
        raise registry.RegistryError(f"proposal {proposal.id} is not a restore acknowledgement")
    registry._second_officer(proposal, actor)
    registry._decide(conn, proposal, actor, "approved", None)
    conn.execute(update(proposals).where(proposals.c.id == proposal.payload["restore"]).values(
        status="approved", decided_by=actor.officer_id, decided_at=dt.datetime.now(dt.timezone.utc),
        decision_reason=f"acknowledged by {proposal.proposed_by} and {actor.officer_id}"))
    registry._record(conn, trail, "restore.acknowledged", actor, None,
                     f"restore at entry {proposal.payload['restore_seq']} acknowledged by {proposal.proposed_by} "
                     f"and {actor.officer_id}: {_summary(proposal.payload)}")
    return registry.get_proposal(conn, proposal.id)


def _summary(payload: dict) -> str:
    lost = payload.get("lost")
    return (f"restore of backup {payload.get('backup')} (entry {payload.get('restore_seq')}): "
            + (f"audit entries {lost[0]}..{lost[1]} lost" if lost else "no checkpointed entry lost"))
