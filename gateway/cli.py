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

from gateway import __version__, audit, files, officers
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
        return audit.AuditTrail.of_home(layout)

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

    def session_officer(self) -> officers.Officer:
        """The officer whose session this terminal holds; an ended session is removed (committed) and refused."""
        try:
            _, token = officers.read_session(officers.session_path(),
                                             officers.database_identity(self.settings.database_url))
        except officers.OfficerError as exc:
            raise Refused(str(exc)) from None
        refusal = None
        with self.engine.begin() as conn:
            try:
                return officers.resume(conn, token, settings=self.settings)
            except officers.OfficerError as exc:
                refusal = str(exc)  # the transaction commits: an expired session is deleted
        raise Refused(refusal)

    def signed_in(self, roles: tuple[str, ...] = registry.READ_ROLES, *, action: str = "this command",
                  named: str | None = None) -> officers.Officer:
        """The officer signed in on this terminal (their session's idle clock restarts), holding one
        of ``roles``; refused without a good session. ``named``: the retired --officer flag, still
        accepted as a check that it names the signed-in officer."""
        actor = self.session_officer()
        if named is not None:
            try:
                same = officers.canonical_id(named) == actor.officer_id
            except officers.OfficerError:
                same = False
            if not same:
                _fail(f"--officer {named!r} is not the officer signed in ({actor.officer_id}); the acting "
                      f"officer is whoever is signed in (the flag is retired)")
        if actor.must_change_password:
            _fail("the password must be changed first: run `contactgate officer password`")
        if not actor.holds(*roles):
            why = f"{action} needs the role {' or '.join(roles)}; {actor.officer_id} holds {actor.role_text}"
            registry.record_refusal(self.engine, self.trail, actor, action, why)
            _fail(why)
        return actor

    def preflight_serving(self) -> None:
        """What `serve` and `console` check before they listen: the home and its server certificate,
        nothing in the home open to other users (exit 2), the schema at head."""
        self.require_home()
        layout = self.settings.layout
        if not (layout.server_cert.exists() and layout.server_key.exists()):
            raise CannotRun("no server certificate: run `contactgate init` first")
        loose = permission_problems(self.settings)
        if loose:
            first = loose[0]
            more = f" ({len(loose) - 1} more open to other users)" if len(loose) > 1 else ""
            raise Refused(f"refusing to serve: {first.path} is open to other users (mode "
                          f"{first.mode & 0o777:04o}): run `{first.fix}`, or `contactgate init` to repair "
                          f"the permissions of the whole home{more}")
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

OFFICER_FLAG = click.option("--officer", "named", default=None, metavar="ID",
                            help="Retired: the acting officer is whoever is signed in (`contactgate login`); "
                                 "if given, it must name that officer.")
JSON_FLAG = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


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


class MainGroup(CommandGroup):
    """`contactgate`: the gateway's own commands, and commands other installed distributions add
    under the entry-point group ``contactgate.commands`` (`push` from the connecting organisation's
    side, `demo`). Those are found only when asked for, so a gateway command pays nothing for them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_added_commands()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in _added_commands():
            command = _added_commands()[name].load()
        return command


ADDED_COMMANDS = "contactgate.commands"


def _added_commands() -> dict:
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=ADDED_COMMANDS)}


@click.group(cls=MainGroup)
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
    origin = audit.set_origin(_local_origin())
    ctx.call_on_close(lambda: audit.reset_origin(origin))  # a caller running commands in-process keeps its own


def _local_origin() -> str:
    """Where a command's audit entries say it came from: this machine's account that ran it (its
    real uid, not $USER: gateway.officers.local_source)."""
    return officers.local_source()


@main.command(needs_home=False, short_help="Create the home and database schema (or repair them).")
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
    _publish_crl(ctx)
    _first_officers(ctx, wanted)


def _publish_crl(ctx: Context) -> None:
    """A new CRL of the gateway CA (after a revocation, and at init): the running gateway loads it
    for new connections within a second."""
    from gateway.trust import crl

    crl.renew(ctx.settings, ctx.engine)


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
        _fail(f"--officers {path}: {exc}")
    if not any("senior_officer" in (e.get("roles") or ()) for e in entries):
        _fail(f"--officers {path}: at least one officer must hold senior_officer")
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
    _enrol(officer_id, secret)
    while not officers.code_matches(secret, click.prompt("  code from the authenticator app")):
        click.echo("  that code does not match: check the app's clock and try again")
    return {"id": officer_id, "name": name, "roles": ["senior_officer", "officer"], "password": password,
            "totp_secret": secret}


def _enrol(officer_id: str, secret: str) -> None:
    uri = officers.provisioning_uri(officers.canonical_id(officer_id), secret)
    click.echo("  scan this with an authenticator app (or type the secret in):")
    click.echo(officers.terminal_qr(uri))
    click.echo(f"  secret: {secret}")


# ---- officers and their sessions ---------------------------------------------------------------------

@main.command()
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
                              source=_local_origin())
    if result.officer is None:
        _fail("sign-in refused: the officer id, password or code is wrong, or the account is locked or "
              "disabled (every attempt is audited)")
    path = officers.session_path()
    officers.write_session(path, result.officer.officer_id, result.token,
                           officers.database_identity(ctx.settings.database_url))
    click.echo(f"signed in as {result.officer.officer_id} ({result.officer.role_text}); session in {path}")
    if result.officer.must_change_password:
        if new_password is None:
            if password_stdin:
                _fail("a new password is due: give it on the second line of standard input")
            new_password = click.prompt("a new password is due; new password", hide_input=True,
                                        confirmation_prompt=True)
        _change_password(ctx, result.officer, new_password)


def _change_password(ctx: Context, actor: officers.Officer, new_password: str) -> None:
    try:
        with ctx.engine.begin() as conn:
            officers.change_password(conn, ctx.trail, actor, new_password)
    except officers.OfficerError as exc:
        raise Refused(str(exc)) from None
    click.echo("password changed")


@main.command()
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


@main.command()
@pass_ctx
def whoami(ctx: Context) -> None:
    """Who is signed in, with which roles."""
    actor = ctx.signed_in(tuple(officers.ROLES), action="whoami")
    click.echo(f"{actor.officer_id} ({actor.name}): {actor.role_text}")


@main.group("officer")
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
    _enrol(made.officer_id, secret)


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
    _enrol(made.officer_id, secret)


@officer_group.command("password")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@pass_ctx
def officer_password(ctx: Context, password_stdin: bool) -> None:
    """Change your own password."""
    actor = ctx.session_officer()
    new = (sys.stdin.readline().rstrip("\n") if password_stdin
           else click.prompt("new password", hide_input=True, confirmation_prompt=True))
    _change_password(ctx, actor, new)


@officer_group.command("list")
@JSON_FLAG
@pass_ctx
def officer_list(ctx: Context, as_json: bool) -> None:
    """Every officer account, its roles and state."""
    ctx.signed_in(tuple(officers.ROLES), action="officer list")
    with ctx.reader.connect() as conn:
        found = officers.list_all(conn)
    if as_json:
        _echo_json([{"id": o.officer_id, "name": o.name, "roles": sorted(o.roles), "disabled": o.disabled,
                     "locked_until": o.locked_until, "must_change_password": o.must_change_password}
                    for o in found])
        return
    for o in found:
        state = "disabled" if o.disabled else ("locked" if o.locked_until and o.locked_until > officers._now()
                                               else "active")
        click.echo(f"{o.officer_id}  {o.name}  roles={o.role_text}  {state}")


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


def _refuse_officer(ctx: Context, actor, action: str, why: Exception) -> None:
    """Refuse an officer's request (exit 2), in the audit chain first."""
    registry.record_refusal(ctx.engine, ctx.trail, actor, action, str(why))
    raise Refused(str(why)) from None


def _registry_call(ctx: Context, fn, *args, **kwargs):
    """Run a registry change (which audits itself) in one transaction; a refusal is audited too."""
    try:
        return registry.run_change(ctx.engine, ctx.trail, fn, *args, **kwargs)
    except (RegistryError, officers.OfficerError) as exc:
        raise Refused(str(exc)) from None


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _show_org(o: registry.Organisation, today: dt.date | None = None) -> None:
    today = today or dt.date.today()
    click.echo(f"{o.code}  {o.name}  kind={o.kind}  status={o.effective_status(today)}  "
               f"scopes={','.join(sorted(o.scopes)) or '-'}  expires={o.expires or '-'}")
    for p in o.pending:
        click.echo(f"  proposal {p.id} ({p.kind}) by {p.proposed_by}, awaiting a second officer: {p.summary()}")


def _show_proposal(p: registry.Proposal) -> None:
    click.echo(f"proposal {p.id} ({p.kind}) for {p.org_code or 'the trust list'} by {p.proposed_by}: {p.status}")
    click.echo(f"  {p.summary()}")
    if p.status == "pending":
        target = (f"cert approve {p.org_code}" if p.kind in registry.CERT_PROPOSALS else
                  f"org approve {p.org_code}" if p.org_code else "trust approve")
        click.echo(f"  a second officer approves it with: contactgate {target} --proposal {p.id}")


def _evidence_digests(paths: tuple[Path, ...]) -> list[dict]:
    import hashlib

    digests = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests.append({"name": path.name, "sha256": digest.hexdigest()})
    return digests


@org.command("add")
@click.argument("code")
@click.option("--name", required=True, help="The organisation's name.")
@click.option("--kind", required=True, type=click.Choice(registry.KINDS), help="What kind of organisation.")
@pass_ctx
def org_add(ctx: Context, code: str, name: str, kind: str) -> None:
    """Register an organisation under CODE (unique whatever its case)."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org add")
    _show_org(_registry_call(ctx, registry.add_org, code, name, kind, actor))


@org.command("accredit")
@click.argument("code")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(registry.SCOPES),
              help="What it may do (repeatable): push, query, shield.")
@click.option("--expires", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="When the accreditation ends (a future date, at most CONTACTGATE_MAX_ACCREDITATION_DAYS ahead).")
@click.option("--evidence", default=None, help="What the accreditation rests on (e.g. the agreement's reference).")
@click.option("--evidence-file", "evidence_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A document the accreditation rests on (repeatable): its SHA-256 is recorded.")
@OFFICER_FLAG
@pass_ctx
def org_accredit(ctx: Context, code, scopes, expires, evidence, evidence_files, named) -> None:
    """Propose accreditation, renewal or a change of scopes: a second officer approves it by its id."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org accredit", named=named)
    proposal = _registry_call(ctx, registry.propose_accreditation, code, list(scopes), expires.date(), actor,
                              evidence, dt.date.today(), evidence_files=_evidence_digests(evidence_files),
                              max_days=ctx.settings.max_accreditation_days)
    _show_proposal(proposal)


def _only_proposal(ctx: Context, code: str) -> int:
    """With no --proposal: refuse, showing what is pending, so the approver names what they saw."""
    with ctx.reader.connect() as conn:
        org = registry.get_org(conn, code)
    if org is None:
        _fail(f"no organisation with code {code!r}")
    if not org.pending:
        _fail(f"nothing to approve for {org.code} (status is {org.status})")
    shown = "; ".join(f"proposal {p.id} ({p.kind}) by {p.proposed_by}: {p.summary()}" for p in org.pending)
    _fail(f"name the proposal you approve with --proposal ID: {shown}")


@org.command("approve")
@click.argument("code")
@click.option("--proposal", "proposal_id", type=int, default=None,
              help="The id of the proposal approved (as `org show` prints it with what it does).")
@OFFICER_FLAG
@pass_ctx
def org_approve(ctx: Context, code: str, proposal_id: int | None, named) -> None:
    """Approve a proposal (accreditation, renewal, reinstatement): a different officer from the proposer."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org approve", named=named)
    if proposal_id is None:
        _only_proposal(ctx, code)
    _show_org(_registry_call(ctx, registry.approve, code, proposal_id, actor))


@org.command("decline")
@click.argument("code")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The id of the proposal declined.")
@click.option("--reason", required=True, help="Why it is declined (or withdrawn, by its proposer).")
@pass_ctx
def org_decline(ctx: Context, code: str, proposal_id: int, reason: str) -> None:
    """Decline a pending proposal, with a reason."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org decline")
    _show_org(_registry_call(ctx, registry.decline, code, proposal_id, actor, reason))


@org.command("suspend")
@click.argument("code")
@click.option("--reason", required=True, help="Why its traffic is stopped.")
@OFFICER_FLAG
@pass_ctx
def org_suspend(ctx: Context, code: str, reason: str, named) -> None:
    """Stop all of the organisation's traffic at once."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org suspend", named=named)
    _show_org(_registry_call(ctx, registry.suspend, code, actor, reason))


@org.command("reinstate")
@click.argument("code")
@click.option("--reason", required=True, help="Why its traffic may restart.")
@OFFICER_FLAG
@pass_ctx
def org_reinstate(ctx: Context, code: str, reason: str, named) -> None:
    """Propose restarting a suspended organisation's traffic (a second officer approves it)."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org reinstate", named=named)
    _show_proposal(_registry_call(ctx, registry.reinstate, code, actor, reason))


@org.command("revoke")
@click.argument("code")
@click.option("--reason", required=True, help="Why the organisation is ended.")
@pass_ctx
def org_revoke(ctx: Context, code: str, reason: str) -> None:
    """End an organisation for good: its traffic stops and its certificates are revoked."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org revoke")
    _show_org(_registry_call(ctx, registry.revoke_org, code, actor, reason))
    _publish_crl(ctx)


@org.command("check")
@click.argument("code")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The organisation's certificate (PEM).")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Its private key (PEM, unencrypted).")
@click.option("--url", default="https://127.0.0.1:8443", show_default=True, help="The gateway, as the organisation calls it.")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The CA that signed the gateway's server certificate (default: the home's gateway CA).")
@JSON_FLAG
@pass_ctx
def org_check(ctx: Context, code: str, cert_file: Path, key_file: Path, url: str, ca_file: Path | None,
              as_json: bool) -> None:
    """The onboarding check: a signed Ping with the organisation's certificate, reported stage by stage.

    Exit 0 when every stage passes (warnings allowed), 1 when one fails."""
    from gateway import onboarding

    ctx.signed_in(registry.ORGANISATION_ROLES, action="org check")
    stages = onboarding.check(ctx.engine, ctx.settings, code, cert_file, key_file, url,
                              ca_file or ctx.settings.layout.ca_cert, signing_keys.bundle_pem(ctx.settings.layout))
    if as_json:
        _echo_json([s.as_json() for s in stages])
    else:
        for s in stages:
            click.echo(f"[{s.status:^7}] {s.name}: {s.detail}" + (f"\n          fix: {s.fix}" if s.fix else ""))
    if not onboarding.passed(stages):
        sys.exit(1)


@org.command("list")
@click.option("--pending", is_flag=True, help="Only organisations with a proposal awaiting approval.")
@click.option("--expiring", "expiring_days", type=click.IntRange(min=0), default=None, metavar="DAYS",
              help="Only those whose accreditation or a certificate ends within DAYS (or has ended).")
@JSON_FLAG
@pass_ctx
def org_list(ctx: Context, pending: bool, expiring_days: int | None, as_json: bool) -> None:
    """Every organisation: status (expired once its date has passed), scopes, expiry, proposals."""
    ctx.signed_in(action="org list")
    today = dt.date.today()
    with ctx.reader.connect() as conn:
        found = registry.list_orgs(conn, pending=pending, expiring_days=expiring_days, today=today)
    if as_json:
        _echo_json([o.as_json(today) for o in found])
        return
    for o in found:
        _show_org(o, today)


@org.command("show")
@click.argument("code")
@JSON_FLAG
@pass_ctx
def org_show(ctx: Context, code: str, as_json: bool) -> None:
    """One organisation: status, scopes, expiry, proposals, certificates and its full history."""
    ctx.signed_in(action="org show")
    today = dt.date.today()
    with ctx.reader.connect() as conn:
        o = registry.get_org(conn, code)
        if o is None:
            _fail(f"no organisation with code {code!r}")
        certs = registry.list_certs(conn, o.code)
        past = registry.history(conn, o.code)
    if as_json:
        _echo_json({**o.as_json(today), "certificates": [c.as_json() for c in certs], "history": past})
        return
    _show_org(o, today)
    from gateway.audit.report import safe_text

    click.echo(f"  proposed by {o.proposed_by or '-'}, approved by {o.approved_by or '-'}"
               + (f", reason: {safe_text(o.status_reason)}" if o.status_reason else ""))
    if o.evidence:
        click.echo(f"  evidence: {safe_text(o.evidence)}")
    for c in certs:
        _show_cert(c)
    click.echo("  history:")
    for event in past:
        click.echo(f"    {event['at']}  {event['operation']:<16} {event['officer'] or 'operator':<14} "
                   f"{safe_text(event['detail'])}")


# ---- certificates --------------------------------------------------------------------------------

@main.group()
def cert() -> None:
    """Issue, register and revoke organisations' certificates."""


def _show_cert(c: registry.CertificateRecord) -> None:
    state = f"REVOKED {c.revoked_at:%Y-%m-%d} ({c.revoked_reason})" if c.revoked_at else "active"
    click.echo(f"  {c.fingerprint}  {c.org_code}  {c.subject}  until {c.not_after:%Y-%m-%d}  {state}")


@cert.command("issue")
@click.argument("code")
@click.option("--csr", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The organisation's certificate signing request (made with `contactgate csr` on its own machine).")
@click.option("--gateway-key", is_flag=True,
              help="For an organisation that cannot make a key: the gateway makes it when the proposal is "
                   "approved, in a bundle encrypted under a passphrase (never offered by the console).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, hidden=True,
              help="Retired: the approving officer writes the certificate (`cert approve --out`).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, hidden=True,
              help="Retired: the organisation makes its key (`contactgate csr`); the approving officer writes "
                   "the certificates (`cert approve --out-dir`).")
@pass_ctx
def cert_issue(ctx: Context, code: str, csr: Path | None, gateway_key: bool, out: Path | None,
               out_dir: Path | None) -> None:
    """Propose a certificate for an organisation, signed by the gateway CA once a second officer
    approves it (`cert approve`).

    The normal path is the organisation's own CSR (--csr): its key never leaves its machine. An
    organisation holding certificates already may hold several (rotation: the new one, then revoke
    the old); the approver is told how many it holds."""
    from gateway.trust import issuing

    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert issue")
    if out or out_dir:
        _fail("a certificate is made when a second officer approves the proposal: propose with "
              "`contactgate cert issue CODE --csr FILE` (or --gateway-key), then the approver runs "
              "`contactgate cert approve CODE --proposal ID --out-dir DIR`")
    if bool(csr) == gateway_key:
        _fail("give the organisation's CSR (--csr FILE, made with `contactgate csr` on its machine), or "
              "--gateway-key for an organisation that cannot make a key")
    with ctx.reader.connect() as conn:
        organisation = registry.get_org(conn, code)
    if organisation is None:
        _fail(f"no organisation with code {code!r}")
    try:
        payload = (issuing.gateway_key_payload() if gateway_key
                   else issuing.csr_payload(organisation, csr.read_bytes()))
    except issuing.IssueError as exc:
        _refuse_officer(ctx, actor, "cert issue", exc)
    _show_proposal(_registry_call(ctx, registry.propose_certificate, organisation.code, "cert_issue", payload, actor))


@cert.command("register")
@click.argument("code")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate (PEM).")
@pass_ctx
def cert_register(ctx: Context, code: str, cert_file: Path) -> None:
    """Propose binding a certificate issued by another trusted CA (a second officer approves it)."""
    from gateway.app import trust_anchor_files
    from gateway.trust import issuing

    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert register")
    try:
        payload = issuing.register_payload(cert_file.read_bytes(),
                                           pki.TrustAnchors.from_files(trust_anchor_files(ctx.settings)))
    except issuing.IssueError as exc:
        _refuse_officer(ctx, actor, "cert register", exc)
    _show_proposal(_registry_call(ctx, registry.propose_certificate, code, "cert_register", payload, actor))


@cert.command("approve")
@click.argument("code")
@click.option("--proposal", "proposal_id", type=int, required=True,
              help="The id of the certificate proposal approved (as `org show` prints it).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the certificate (PEM) here.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write cert.pem, ca.pem and gateway-signing.pem here (and, for a key made by the "
                   "gateway, bundle.p12).")
@click.option("--passphrase-stdin", is_flag=True,
              help="Key made by the gateway: read the bundle's passphrase from standard input instead "
                   "of having one made.")
@click.option("--force", is_flag=True, help="Replace files that already exist (never done otherwise).")
@pass_ctx
def cert_approve(ctx: Context, code: str, proposal_id: int, out: Path | None, out_dir: Path | None,
                 passphrase_stdin: bool, force: bool) -> None:
    """Approve a certificate proposal (a different officer from the proposer): the certificate is
    signed (or, for `cert register`, checked again) and bound to the organisation.

    Files are written before the certificate is bound and removed again if binding fails; a key
    made by the gateway exists only in bundle.p12, encrypted under a passphrase that is shown once
    and goes to the organisation by another channel than the bundle."""
    from gateway.app import trust_anchor_files
    from gateway.trust import issuing

    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert approve")
    if out and out_dir:
        _fail("use --out FILE or --out-dir DIR, not both")
    with ctx.reader.connect() as conn:
        proposal = registry.get_proposal(conn, proposal_id)
    gateway_key = bool(proposal and proposal.kind == "cert_issue" and proposal.payload.get("key") == "gateway")
    if gateway_key and not out_dir:
        _fail("this proposal has the gateway make the key: give --out-dir DIR for its encrypted bundle")
    passphrase = None
    if gateway_key:
        passphrase = click.get_text_stream("stdin").readline().rstrip("\r\n") if passphrase_stdin \
            else issuing.new_passphrase()
        if len(passphrase) < issuing.MIN_PASSPHRASE:
            _fail(f"the bundle's passphrase must have at least {issuing.MIN_PASSPHRASE} characters")
    make, made = issuing.made_on_approval(
        ctx.settings, anchors=pki.TrustAnchors.from_files(trust_anchor_files(ctx.settings)),
        gateway_key_allowed=True)
    written: list[Path] = []
    home = ctx.settings.layout.root

    def make_and_write(org, proposal):
        certificate = make(org, proposal)  # an IssueError refuses the approval, in its transaction
        issued = made["issued"]
        if out:
            outputs = {out: pki.cert_pem(certificate)}
        elif out_dir:
            outputs = {out_dir / name: data for name, data in issuing.public_files(ctx.settings, issued).items()}
            if issued.key is not None:
                outputs[out_dir / issuing.BUNDLE_NAME] = issuing.encrypted_bundle(ctx.settings, issued, org.code,
                                                                                  passphrase)
        else:
            outputs = {}
        existing = [str(p) for p in outputs if p.exists() or p.is_symlink()]
        if existing and not force:
            raise registry.RegistryError(
                f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: nothing was approved "
                f"(choose another --out-dir, or --force to replace them)")
        for path, data in outputs.items():
            private = path.name == issuing.BUNDLE_NAME or files.is_under(path, home)
            (pki.write_private if private else pki.write_public)(path, data)
            written.append(path)
        return certificate

    try:
        record = registry.run_change(ctx.engine, ctx.trail, registry.approve_certificate, code, proposal_id,
                                     actor, make=make_and_write)
    except (RegistryError, officers.OfficerError, issuing.IssueError) as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, issuing.IssueError):
            _refuse_officer(ctx, actor, "cert approve", exc)
        raise Refused(str(exc)) from None
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    _show_cert(record)
    if written:
        click.echo(f"wrote {', '.join(str(p) for p in written)}")
    elif not out:
        click.echo(pki.cert_pem(made["issued"].certificate).decode(), nl=False)
    if passphrase and not passphrase_stdin:
        click.echo(f"passphrase of {out_dir / issuing.BUNDLE_NAME} (shown once; give it to the organisation by "
                   f"another channel than the bundle, e.g. by telephone): {passphrase}")


@cert.command("decline")
@click.argument("code")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The id of the proposal declined.")
@click.option("--reason", required=True, help="Why it is declined (or withdrawn, by its proposer).")
@pass_ctx
def cert_decline(ctx: Context, code: str, proposal_id: int, reason: str) -> None:
    """Decline a pending certificate proposal, with a reason."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert decline")
    _show_org(_registry_call(ctx, registry.decline, code, proposal_id, actor, reason))


@cert.command("revoke")
@click.argument("fingerprint")
@click.option("--reason", required=True, help="Why it is revoked.")
@pass_ctx
def cert_revoke(ctx: Context, fingerprint: str, reason: str) -> None:
    """Revoke a certificate; the next message using it is refused."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert revoke")
    _show_cert(_registry_call(ctx, registry.revoke_cert, fingerprint, reason, actor))
    _publish_crl(ctx)


@cert.command("crl")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the CRL (PEM) here too (default: print it).")
@pass_ctx
def cert_crl(ctx: Context, out: Path | None) -> None:
    """Renew the gateway CA's CRL (run daily, and on hosts without the CA key copy it over); also GET /crl."""
    from gateway.trust import crl

    if not ctx.settings.layout.ca_key.exists():
        _fail(f"no CA key at {ctx.settings.layout.ca_key}: renew the CRL where officers issue certificates")
    pem = crl.publish(ctx.settings, ctx.engine)
    if out:
        pki.write_public(out, pem)
        click.echo(f"wrote {out} (valid until {crl.next_update(pem):%Y-%m-%d %H:%M}Z)")
    else:
        click.echo(pem.decode(), nl=False)


@cert.command("list")
@click.argument("code", required=False)
@click.option("--expiring", "expiring_days", type=click.IntRange(min=0), default=None, metavar="DAYS",
              help="Only active certificates ending within DAYS (or already ended).")
@JSON_FLAG
@pass_ctx
def cert_list(ctx: Context, code: str | None, expiring_days: int | None, as_json: bool) -> None:
    """Certificates, of one organisation (CODE) or of all."""
    ctx.signed_in(action="cert list")
    with ctx.reader.connect() as conn:
        found = registry.list_certs(conn, code, expiring_days=expiring_days)
        org = registry.get_org(conn, code) if code else None
        pending = [p for p in registry.list_proposals(conn, kinds=registry.CERT_PROPOSALS)
                   if not code or (org is not None and p.org_code == org.code)]
    if as_json:
        _echo_json([c.as_json() for c in found])
        return
    for c in found:
        _show_cert(c)
    for p in pending:
        click.echo(f"  proposal {p.id} ({p.kind}) for {p.org_code} by {p.proposed_by}, awaiting a second "
                   f"officer: {p.summary()}")


@main.group()
def trust() -> None:
    """Certificate authorities whose certificates may be registered."""


def _show_anchor(a) -> None:
    crl = f"CRL until {a.crl_next_update:%Y-%m-%d}" if a.crl_next_update else (
        "no CRL: its clients are refused at the handshake while other CAs have CRLs")
    kind = "gateway CA" if a.gateway_ca else "trusted CA"
    click.echo(f"{a.fingerprint}  {kind}  {a.subject}  until {a.not_after:%Y-%m-%d}  {crl}")


@trust.command("list")
@JSON_FLAG
@pass_ctx
def trust_list(ctx: Context, as_json: bool) -> None:
    """The trusted CAs: fingerprint, subject, expiry, CRL; and trust changes awaiting approval."""
    from gateway.trust import anchors

    ctx.signed_in(action="trust list")
    found = anchors.list_anchors(ctx.settings)
    with ctx.reader.connect() as conn:
        pending = registry.list_proposals(conn, kinds=registry.TRUST_PROPOSALS)
    if as_json:
        _echo_json({"anchors": [a.as_json() for a in found], "pending": [p.as_json() for p in pending]})
        return
    for a in found:
        _show_anchor(a)
    for p in pending:
        click.echo(f"  proposal {p.id} ({p.kind}) by {p.proposed_by}, awaiting a second senior officer: {p.summary()}")


@trust.command("add-ca")
@click.argument("pem", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--crl", "crl_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The CA's current CRL (PEM): without one, its clients are refused at the handshake.")
@pass_ctx
def trust_add_ca(ctx: Context, pem: Path, crl_file: Path | None) -> None:
    """Propose trusting a CA (a senior officer; a second senior officer approves with `trust approve`)."""
    from gateway.trust import anchors

    actor = ctx.signed_in(registry.TRUST_ROLES, action="trust add-ca")
    try:
        payload = anchors.add_payload(pem.read_bytes(), crl_file.read_bytes() if crl_file else None)
    except anchors.TrustError as exc:
        _refuse_officer(ctx, actor, "trust add-ca", exc)
    _show_proposal(_registry_call(ctx, registry.propose_trust_change, actor, "trust_add", payload))


@trust.command("remove")
@click.argument("fingerprint")
@pass_ctx
def trust_remove(ctx: Context, fingerprint: str) -> None:
    """Propose removing a CA from the trust list (a second senior officer approves)."""
    from gateway.trust import anchors

    actor = ctx.signed_in(registry.TRUST_ROLES, action="trust remove")
    try:
        payload = anchors.remove_payload(ctx.settings, fingerprint)
    except anchors.TrustError as exc:
        _refuse_officer(ctx, actor, "trust remove", exc)
    _show_proposal(_registry_call(ctx, registry.propose_trust_change, actor, "trust_remove", payload))


@trust.command("approve")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The trust change approved.")
@pass_ctx
def trust_approve(ctx: Context, proposal_id: int) -> None:
    """Approve a trust change (a second senior officer): the running gateway follows within a second."""
    from gateway.trust import anchors

    actor = ctx.signed_in(registry.TRUST_ROLES, action="trust approve")
    try:
        with anchors.approving(ctx.settings, ctx.engine) as apply:  # the database first, then the files
            decided = _registry_call(ctx, registry.decide_trust_change, proposal_id, actor, approve=True,
                                     apply=apply)
    except anchors.TrustFilesNotChanged as exc:
        raise CannotRun(str(exc)) from None
    _show_proposal(decided)


@trust.command("decline")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The trust change declined.")
@click.option("--reason", required=True, help="Why.")
@pass_ctx
def trust_decline(ctx: Context, proposal_id: int, reason: str) -> None:
    """Decline a trust change, with a reason."""
    actor = ctx.signed_in(registry.TRUST_ROLES, action="trust decline")
    _show_proposal(_registry_call(ctx, registry.decide_trust_change, proposal_id, actor, approve=False,
                                  reason=reason))


# ---- the gateway's response-signing key ---------------------------------------------------------

@main.group("signing-key")
def signing_key() -> None:
    """Rotate the key the gateway signs its answers with, with a grace period (a senior officer).

    rotate (stage a new key; clients pin the bundle of both) -> promote (sign with the new key,
    after the grace period; reload the gateway) -> retire (drop the old certificate)."""


KEY_ROLES = ("senior_officer",)


def _key_officer(ctx: Context, action: str) -> officers.Officer:
    """The home's keys need its files and a senior officer's session as well: whoever can read the
    home still acts as, and is audited as, an officer (a refusal is audited too)."""
    return ctx.signed_in(KEY_ROLES, action=action)


def _key_entry(actor: officers.Officer, operation: str, detail: str) -> audit.Entry:
    return audit.Entry(operation=operation, outcome="done", user_id=actor.officer_id, role=actor.role_text,
                       detail=detail)


def _signing_step(ctx: Context, actor: officers.Officer, detail: str, step, *args, **kwargs):
    """Run one rotation step inside the transaction that audits it with its officer (a step that
    fails writes no entry); a step that cannot be taken now exits 2."""
    trail = ctx.trail
    try:
        with ctx.engine.begin() as conn:
            result = step(ctx.settings.layout, *args, **kwargs)
            certificate = result if isinstance(result, x509.Certificate) else result.current
            trail.append(conn, _key_entry(actor, "signing_key", f"{detail}: {pki.fingerprint(certificate)}"))
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
    _key_officer(ctx, "signing-key status")
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
    actor = _key_officer(ctx, "signing-key rotate")
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
    actor = _key_officer(ctx, "signing-key promote")
    keys = _signing_step(ctx, actor, "staged signing key promoted", signing_keys.promote,
                         min_grace=dt.timedelta(days=grace_days))
    _show_signing("current", keys.current)
    _show_signing("previous", keys.previous)
    click.echo("next: reload the gateway so that it signs with the new key")


@signing_key.command("discard")
@pass_ctx
def signing_key_discard(ctx: Context) -> None:
    """Delete a staged key that has not been promoted."""
    actor = _key_officer(ctx, "signing-key discard")
    _show_signing("discarded", _signing_step(ctx, actor, "staged signing key discarded", signing_keys.discard_next))


@signing_key.command("retire")
@pass_ctx
def signing_key_retire(ctx: Context) -> None:
    """Stop publishing the certificate of the key before the current one."""
    actor = _key_officer(ctx, "signing-key retire")
    _show_signing("retired", _signing_step(ctx, actor, "previous signing certificate retired",
                                           signing_keys.retire_previous))


@signing_key.command("bundle")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the bundle here (default: standard output).")
@pass_ctx
def signing_key_bundle(ctx: Context, out: Path | None) -> None:
    """The certificates clients should pin now (current, staged, previous), as PEM."""
    _key_officer(ctx, "signing-key bundle")
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
    """The data keys that seal identifying values at rest (keys/data-keys.json in the home; a senior officer).

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
    _key_officer(ctx, "keys status")
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

    actor = _key_officer(ctx, "keys rotate")
    path = _keyring_file(ctx)
    ring = vault.read_keyring(path)
    trail = ctx.trail
    if not resume:
        ring = ring.with_new_active_key()
        vault.write_keyring(path, ring)
        with ctx.engine.begin() as conn:
            trail.append(conn, _key_entry(actor, "keys", f"data key {ring.active} added, active"))
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
        trail.append(conn, _key_entry(actor, "keys", f"{total} value(s) re-sealed under data key {ring.active}"))
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
    actor = _key_officer(ctx, "keys retire")
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
        ctx.trail.append(conn, _key_entry(actor, "keys", f"data key {key_id} retired"))
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

@main.command(needs_home=False)
@click.option("--bind", default="127.0.0.1:8444", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@pass_ctx
def console(ctx: Context, bind: str, workers: int) -> None:
    """Run the officers' web console (HTTPS with the gateway's server certificate).

    For the officers' network, not for connecting systems: officers sign in with their password and
    a TOTP code, as with `contactgate login`. Served by the same front as `serve`, bounded by the
    same settings (CONTACTGATE_HANDSHAKE_TIMEOUT, _HEADER_TIMEOUT, _BODY_TIMEOUT, _KEEPALIVE_TIMEOUT,
    _MAX_CONNECTIONS, _MAX_CONNECTIONS_PER_ADDRESS, _THREADS). Refuses to start if the home is open
    to other users."""
    from gateway.console.server import serve_console

    ctx.preflight_serving()
    click.echo(f"console on https://{bind}/ (sign in with an officer account)")
    serve_console(ctx.settings, bind, workers)


@main.command(needs_home=False)  # its own preflight: the permissions are checked before the database is opened
@click.option("--bind", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Worker processes.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Request threads per worker [default: $CONTACTGATE_THREADS or 4].")
@click.option("--behind-proxy", is_flag=True,
              help="Plain HTTP on --bind (a private address) for nginx in front: nginx does the mutual TLS "
                   "and forwards the client certificate in Client-Cert (RFC 9440), believed only from "
                   "$CONTACTGATE_TRUSTED_PROXIES (deploy/nginx).")
@click.option("--metrics-bind", default="127.0.0.1:9464", show_default=True,
              help="HOST:PORT for /metrics (Prometheus), /readyz and /healthz, without a client certificate: "
                   "keep it on loopback or a monitoring network. `none` serves no metrics.")
@pass_ctx
def serve(ctx: Context, bind: str, workers: int, threads: int | None, behind_proxy: bool, metrics_bind: str) -> None:
    """Run the gateway with mutual TLS (or behind nginx, which does it: --behind-proxy).

    Refuses to start (exit 2) if the home, or anything in it, is open to other users."""
    from gateway.server import serve as run_server

    if behind_proxy and not ctx.settings.trusted_proxies:
        _fail("--behind-proxy needs CONTACTGATE_TRUSTED_PROXIES: the address(es) of the proxy whose "
              "Client-Cert header is believed (e.g. 127.0.0.1)")
    metrics_at = None
    if metrics_bind.lower() != "none":
        host, _, port = metrics_bind.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            _fail(f"--metrics-bind must be HOST:PORT (e.g. 127.0.0.1:9464) or none, not {metrics_bind!r}")
        metrics_at = (host.strip("[]"), int(port))
    ctx.preflight_serving()
    ctx.check_redis_reachable()
    from gateway.metrics import MetricsPortUnavailable

    try:
        run_server(ctx.settings, bind, workers, threads, behind_proxy=behind_proxy, metrics_bind=metrics_at)
    except MetricsPortUnavailable as exc:
        raise CannotRun(str(exc)) from None


# ---- audit ---------------------------------------------------------------------------------------

@main.group("audit")
def audit_group() -> None:
    """Verify the audit chain and report who accessed what."""


@audit_group.command("verify", needs_home=False)  # the database chain checks the home itself (below)
@click.option("--file", "export_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Verify an export (from `audit export`) offline instead of the database.")
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --file: the gateway's signing certificate(s), e.g. gateway-signing.pem.")
@click.pass_context
def audit_verify(click_ctx: click.Context, export_file: Path | None, cert_file: Path | None) -> None:
    """Check the whole chain: exit 0 intact, 1 tampering found (naming the first bad entry), 3 could
    not check (database, key or files unavailable), 2 usage.

    Each successful run records the head in $CONTACTGATE_HOME/audit/checkpoints, signed with the
    gateway's signing key; later runs also check that the chain still holds it. Run it regularly
    (cron can tell tampering from an outage by the exit code).

    With --file EXPORT --cert gateway-signing.pem: check an export with the signing certificate
    only (no home, key or database needed), with the same exit codes."""
    if export_file is not None or cert_file is not None:
        _verify_export(export_file, cert_file)
        return
    ctx: Context = click_ctx.obj
    ctx.preflight()
    try:
        trail = ctx.trail
    except FileNotFoundError as exc:
        raise CannotRun(f"could not check: {exc}") from None
    result = trail.verify(ctx.engine)
    if result.ok:
        click.echo(f"audit chain intact: {result.entries} entries")
        return
    where = f"at entry {result.first_bad_seq}" if result.first_bad_seq is not None else "outside the database"
    click.echo(f"audit chain BROKEN {where}: {result.problem} ({result.entries} entries verified before it)")
    sys.exit(1)


def _verify_export(export_file: Path | None, cert_file: Path | None) -> None:
    from gateway.audit import export

    if export_file is None or cert_file is None:
        _fail("--file EXPORT and --cert gateway-signing.pem go together")
    try:
        certificates = pki.load_certs_pem(cert_file.read_bytes())
        data = export_file.read_bytes()
    except OSError as exc:
        raise CannotRun(f"could not check: {exc.strerror or exc}: {exc.filename}") from None
    except ValueError:
        raise CannotRun(f"could not check: {cert_file} holds no PEM certificate") from None
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    result = export.verify_document(document, certificates)
    if result.ok:
        click.echo(result.summary)
        return
    where = f" at entry {result.first_bad_seq}" if result.first_bad_seq is not None else ""
    click.echo(f"export NOT intact{where}: {result.problem} ({result.entries} entries checked before it)")
    sys.exit(1)


@audit_group.command("export")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), required=True, metavar="YYYY-MM-DD",
              help="The entries from this day (UTC) on.")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="...up to the start of this day (UTC) [default: all].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write (readable by its owner only: it names children).")
@click.option("--format", "fmt", type=click.Choice(["native", "fhir"]), default="native", show_default=True,
              help="native (verified offline by `audit verify --file`) or fhir (a FHIR R4 Bundle of "
                   "AuditEvent resources, for an audit repository).")
@click.option("--force", is_flag=True, help="Write over an existing file.")
@pass_ctx
def audit_export(ctx: Context, since, until, out: Path, fmt: str, force: bool) -> None:
    """Export the entries of a period with their chain links and the gateway's signed checkpoints,
    after verifying the chain (an auditor's command). A holder of gateway-signing.pem verifies it
    with `contactgate audit verify --file FILE --cert gateway-signing.pem`."""
    from gateway.audit import export

    actor = ctx.signed_in(("auditor",), action="audit export")
    if (out.exists() or out.is_symlink()) and not force:
        _fail(f"{out} already exists: nothing was exported (--force to write over it)")
    since = since.replace(tzinfo=dt.timezone.utc)
    until = until.replace(tzinfo=dt.timezone.utc) if until else None
    try:
        trail = ctx.trail
    except FileNotFoundError as exc:
        raise CannotRun(f"could not export: {exc}") from None
    result = trail.verify(ctx.engine)
    if not result.ok:
        click.echo(f"audit chain BROKEN at entry {result.first_bad_seq}: {result.problem}: nothing was exported")
        sys.exit(1)
    signer = trail.checkpoint_signer()
    if signer is None:
        raise CannotRun("could not export: no signing key in the home (run `contactgate init`)")
    try:
        document = export.build(ctx.engine, signer, ctx.settings.layout.audit_checkpoints, result.entries,
                                since, until)
    except export.ExportError as exc:
        _fail(str(exc))
    body = document if fmt == "native" else export.to_fhir(document)
    data = json.dumps(body, ensure_ascii=True, indent=1).encode() + b"\n"
    claims = document["export"]["claims"]
    with ctx.engine.begin() as conn:  # no audit, no export
        trail.append(conn, audit.Entry(operation="audit.export", outcome="done", user_id=actor.officer_id,
                                       role=actor.role_text, detail=(
            f"{fmt} export of entries {claims['first_seq']}..{claims['last_seq']} ({claims['count']}), "
            f"sha256 {export.digest_of(data)}")))
    files.write_private(out, data)
    click.echo(f"exported {claims['count']} entries (#{claims['first_seq']}..#{claims['last_seq']}) to {out}"
               + (f"; verify with `contactgate audit verify --file {out} --cert gateway-signing.pem`"
                  if fmt == "native" else ""))


@audit_group.command("report")
@click.option("--child", "child_id", default=None, help="Who accessed this child's record (any spelling of its id).")
@click.option("--user", "user", default=None, metavar="ORG:USER", help="What this user accessed.")
@click.option("--org", "org_code", default=None, metavar="CODE", help="Everything of one organisation.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="Only entries from this day (UTC) on.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="table (for people: every control or direction character shown escaped), csv or json (one object a line).")
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@pass_ctx
def audit_report(ctx: Context, child_id: str | None, user: str | None, org_code: str | None, since, fmt: str,
                 as_json: bool) -> None:
    """Who accessed what, when, why, and what was disclosed (an auditor's command)."""
    from gateway.audit import report
    from gateway.index import ids

    actor = ctx.signed_in(("auditor",), action="audit report")
    if sum(bool(x) for x in (child_id, user, org_code)) != 1:
        _fail("give exactly one of --child ID, --user ORG:USER or --org CODE")
    since = since.replace(tzinfo=dt.timezone.utc) if since else None
    with ctx.engine.begin() as conn:  # the look-up is audited with it, as in the console
        if child_id:
            wanted = ids.normalise(child_id)
            if wanted is None:
                _fail("not a child id (16 characters with a check character, e.g. 7K2M-9XD4-T1BZ-R8Q3)")
            rows = audit.report_for_child(conn, wanted, since)
        elif user:
            code, _, user_id = user.partition(":")
            if not user_id or not code:
                _fail("--user takes ORG:USER")
            org = registry.get_org(conn, code.strip(), with_pending=False)
            rows = audit.report_for_user(conn, org.code if org else code.strip(), user_id, since)
        else:
            org = registry.get_org(conn, org_code.strip(), with_pending=False)
            if org is None:
                _fail(f"no organisation with code {report.safe_text(org_code)!r}")
            rows = audit.report_for_org(conn, org.code, since)
        ctx.trail.append(conn, audit.Entry(
            operation="audit.report", outcome="done", user_id=actor.officer_id, role=actor.role_text,
            child_ids=[wanted] if child_id and rows else [],  # a child's report is access to who saw the child
            detail=f"{'child' if child_id else 'user' if user else 'organisation'} report: {len(rows)} entries"
                   + ("" if child_id else f" for {user or org_code}")))
    click.echo(report.render(rows, "json" if as_json else fmt), nl=False)


@audit_group.command("review")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), required=True, metavar="YYYY-MM-DD",
              help="Review the entries from this day (UTC) on.")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="...up to the start of this day (UTC) [default: now].")
@click.option("--rule", "rules", multiple=True, type=click.Choice(["volume", "uninvolved", "fishing", "out_of_hours",
              "shielded", "refusals", "reason_reuse", "approvals", "additional_certificate",
              "identifier_probing"]),
              help="Only this rule (repeatable) [default: all].")
@click.option("--mark", "mark_id", default=None, metavar="FINDING", help="Mark this finding reviewed (needs --note).")
@click.option("--note", default=None, help="What the review found (with --mark).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a finding.")
@pass_ctx
def audit_review(ctx: Context, since, until, rules: tuple[str, ...], mark_id: str | None, note: str | None,
                 as_json: bool) -> None:
    """Find misuse: run the review rules over the trail and list the findings with their evidence
    (an auditor's command; the rules and their thresholds, in $CONTACTGATE_HOME/review.json, are in
    the README). A finding marked reviewed shows who reviewed it and the note; new evidence makes a
    new finding. Each run and each mark is an entry in the audit chain."""
    from gateway.audit import report, review

    actor = ctx.signed_in(("auditor",), action="audit review")
    if bool(mark_id) != bool(note and note.strip()):
        _fail("--mark FINDING and --note TEXT go together")
    try:
        thresholds = review.Thresholds.load(ctx.settings.layout.review_file)
    except review.ReviewConfigError as exc:
        _fail(str(exc))
    since = since.replace(tzinfo=dt.timezone.utc)
    until = until.replace(tzinfo=dt.timezone.utc) if until else None
    if until is not None and until <= since:
        _fail("--until must be after --since")
    with ctx.engine.begin() as conn:
        findings = review.run(conn, since, thresholds, until=until, rules=rules or review.RULES)
        if mark_id:
            finding = next((f for f in findings if f.id == mark_id.strip().lower()), None)
            if finding is None:
                _fail(f"no finding {report.safe_text(mark_id)!r} in this review (run it with the same --since)")
            review.mark_reviewed(conn, ctx.trail, finding, actor.officer_id, actor.role_text, note.strip())
            click.echo(f"finding {finding.id} marked reviewed")
            return
        ctx.trail.append(conn, audit.Entry(operation="audit.review", outcome="done", user_id=actor.officer_id,
                                           role=actor.role_text, detail=f"since {since:%Y-%m-%d}"
                                           f"{f' until {until:%Y-%m-%d}' if until else ''}: {len(findings)} findings"))
    if as_json:
        for finding in findings:
            click.echo(json.dumps(finding.as_dict(), ensure_ascii=True))
        return
    if not findings:
        click.echo("no findings")
    for finding in findings:
        mark = (f"reviewed by {report.safe_text(finding.reviewed['by'])} at {finding.reviewed['at']}: "
                f"{report.safe_text(finding.reviewed['note'])}" if finding.reviewed else "NOT REVIEWED")
        shown = " ".join(f"#{seq}" for seq in finding.evidence[:20]) + (" ..." if finding.count > 20 else "")
        click.echo(f"{finding.id}  {finding.rule}  {report.safe_text(finding.subject)}  "
                   f"{report.safe_text(finding.summary)}\n    {mark}\n    evidence ({finding.count}): {shown}")


# ---- the data-quality review queue ---------------------------------------------------------------

@main.group()
def review() -> None:
    """Work the data-quality review queue: pairs of children that may be one child."""


def _review_call(ctx: Context, actor, fn, *args):
    """Run a review action (which audits itself) in one transaction, as ``actor``; a refusal is
    audited too (officer.refused), as in the console."""
    from gateway.index.review import ReviewError

    try:
        with ctx.engine.begin() as conn:
            return fn(conn, ctx.trail, *args, actor.officer_id, dt.datetime.now(dt.timezone.utc))
    except ReviewError as exc:
        registry.record_refusal(ctx.engine, ctx.trail, actor, f"review {fn.__name__}", str(exc))
        raise Refused(str(exc)) from None


@review.command("list")
@click.option("--status", type=click.Choice(["open", "linked", "distinct", "merged", "all"]), default="open",
              show_default=True, help="Which entries.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def review_list(ctx: Context, status: str, limit: int, as_json: bool) -> None:
    """Entries in the queue, oldest first."""
    officer = ctx.signed_in(("data_quality",), action="review list")
    from gateway.index import review as queue

    with ctx.reader.connect() as conn:
        entries = queue.list_entries(conn, None if status == "all" else status, limit, officer_roles=officer.roles,
                                     shield_roles=ctx.settings.review_shield_roles)
    for e in entries:
        if as_json:
            click.echo(json.dumps(e, sort_keys=True))
        else:
            score = "withheld" if e["score"] is None else f"{e['score']:.3f}"  # None: a child is shielded
            click.echo(f"#{e['id']}  {e['status']:<8}  {e['child_id']} ~ {e['candidate_child_id']}  "
                       f"score={score}  from {e['org']}:{e['source_record_id']}  {e['created_at']}")
    if not entries and not as_json:
        click.echo("no entries")


@review.command("show")
@click.argument("review_id", type=int)
@OFFICER_FLAG
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def review_show(ctx: Context, review_id: int, named, as_json: bool) -> None:
    """The two records side by side, with the field agreements and the score."""
    officer = ctx.signed_in(("data_quality",), action="review show", named=named)
    from gateway.index import review as queue

    try:
        with ctx.engine.begin() as conn:
            entry = queue.show(conn, ctx.trail, review_id, officer.officer_id, officer_roles=officer.roles,
                               shield_roles=ctx.settings.review_shield_roles)
    except queue.ReviewError as exc:
        raise Refused(str(exc)) from None
    if as_json:
        click.echo(json.dumps(entry, sort_keys=True, default=str))
        return
    if entry["location_withheld"]:  # no number: each would say whether the withheld addresses agree
        score = f"score withheld (model {entry['model_version']})"
    else:
        score = (f"score {entry['score']:.4f} (model {entry['model_version']}; "
                 f"now {entry['comparison_now']['probability']:.4f})")
    click.echo(f"review #{entry['id']}  {entry['status']}  {score}  "
               f"sent by {entry['org']}:{entry['source_record_id']} at {entry['created_at']}")
    left, right = entry["stored_as"], entry["candidate"]
    rows = [("child id", left["child_id"], right["child_id"])]
    for name, pick in queue.DISPLAY_FIELDS:
        rows.append((name, pick(left["record"]), pick(right["record"])))
    width = max(len(str(a)) for _, a, _ in rows) + 2
    levels = entry["comparison_now"]["levels"]
    weights = entry["comparison_now"].get("weights")  # absent when the location is withheld
    for name, a, b in rows:
        click.echo(f"{name:<16} {str(a):<{width}} {b}")
    click.echo("agreement: " + ", ".join(f"{f}={levels[f]}" + ("" if weights is None else f" ({weights.get(f, 0):+.1f})")
                                         for f in sorted(levels)))
    if entry["comparison_now"]["identifiers"]:
        click.echo(f"NHS / pupil numbers: {entry['comparison_now']['identifiers']}")
    if entry["comparison_now"]["twins"]:
        click.echo("looks like twins or siblings: never linked automatically")
    if entry["location_withheld"]:
        click.echo("a child of this pair is shielded: the location of both is withheld, and with it every "
                   "weight and score (each would say whether their addresses agree)")


@review.command("link")
@click.argument("review_id", type=int)
@OFFICER_FLAG
@pass_ctx
def review_link(ctx: Context, review_id: int, named) -> None:
    """The pair are one child: the record held for review joins the existing child."""
    actor = ctx.signed_in(("data_quality",), action="review link", named=named)
    from gateway.index import review as queue

    merge_id = _review_call(ctx, actor, queue.link, review_id)
    click.echo(f"review #{review_id} linked (merge {merge_id}; undo with `contactgate review unmerge {merge_id}`)")


@review.command("distinct")
@click.argument("review_id", type=int)
@OFFICER_FLAG
@pass_ctx
def review_distinct(ctx: Context, review_id: int, named) -> None:
    """The pair are different children: never linked or queued again."""
    actor = ctx.signed_in(("data_quality",), action="review distinct", named=named)
    from gateway.index import review as queue

    _review_call(ctx, actor, queue.distinct, review_id)
    click.echo(f"review #{review_id}: recorded as different children")


@review.command("merge")
@click.argument("survivor")
@click.argument("merged")
@OFFICER_FLAG
@pass_ctx
def review_merge(ctx: Context, survivor: str, merged: str, named) -> None:
    """Merge child MERGED into SURVIVOR (MERGED's id then resolves to SURVIVOR)."""
    actor = ctx.signed_in(("data_quality",), action="review merge", named=named)
    from gateway.index import review as queue

    merge_id = _review_call(ctx, actor, queue.merge, survivor, merged)
    click.echo(f"merge {merge_id}: {merged} merged into {survivor} "
               f"(undo with `contactgate review unmerge {merge_id}`)")


@review.command("unmerge")
@click.argument("merge_id", type=int)
@OFFICER_FLAG
@pass_ctx
def review_unmerge(ctx: Context, merge_id: int, named) -> None:
    """Undo a merge: both children as they were, each with its own records and involvements."""
    actor = ctx.signed_in(("data_quality",), action="review unmerge", named=named)
    from gateway.index import review as queue

    _review_call(ctx, actor, queue.unmerge, merge_id)
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
@OFFICER_FLAG
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def retention_show(ctx: Context, child_id: str, named, as_json: bool) -> None:
    """A child's retention state (live, archived or purged) and dates; for an archived child still
    in its viewing period, its record and involvements."""
    officer = ctx.signed_in(("data_quality",), action="retention show", named=named)
    from gateway.index import retention

    with ctx.engine.begin() as conn:  # a shielded child's location as the review queue shows it
        state = retention.show(conn, ctx.trail, child_id, officer.officer_id,
                               retention.Policy.from_settings(ctx.settings), officer_roles=officer.roles,
                               shield_roles=ctx.settings.review_shield_roles)
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
        from gateway.index.review import DISPLAY_FIELDS

        withheld = state.get("location_withheld")
        for name, pick in DISPLAY_FIELDS:
            shown = "withheld: the child is shielded" if withheld and name == "address" else pick(state["record"])
            click.echo(f"  {name:<16} {shown}")
        death = (state["record"].get("identity") or {}).get("date_of_death")
        if death:
            click.echo(f"  {'date of death':<16} {death}")
        for inv in state["involvements"]:
            click.echo(f"  involvement: {inv['org']} {inv['service']} from {inv['start']}"
                       + (f" to {inv['end']}" if inv["end"] else "")
                       + (f", {inv['practitioner_name']}" if inv["practitioner_name"] else ""))
        if withheld:
            click.echo("  the child is shielded: the address, settings, carers' and practitioners' contact "
                       "details are withheld (CONTACTGATE_REVIEW_SHIELD_ROLES)")


if __name__ == "__main__":
    main()
