"""The `contactgate` command line (CONTRACT.md "Command line").

Exit codes: 0 done, 1 a check found a problem (`audit verify`, `migrate --check`), 2 usage or
refused (a bad option or setting, an officer's request the registry refuses, a loose home for
`serve`), 3 could not run (no home, database unreachable or not at the schema head, a file that
cannot be read or written, or anything unexpected). Whatever goes wrong is one line on stderr that
says what to do; a traceback only with CONTACTGATE_DEBUG=1.

Commands are made with `main`'s decorators (`@main.command()`, `@main.group()` and their own
`.command()`), so every command gets the same preflight: before it runs, the home must exist and
the database must be reachable and at the newest schema revision (`needs_home=False` for the few
commands that make or repair those, `init`, `migrate`, `demo`, and for `serve`, which checks the
home's permissions before it opens the database).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import traceback
import time
from functools import cached_property
from pathlib import Path

import click
from cryptography import x509

from gateway import __version__, audit, files
from gateway.config import Settings, SettingError, safe_url
from gateway.db import make_engine, reader
from gateway.home import HomeError, init_home, load_ca, permission_problems, sqlite_database_path
from gateway.trust import pki, registry, signing_keys
from gateway.trust.registry import RegistryError
from gateway.security import vault

DEBUG_VARIABLE = "CONTACTGATE_DEBUG"


# ---- errors and exit codes ---------------------------------------------------------------------

class Refused(click.ClickException):
    """Exit 2: the request is refused (a bad setting, or something an officer may not do)."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class CannotRun(Refused):
    """Exit 3: the command could not run (missing home, unreachable database, unreadable file…)."""

    exit_code = 3


class CheckFailed(Refused):
    """Exit 1: the command ran and found a problem."""

    exit_code = 1


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as_cli_error(exc: Exception, settings: Settings | None) -> click.ClickException:
    """What the operator is told about an exception a command did not handle itself."""
    from sqlalchemy.exc import DBAPIError

    from gateway.migrations import UnknownRevision

    if isinstance(exc, SettingError):
        return Refused(str(exc))
    if isinstance(exc, (HomeError, UnknownRevision)):
        return CannotRun(str(exc))
    if isinstance(exc, DBAPIError):
        return CannotRun(_database_problem(exc, settings))
    if _is_redis_unreachable(exc):
        return CannotRun(f"cannot reach Redis ({_one_line(exc)}): check CONTACTGATE_REDIS_URL and that "
                         f"Redis is running, or unset it to use the embedded store")
    if isinstance(exc, PermissionError):
        return CannotRun(f"permission denied: {exc.filename or 'a file in the home'}: run contactgate "
                         f"as the gateway's user, with a home it may read and write")
    if isinstance(exc, FileNotFoundError) and exc.filename is None:
        return CannotRun(str(exc))  # our own "no … at …: run `contactgate init`" messages
    if isinstance(exc, OSError):
        return CannotRun(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "))
    return CannotRun(f"unexpected {type(exc).__name__}, nothing was changed by it; run again with "
                     f"{DEBUG_VARIABLE}=1 for the traceback, and report it")


def _is_redis_unreachable(exc: Exception) -> bool:
    # By name: this handler must work even where the redis package cannot be imported.
    return any(cls.__module__.startswith("redis.") and cls.__name__ in ("ConnectionError", "TimeoutError")
               for cls in type(exc).__mro__)


def _database_problem(exc: Exception, settings: Settings | None) -> str:
    path = sqlite_database_path(settings.database_url) if settings else None
    if path is not None:
        return (f"cannot use the database {path} ({_one_line(exc)}): check that it is ContactGate's "
                f"database and that this user may read and write it and its directory")
    where = safe_url(settings.database_url) if settings else "the database"
    return (f"cannot reach or use the database {where} ({_one_line(exc)}): check "
            f"CONTACTGATE_DATABASE_URL and that the database server is running")


# ---- the shared state of one invocation --------------------------------------------------------

class Context:
    """Settings and connections, made when a command first needs them (so `--help` needs nothing)."""

    def __init__(self, home: str, database_url: str | None, redis_url: str | None):
        self._options = {"home": home, "database_url": database_url, "redis_url": redis_url}
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = Settings.from_env(**self._options)
            except SettingError as exc:
                raise Refused(str(exc)) from None
            except ValueError as exc:  # a setting parsed without a SettingError of its own
                raise Refused(f"a setting has a value that cannot be used ({_one_line(exc)}): check "
                              f"the CONTACTGATE_* environment variables") from None
        return self._settings

    @property
    def settings_if_valid(self) -> Settings | None:
        try:
            return self.settings
        except Refused:
            return None

    @cached_property
    def engine(self):
        return make_engine(self.settings.database_url, keys=self.settings.layout.data_keys)

    @property
    def trail(self) -> audit.AuditTrail:
        layout = self.settings.layout
        return audit.AuditTrail.from_file(layout.audit_key, checkpoints=layout.audit_checkpoints)

    @property
    def reader(self):
        return reader(self.engine)

    # -- preconditions --

    def require_home(self) -> None:
        root = self.settings.layout.root
        if not root.is_dir():
            raise CannotRun(f"no ContactGate home at {root}: run `contactgate init` first (or point "
                            f"--home / CONTACTGATE_HOME at the home)")
        if not os.access(root, os.R_OK | os.X_OK):
            raise CannotRun(f"cannot read the home {root} (permission denied): run contactgate as the "
                            f"gateway's user")

    def require_database(self) -> None:
        """The database exists (never create an empty SQLite file here) and answers."""
        path = sqlite_database_path(self.settings.database_url)
        if path is not None and not path.exists():
            raise CannotRun(f"no database at {path}: run `contactgate init` first")
        with self.reader.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def schema_revision(self) -> tuple[str | None, str]:
        """(revision of the database, head revision); refuses a revision newer than this version."""
        from gateway.migrations import UnknownRevision, current_revision, head_revision, known_revisions

        self.require_database()
        current = current_revision(self.reader)
        if current is not None and current not in known_revisions():
            raise CannotRun(str(UnknownRevision(current)))
        if current is None:
            raise CannotRun("the database has no ContactGate schema: run `contactgate init` first")
        return current, head_revision()

    def require_schema_at_head(self) -> None:
        current, head = self.schema_revision()
        if current != head:
            raise CannotRun(f"the database schema is at revision {current}, this version needs {head}: "
                            f"run `contactgate migrate`")

    def preflight(self) -> None:
        self.require_home()
        self.require_schema_at_head()

    def check_database_reachable(self) -> None:
        """For `init`: a server database must answer before anything is made (SQLite is made by init)."""
        if sqlite_database_path(self.settings.database_url) is not None:
            return
        engine = make_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()

    def check_redis_reachable(self) -> None:
        url = self.settings.redis_url
        if url is None:
            return
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()


pass_ctx = click.make_pass_decorator(Context)


def _debug() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


class Command(click.Command):
    """A command that, unless made with ``needs_home=False``, runs only on an initialised home whose
    database is at the newest schema revision."""

    def __init__(self, *args, needs_home: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.needs_home = needs_home

    def invoke(self, ctx: click.Context):
        if self.needs_home:
            ctx.find_object(Context).preflight()
        return super().invoke(ctx)


class CommandGroup(click.Group):
    """`contactgate` and its command groups. Turns whatever a command did not handle into one line
    and exit 3 (exit 1 is kept for checks that found a problem)."""

    command_class = Command
    group_class = type  # subgroups are CommandGroups too

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if _debug():
                traceback.print_exc()
            try:
                state = ctx.find_object(Context)
                error = _as_cli_error(exc, state.settings_if_valid if state else None)
            except Exception:  # describing it failed too: say only what it was
                error = CannotRun(f"unexpected {type(exc).__name__}; run again with {DEBUG_VARIABLE}=1 "
                                  f"for the traceback, and report it")
            raise error from None


def _fail(message: str) -> None:
    raise Refused(message)


@click.group(cls=CommandGroup)
@click.version_option(__version__, prog_name="contactgate", message="%(prog)s %(version)s")
@click.option("--home", envvar="CONTACTGATE_HOME", default="./var", show_default=True, show_envvar=True,
              help="The gateway's home: config, SQLite database, certificates.")
@click.option("--database-url", envvar="CONTACTGATE_DATABASE_URL", default=None, show_envvar=True,
              help="SQLAlchemy URL, e.g. postgresql+psycopg://USER@HOST/DB (default: SQLite under "
                   "the home).")
@click.option("--redis-url", envvar="CONTACTGATE_REDIS_URL", default=None, show_envvar=True,
              help="Redis for the rate-limit counters shared by every gateway process (default: the "
                   "embedded store).")
@click.pass_context
def main(ctx: click.Context, home: str, database_url: str | None, redis_url: str | None) -> None:
    """ContactGate: accredited organisations exchange signed SOAP messages with the contact index.

    Exit codes: 0 done, 1 a check found a problem, 2 usage or refused, 3 could not run.
    Set CONTACTGATE_DEBUG=1 to see the traceback of an unexpected error."""
    ctx.obj = Context(home, database_url, redis_url)


@main.command(needs_home=False, short_help="Create the home and database schema (or repair them).")
@click.option("--server-name", "server_names", multiple=True,
              help="Extra DNS name or IP for the server certificate (repeatable); replaces the "
                   "server certificate.")
@pass_ctx
def init(ctx: Context, server_names: tuple[str, ...]) -> None:
    """Create the home: CA, server TLS certificate, signing key, database schema.

    Safe to run twice: what exists is kept, the schema is migrated to the newest revision, and
    files readable by others are tightened (home and directories 0700, files 0600)."""
    ctx.settings  # a bad setting stops here, before anything is made
    ctx.check_database_reachable()
    ctx.check_redis_reachable()
    report = init_home(ctx.settings, list(server_names))
    for verb, item in report.lines:
        click.echo(f"{verb:<8} {item}")


@main.command(needs_home=False, short_help="Upgrade the database schema to the newest revision.")
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


# ---- organisations -------------------------------------------------------------------------------

@main.group()
def org() -> None:
    """Register and accredit connecting organisations."""


def _registry_call(ctx: Context, fn, *args, **kwargs):
    """Run a registry change (which audits itself) in one transaction."""
    trail = ctx.trail
    try:
        with ctx.engine.begin() as conn:
            return fn(conn, trail, *args, **kwargs)
    except RegistryError as exc:
        raise Refused(str(exc)) from None


def _show_org(o: registry.Organisation) -> None:
    pending = ""
    if o.pending_scopes is not None:
        pending = (f"  proposed: scopes={','.join(sorted(o.pending_scopes))} expires={o.pending_expires} "
                   f"by {o.pending_by}, awaiting a second officer")
    click.echo(f"{o.code}  {o.name}  kind={o.kind}  status={o.status}  "
               f"scopes={','.join(sorted(o.scopes)) or '-'}  expires={o.expires or '-'}{pending}")


@org.command("add")
@click.argument("code")
@click.option("--name", required=True, help="The organisation's name.")
@click.option("--kind", required=True, type=click.Choice(registry.KINDS), help="What kind of organisation.")
@pass_ctx
def org_add(ctx: Context, code: str, name: str, kind: str) -> None:
    """Register an organisation under CODE."""
    _show_org(_registry_call(ctx, registry.add_org, code, name, kind))


@org.command("accredit")
@click.argument("code")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(registry.SCOPES),
              help="What it may do (repeatable): push, query, shield.")
@click.option("--expires", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="When the accreditation ends (a future date).")
@click.option("--officer", required=True, help="The proposing officer's id.")
@click.option("--evidence", default=None, help="What the accreditation rests on (e.g. the agreement).")
@pass_ctx
def org_accredit(ctx: Context, code, scopes, expires, officer, evidence) -> None:
    """Propose accreditation (a second officer must approve)."""
    _show_org(_registry_call(ctx, registry.propose_accreditation, code, list(scopes), expires.date(),
                             officer, evidence, dt.date.today()))


@org.command("approve")
@click.argument("code")
@click.option("--officer", required=True, help="The approving officer's id (not the proposer).")
@pass_ctx
def org_approve(ctx: Context, code: str, officer: str) -> None:
    """Approve a proposed accreditation (a different officer from the proposer)."""
    _show_org(_registry_call(ctx, registry.approve, code, officer))


@org.command("suspend")
@click.argument("code")
@click.option("--officer", required=True, help="The suspending officer's id.")
@click.option("--reason", required=True, help="Why its traffic is stopped.")
@pass_ctx
def org_suspend(ctx: Context, code: str, officer: str, reason: str) -> None:
    """Stop all of the organisation's traffic at once."""
    _show_org(_registry_call(ctx, registry.suspend, code, officer, reason))


@org.command("reinstate")
@click.argument("code")
@click.option("--officer", required=True, help="The reinstating officer's id.")
@pass_ctx
def org_reinstate(ctx: Context, code: str, officer: str) -> None:
    """Restart a suspended organisation's traffic."""
    _show_org(_registry_call(ctx, registry.reinstate, code, officer))


@org.command("list")
@pass_ctx
def org_list(ctx: Context) -> None:
    """Every organisation: status, scopes, expiry."""
    with ctx.reader.connect() as conn:
        for o in registry.list_orgs(conn):
            _show_org(o)


@org.command("show")
@click.argument("code")
@pass_ctx
def org_show(ctx: Context, code: str) -> None:
    """One organisation: status, scopes, expiry, officers, certificates."""
    with ctx.reader.connect() as conn:
        o = registry.get_org(conn, code)
        if o is None:
            _fail(f"no organisation with code {code!r}")
        _show_org(o)
        click.echo(f"  proposed by {o.proposed_by or '-'}, approved by {o.approved_by or '-'}"
                   + (f", reason: {o.status_reason}" if o.status_reason else ""))
        if o.evidence:
            click.echo(f"  evidence: {o.evidence}")
        for c in registry.list_certs(conn, code):
            _show_cert(c)


# ---- certificates --------------------------------------------------------------------------------

@main.group()
def cert() -> None:
    """Issue, register and revoke organisations' certificates."""


def _show_cert(c: registry.CertificateRecord) -> None:
    state = f"REVOKED {c.revoked_at:%Y-%m-%d} ({c.revoked_reason})" if c.revoked_at else "active"
    click.echo(f"  {c.fingerprint}  {c.org_code}  {c.subject}  until {c.not_after:%Y-%m-%d}  {state}")


@cert.command("issue")
@click.argument("code")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write key.pem, cert.pem, ca.pem and gateway-signing.pem here.")
@click.option("--csr", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Sign this CSR instead of making a key.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --csr: where to write the certificate.")
@pass_ctx
def cert_issue(ctx: Context, code: str, out_dir: Path | None, csr: Path | None, out: Path | None) -> None:
    """Issue a certificate for an organisation, signed by the gateway CA, and register it."""
    if bool(csr) == bool(out_dir) or (csr and not out):
        _fail("use either --out-dir DIR, or --csr FILE --out FILE")
    ca_key, ca_cert = load_ca(ctx.settings)
    with ctx.reader.connect() as conn:
        organisation = registry.get_org(conn, code)
    if organisation is None:
        _fail(f"no organisation with code {code!r}")
    home = ctx.settings.layout.root
    if csr:
        try:
            request = pki.load_csr(csr.read_bytes())
        except ValueError as exc:
            _fail(f"unreadable CSR: {exc}")
        certificate = pki.issue_org_cert(ca_key, ca_cert, code, organisation.name, request.public_key())
        outputs = {out: pki.cert_pem(certificate)}
        secret: set[Path] = set()
    else:
        key = pki.new_rsa_key()
        certificate = pki.issue_org_cert(ca_key, ca_cert, code, organisation.name, key.public_key())
        outputs = {out_dir / "key.pem": pki.key_pem(key),
                   out_dir / "cert.pem": pki.cert_pem(certificate),
                   out_dir / "ca.pem": pki.cert_pem(ca_cert),
                   out_dir / "gateway-signing.pem": signing_keys.bundle_pem(ctx.settings.layout)}
        secret = {out_dir / "key.pem"}
    # Files first, then the registration: a certificate is never registered without its files (they
    # are removed again if the registration is refused). Anything written into the home is 0600.
    written: list[Path] = []
    try:
        for path, data in outputs.items():
            private = path in secret or files.is_under(path, home)
            (pki.write_private if private else pki.write_public)(path, data)
            written.append(path)
        record = _registry_call(ctx, registry.register_cert, code, certificate)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    click.echo(f"wrote {', '.join(str(p) for p in outputs)}")
    _show_cert(record)


@cert.command("register")
@click.argument("code")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate (PEM).")
@pass_ctx
def cert_register(ctx: Context, code: str, cert_file: Path) -> None:
    """Bind a certificate issued by another trusted CA (a PEM file in $CONTACTGATE_HOME/trust)."""
    from gateway.app import trust_anchor_files

    try:
        certificate = pki.load_cert_pem(cert_file.read_bytes())
    except ValueError as exc:
        _fail(f"unreadable certificate: {exc}")
    try:
        pki.TrustAnchors.from_files(trust_anchor_files(ctx.settings)).verify_client(certificate)
    except pki.ChainError as exc:
        _fail(f"certificate does not chain to a trusted CA: {exc}")
    _show_cert(_registry_call(ctx, registry.register_cert, code, certificate))


@cert.command("revoke")
@click.argument("fingerprint")
@click.option("--reason", required=True, help="Why it is revoked.")
@pass_ctx
def cert_revoke(ctx: Context, fingerprint: str, reason: str) -> None:
    """Revoke a certificate; the next message using it is refused."""
    _show_cert(_registry_call(ctx, registry.revoke_cert, fingerprint, reason))


@cert.command("list")
@click.argument("code", required=False)
@pass_ctx
def cert_list(ctx: Context, code: str | None) -> None:
    """Certificates, of one organisation (CODE) or of all."""
    with ctx.reader.connect() as conn:
        for c in registry.list_certs(conn, code):
            _show_cert(c)


@main.group()
def trust() -> None:
    """Certificate authorities whose certificates may be registered."""


@trust.command("add-ca")
@click.argument("pem", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def trust_add_ca(ctx: Context, pem: Path) -> None:
    """Trust the CA in the PEM file (takes effect when the gateway is next started)."""
    try:
        certs = pki.load_certs_pem(pem.read_bytes())
    except ValueError as exc:
        _fail(f"unreadable certificate: {exc}")
    target = ctx.settings.layout.trusted_cas_dir / f"{pki.fingerprint(certs[0])[:16]}.pem"
    pki.write_private(target, b"".join(pki.cert_pem(c) for c in certs))
    click.echo(f"trusted {certs[0].subject.rfc4514_string()} ({target})")


# ---- the gateway's response-signing key ---------------------------------------------------------

@main.group("signing-key")
def signing_key() -> None:
    """Rotate the key the gateway signs its answers with, with a grace period.

    rotate (stage a new key; clients pin the bundle of both) -> promote (sign with the new key,
    after the grace period; reload the gateway) -> retire (drop the old certificate)."""


def _signing_step(ctx: Context, detail: str, step, *args, **kwargs):
    """Run one rotation step inside the transaction that audits it (a step that fails writes no
    entry); a step that cannot be taken now exits 2."""
    trail = ctx.trail
    try:
        with ctx.engine.begin() as conn:
            result = step(ctx.settings.layout, *args, **kwargs)
            certificate = result if isinstance(result, x509.Certificate) else result.current
            trail.append(conn, audit.Entry(operation="signing_key", outcome="done",
                                           detail=f"{detail}: {pki.fingerprint(certificate)}"))
    except signing_keys.SigningKeyError as exc:
        _fail(str(exc))
    return result


def _show_signing(label: str, certificate) -> None:
    click.echo(f"{label:9} {pki.fingerprint(certificate)}  {certificate.signature_hash_algorithm.name}  "
               f"from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M}  until "
               f"{certificate.not_valid_after_utc:%Y-%m-%d}")


@signing_key.command("status")
@pass_ctx
def signing_key_status(ctx: Context) -> None:
    """Show the current, staged and previous signing certificates (all three are published)."""
    try:
        keys = signing_keys.load(ctx.settings.layout)
    except signing_keys.SigningKeyError as exc:
        _fail(str(exc))
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
    ca_key, ca_cert = load_ca(ctx.settings)
    cert = _signing_step(ctx, "new signing key staged", signing_keys.stage_next, ca_key, ca_cert, ec=ec)
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
    keys = _signing_step(ctx, "staged signing key promoted", signing_keys.promote,
                         min_grace=dt.timedelta(days=grace_days))
    _show_signing("current", keys.current)
    _show_signing("previous", keys.previous)
    click.echo("next: reload the gateway so that it signs with the new key")


@signing_key.command("discard")
@pass_ctx
def signing_key_discard(ctx: Context) -> None:
    """Delete a staged key that has not been promoted."""
    _show_signing("discarded", _signing_step(ctx, "staged signing key discarded", signing_keys.discard_next))


@signing_key.command("retire")
@pass_ctx
def signing_key_retire(ctx: Context) -> None:
    """Stop publishing the certificate of the key before the current one."""
    _show_signing("retired", _signing_step(ctx, "previous signing certificate retired",
                                           signing_keys.retire_previous))


@signing_key.command("bundle")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the bundle here (default: standard output).")
@pass_ctx
def signing_key_bundle(ctx: Context, out: Path | None) -> None:
    """The certificates clients should pin now (current, staged, previous), as PEM."""
    try:
        bundle = signing_keys.bundle_pem(ctx.settings.layout)
    except signing_keys.SigningKeyError as exc:
        _fail(str(exc))
    if out is None:
        click.echo(bundle.decode(), nl=False)
    else:
        write = pki.write_private if files.is_under(out, ctx.settings.layout.root) else pki.write_public
        write(out, bundle)
        click.echo(f"wrote {out}")


# ---- data keys (encryption at rest) --------------------------------------------------------------

@main.group("keys")
def keys_group() -> None:
    """The data keys that seal identifying values at rest (keys/data-keys.json in the home).

    rotate (a new key; every value re-sealed under it in batches while the gateway serves) ->
    status (how many values each key seals) -> retire KEY (drop a key no value uses)."""


def _keyring_file(ctx: Context) -> Path:
    if os.environ.get(vault.ENV_VAR):
        _fail(f"the data keys come from {vault.ENV_VAR}: rotate them where that secret is kept "
              f"(docs/operations.md, \"Data keys\")")
    path = ctx.settings.layout.data_keys
    try:
        vault.read_keyring(path)
    except vault.KeyringError as exc:
        _fail(str(exc))
    return path


def _key_usage(ctx: Context) -> dict[str, int]:
    from gateway.index import at_rest

    with ctx.reader.connect() as conn:
        return at_rest.key_usage(conn)


@keys_group.command("status")
@pass_ctx
def keys_status(ctx: Context) -> None:
    """Each data key, whether it is active, and how many stored values it seals."""
    path = ctx.settings.layout.data_keys
    try:
        env = os.environ.get(vault.ENV_VAR)
        ring = vault.Keyring.from_json(env) if env else vault.read_keyring(path)  # as it is now, not as cached
    except vault.KeyringError as exc:
        _fail(str(exc))
    usage = _key_usage(ctx)
    for kid in sorted(ring.data_keys):
        click.echo(f"{kid}  {'active ' if kid == ring.active else 'old    '}  {usage.get(kid, 0)} value(s)")
    unknown = sorted(set(usage) - set(ring.data_keys))
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

    path = _keyring_file(ctx)
    ring = vault.read_keyring(path)
    trail = ctx.trail
    if not resume:
        ring = ring.with_new_active_key()
        vault.write_keyring(path, ring)
        with ctx.engine.begin() as conn:
            trail.append(conn, audit.Entry(operation="keys", outcome="done", detail=f"data key {ring.active} added, active"))
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
        trail.append(conn, audit.Entry(operation="keys", outcome="done",
                                       detail=f"{total} value(s) re-sealed under data key {ring.active}"))
    click.echo(f"{total} value(s) re-sealed under {ring.active}")
    left = {kid: n for kid, n in _key_usage(ctx).items() if kid != ring.active}
    if left:
        click.echo("still sealed under older keys (run `keys rotate --resume`): "
                   + ", ".join(f"{k}: {n}" for k, n in sorted(left.items())))
    else:
        click.echo("no value uses an older key: `keys retire KEY` removes one")


@keys_group.command("retire")
@click.argument("key_id")
@pass_ctx
def keys_retire(ctx: Context, key_id: str) -> None:
    """Remove an old data key from the keyring; refused while any stored value is sealed under it."""
    path = _keyring_file(ctx)
    ring = vault.read_keyring(path)
    if key_id not in ring.data_keys:
        _fail(f"no data key {key_id} in the keyring")
    if key_id == ring.active:
        _fail(f"{key_id} is the active key: rotate first")
    used = _key_usage(ctx).get(key_id, 0)
    if used:
        _fail(f"{used} stored value(s) are still sealed under {key_id}: run `keys rotate --resume` first")
    vault.write_keyring(path, ring.without(key_id))
    with ctx.engine.begin() as conn:
        ctx.trail.append(conn, audit.Entry(operation="keys", outcome="done", detail=f"data key {key_id} retired"))
    click.echo(f"data key {key_id} retired")


# ---- practitioner roles --------------------------------------------------------------------------

@main.group("roles")
def roles_group() -> None:
    """Which fields of a child's record each practitioner role may see (the home's roles.json)."""


@roles_group.command("show")
@pass_ctx
def roles_show(ctx: Context) -> None:
    """Print the table in force: each role and the field groups it may see beyond the minimum."""
    from gateway.index import disclosure

    try:
        rules = disclosure.load(ctx.settings.roles_path)
    except disclosure.RolesFileError as exc:
        _fail(str(exc))
    for line in disclosure.table(rules):
        click.echo(line)


# ---- serving -------------------------------------------------------------------------------------

@main.command(needs_home=False)  # its own preflight: the permissions are checked before the database is opened
@click.option("--bind", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Worker processes.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Request threads per worker [default: $CONTACTGATE_THREADS or 4].")
@pass_ctx
def serve(ctx: Context, bind: str, workers: int, threads: int | None) -> None:
    """Run the gateway with mutual TLS.

    Refuses to start (exit 2) if the home, or anything in it, is open to other users."""
    from gateway.server import serve as run_server

    ctx.require_home()
    layout = ctx.settings.layout
    if not (layout.server_cert.exists() and layout.server_key.exists()):
        raise CannotRun("no server certificate: run `contactgate init` first")
    loose = permission_problems(ctx.settings)
    if loose:
        first = loose[0]
        more = f" ({len(loose) - 1} more open to other users)" if len(loose) > 1 else ""
        raise Refused(f"refusing to serve: {first.path} is open to other users (mode "
                      f"{first.mode & 0o777:04o}): run `{first.fix}`, or `contactgate init` to repair "
                      f"the permissions of the whole home{more}")
    ctx.require_schema_at_head()
    ctx.check_redis_reachable()
    run_server(ctx.settings, bind, workers, threads)


# ---- audit ---------------------------------------------------------------------------------------

@main.group("audit")
def audit_group() -> None:
    """Verify the audit chain and report who accessed what."""


@audit_group.command("verify")
@pass_ctx
def audit_verify(ctx: Context) -> None:
    """Check the whole chain; exit 1 naming the first bad entry.

    Each successful run records the head in $CONTACTGATE_HOME/audit/checkpoints; later runs also
    check that the chain still holds it. Run it regularly."""
    result = ctx.trail.verify(ctx.engine)
    if result.ok:
        click.echo(f"audit chain intact: {result.entries} entries")
        return
    click.echo(f"audit chain BROKEN at entry {result.first_bad_seq}: {result.problem} "
               f"({result.entries} entries verified before it)")
    sys.exit(1)


@audit_group.command("report")
@click.option("--child", "child_id", default=None, help="Who accessed this child's record.")
@click.option("--user", "user", default=None, metavar="ORG:USER", help="What this user accessed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def audit_report(ctx: Context, child_id: str | None, user: str | None, as_json: bool) -> None:
    """Who accessed what, when, and why."""
    if bool(child_id) == bool(user):
        _fail("give exactly one of --child ID or --user ORG:USER")
    with ctx.reader.connect() as conn:
        if child_id:
            rows = audit.report_for_child(conn, child_id.strip().upper())
        else:
            org_code, _, user_id = user.partition(":")
            if not user_id:
                _fail("--user takes ORG:USER")
            rows = audit.report_for_user(conn, org_code, user_id)
    for row in rows:
        if as_json:
            click.echo(json.dumps({k: row[k] for k in audit.chain.HASHED_FIELDS}))
            continue
        who = f"{row['org_code'] or '-'}:{row['user_id'] or '-'}"
        why = f"{row['reason_code']}: {row['reason_text']}" if row["reason_code"] else "-"
        what = row["fault_code"] or row["outcome"]
        click.echo(f"{row['at']}  #{row['seq']}  {who} ({row['role'] or '-'})  {row['operation']}  "
                   f"{what}  reason [{why}]  children [{row['child_ids'] or '-'}]")
    if not rows:
        click.echo("no entries")


# ---- the data-quality review queue ---------------------------------------------------------------

@main.group()
def review() -> None:
    """Work the data-quality review queue: pairs of children that may be one child."""


def _review_call(ctx: Context, fn, *args):
    """Run a review action (which audits itself) in one transaction, as the officer named."""
    from gateway.index.review import ReviewError

    try:
        with ctx.engine.begin() as conn:
            return fn(conn, ctx.trail, *args, dt.datetime.now(dt.timezone.utc))
    except ReviewError as exc:
        raise Refused(str(exc)) from None


@review.command("list")
@click.option("--status", type=click.Choice(["open", "linked", "distinct", "merged", "all"]), default="open",
              show_default=True, help="Which entries.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def review_list(ctx: Context, status: str, limit: int, as_json: bool) -> None:
    """Entries in the queue, oldest first."""
    from gateway.index import review as queue

    with ctx.reader.connect() as conn:
        entries = queue.list_entries(conn, None if status == "all" else status, limit)
    for e in entries:
        if as_json:
            click.echo(json.dumps(e, sort_keys=True))
        else:
            click.echo(f"#{e['id']}  {e['status']:<8}  {e['child_id']} ~ {e['candidate_child_id']}  "
                       f"score={e['score']:.3f}  from {e['org']}:{e['source_record_id']}  {e['created_at']}")
    if not entries and not as_json:
        click.echo("no entries")


@review.command("show")
@click.argument("review_id", type=int)
@click.option("--officer", required=True, help="The data-quality officer's id (reading the records is audited).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def review_show(ctx: Context, review_id: int, officer: str, as_json: bool) -> None:
    """The two records side by side, with the field agreements and the score."""
    from gateway.index import review as queue

    try:
        with ctx.engine.begin() as conn:
            entry = queue.show(conn, ctx.trail, review_id, officer)
    except queue.ReviewError as exc:
        raise Refused(str(exc)) from None
    if as_json:
        click.echo(json.dumps(entry, sort_keys=True, default=str))
        return
    click.echo(f"review #{entry['id']}  {entry['status']}  score {entry['score']:.4f} "
               f"(model {entry['model_version']}; now {entry['comparison_now']['probability']:.4f})  "
               f"sent by {entry['org']}:{entry['source_record_id']} at {entry['created_at']}")
    left, right = entry["stored_as"], entry["candidate"]
    rows = [("child id", left["child_id"], right["child_id"])]
    for name, pick in _REVIEW_FIELDS:
        rows.append((name, pick(left["record"]), pick(right["record"])))
    width = max(len(str(a)) for _, a, _ in rows) + 2
    levels = entry["comparison_now"]["levels"]
    weights = entry["comparison_now"]["weights"]
    for name, a, b in rows:
        click.echo(f"{name:<16} {str(a):<{width}} {b}")
    click.echo("agreement: " + ", ".join(f"{f}={levels[f]} ({weights.get(f, 0):+.1f})" for f in sorted(levels)))
    if entry["comparison_now"]["identifiers"]:
        click.echo(f"NHS / pupil numbers: {entry['comparison_now']['identifiers']}")
    if entry["comparison_now"]["twins"]:
        click.echo("looks like twins or siblings: never linked automatically")


def _identity_field(name):
    return lambda record: _plain((record.get("identity") or {}).get(name))


def _plain(value):
    if value in (None, [], ""):
        return "-"
    return " ".join(value) if isinstance(value, list) else value


_REVIEW_FIELDS = [
    ("family name", _identity_field("family_name")),
    ("given names", _identity_field("given_names")),
    ("preferred name", _identity_field("preferred_name")),
    ("previous names", _identity_field("previous_names")),
    ("date of birth", _identity_field("date_of_birth")),
    ("gender", _identity_field("gender")),
    ("NHS number", _identity_field("nhs_number")),
    ("pupil number", _identity_field("pupil_number")),
    ("address", lambda r: ", ".join([*(r.get("address") or {}).get("lines", []), (r.get("address") or {}).get("postcode", "")]) or "-"),
]


@review.command("link")
@click.argument("review_id", type=int)
@click.option("--officer", required=True, help="The data-quality officer's id.")
@pass_ctx
def review_link(ctx: Context, review_id: int, officer: str) -> None:
    """The pair are one child: the record held for review joins the existing child."""
    from gateway.index import review as queue

    merge_id = _review_call(ctx, queue.link, review_id, officer)
    click.echo(f"review #{review_id} linked (merge {merge_id}; undo with `contactgate review unmerge {merge_id}`)")


@review.command("distinct")
@click.argument("review_id", type=int)
@click.option("--officer", required=True, help="The data-quality officer's id.")
@pass_ctx
def review_distinct(ctx: Context, review_id: int, officer: str) -> None:
    """The pair are different children: never linked or queued again."""
    from gateway.index import review as queue

    _review_call(ctx, queue.distinct, review_id, officer)
    click.echo(f"review #{review_id}: recorded as different children")


@review.command("merge")
@click.argument("survivor")
@click.argument("merged")
@click.option("--officer", required=True, help="The data-quality officer's id.")
@pass_ctx
def review_merge(ctx: Context, survivor: str, merged: str, officer: str) -> None:
    """Merge child MERGED into SURVIVOR (MERGED's id then resolves to SURVIVOR)."""
    from gateway.index import review as queue

    merge_id = _review_call(ctx, queue.merge, survivor, merged, officer)
    click.echo(f"merge {merge_id}: {merged} merged into {survivor} "
               f"(undo with `contactgate review unmerge {merge_id}`)")


@review.command("unmerge")
@click.argument("merge_id", type=int)
@click.option("--officer", required=True, help="The data-quality officer's id.")
@pass_ctx
def review_unmerge(ctx: Context, merge_id: int, officer: str) -> None:
    """Undo a merge: both children as they were, each with its own records and involvements."""
    from gateway.index import review as queue

    _review_call(ctx, queue.unmerge, merge_id, officer)
    click.echo(f"merge {merge_id} undone")


# ---- retention: archive at 18, purge after the retention period -------------------------------------

@main.group("retention")
def retention_group() -> None:
    """Archive children at 18 (or on a recorded death); purge them after the retention period."""


@retention_group.command("run")
@click.option("--compact", is_flag=True,
              help="PostgreSQL: VACUUM FULL the purged tables so that no freed bytes stay in their files "
                   "(locks each table while it is rewritten: for a maintenance window).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the counts.")
@pass_ctx
def retention_run(ctx: Context, compact: bool, as_json: bool) -> None:
    """Archive every child now due and purge every archived child past its purge day; print counts.

    Idempotent, and safe to run from cron while the gateway serves (small batches, one transaction
    each, every child locked and checked again). Settings: CONTACTGATE_RETENTION_VIEW_DAYS,
    CONTACTGATE_RETENTION_PURGE_YEARS."""
    from gateway.index import retention

    counts = retention.run(ctx.engine, ctx.trail, retention.Policy.from_settings(ctx.settings), compact=compact)
    if as_json:
        click.echo(json.dumps({"archived": counts.archived, "purged": counts.purged}))
    else:
        click.echo(f"archived {counts.archived}, purged {counts.purged}")


@retention_group.command("show")
@click.argument("child_id")
@click.option("--officer", required=True, help="The data manager's id (reading an archived record is audited).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def retention_show(ctx: Context, child_id: str, officer: str, as_json: bool) -> None:
    """A child's retention state (live, archived or purged) and dates; for an archived child still
    in its viewing period, its record and involvements."""
    from gateway.index import retention

    with ctx.engine.begin() as conn:
        state = retention.show(conn, ctx.trail, child_id, officer, retention.Policy.from_settings(ctx.settings))
    if state is None:
        _fail(f"no child {child_id.strip()}")
    if as_json:
        click.echo(json.dumps(state, sort_keys=True, default=str))
        return
    click.echo(f"{state['child_id']}: {state['state']}"
               + (f" (merged into {state['merged_into']})" if state.get("merged_into") else ""))
    for name in ("reason", "archive_due", "archived_at", "sealed_from", "purge_after", "purged_at"):
        if state.get(name):
            click.echo(f"  {name.replace('_', ' ')}: {state[name]}")
    if state.get("sealed"):
        click.echo("  record sealed: the viewing period is over; it is kept, shown to no one, until purged")
    if "record" in state:
        for name, pick in _REVIEW_FIELDS:
            click.echo(f"  {name:<16} {pick(state['record'])}")
        death = (state["record"].get("identity") or {}).get("date_of_death")
        if death:
            click.echo(f"  {'date of death':<16} {death}")
        for inv in state["involvements"]:
            click.echo(f"  involvement: {inv['org']} {inv['service']} from {inv['start']}"
                       + (f" to {inv['end']}" if inv["end"] else "")
                       + (f", {inv['practitioner_name']}" if inv["practitioner_name"] else ""))


@main.command(needs_home=False)
@click.option("--keep", is_flag=True, help="Keep the temporary home afterwards and print where it is.")
def demo(keep: bool) -> None:
    """Run the end-to-end demonstration and print what happened."""
    from gateway.demo import run_demo

    sys.exit(run_demo(keep=keep))


if __name__ == "__main__":
    main()
