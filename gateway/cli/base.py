"""What every `contactgate` command shares: exit codes and the one line said about an error, the
state of one invocation (`Context`: settings and connections made on first use, the preflight, the
signed-in officer), and the command classes that run the preflight before a command.

Exit codes: 0 done, 1 a check found a problem (`audit verify`, `migrate --check`), 2 usage or
refused (a bad option or setting, an officer's request the registry refuses, a loose home for
`serve`), 3 could not run (no home, database unreachable or not at the schema head, a file that
cannot be read or written, or anything unexpected). Whatever goes wrong is one line on stderr that
says what to do; a traceback only with CONTACTGATE_DEBUG=1.

Commands are made with `command()` and `group()` (and a group's own `.command()`), so every command
gets the same preflight: before it runs, the home must exist and the database must be reachable
and at the newest schema revision (`needs_home=False` for the few commands that make or repair
those, `init`, `migrate`, `demo`, and for `serve`, which checks the home's permissions before it
opens the database).
"""

from __future__ import annotations

import json
import os
import traceback
from functools import cached_property

import click

from gateway import audit, officers
from gateway.config import Settings, SettingError, safe_url
from gateway.db import make_engine, reader
from gateway.home import HomeError, permission_problems, sqlite_database_path
from gateway.trust import registry

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
        from gateway.index import linkage_home

        from gateway.index import precedence

        linkage_home.configure(self.settings.layout.root)  # review commands score with the model in use
        try:  # a merge or a settled conflict derives what is shown by the home's precedence, as the gateway does
            rules = precedence.load(self.settings.precedence_path)
        except precedence.PrecedenceFileError as exc:
            raise CannotRun(str(exc)) from None
        return precedence.attach(make_engine(self.settings.database_url, keys=self.settings.layout.data_keys), rules)

    @property
    def trail(self) -> audit.AuditTrail:
        return audit.AuditTrail.of_home(self.settings.layout, copies=self.settings.checkpoint_copies)

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
                fail(f"--officer {named!r} is not the officer signed in ({actor.officer_id}); the acting "
                      f"officer is whoever is signed in (the flag is retired)")
        if actor.must_change_password:
            fail("the password must be changed first: run `contactgate officer password`")
        if not actor.holds(*roles):
            why = f"{action} needs the role {' or '.join(roles)}; {actor.officer_id} holds {actor.role_text}"
            registry.record_refusal(self.engine, self.trail, actor, action, why)
            fail(why)
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
        self.check_token()
        self.require_schema_at_head()

    def check_token(self) -> None:
        """With keys in a PKCS#11 token (gateway.security.hsm, docs/operations.md "Keys in a hardware
        security module"): the token is there, takes the PIN, and holds the keys named, or nothing is
        served (exit 3; a setting missing or contradictory: exit 2). Its session is closed before
        gunicorn forks the workers, which open their own."""
        from gateway.security import hsm, vault
        from gateway.trust import signing_keys

        try:
            cfg = hsm.config()
        except hsm.HsmError as exc:
            raise Refused(str(exc)) from None
        try:  # the home records its signing key in a token the environment does not name
            signing_keys.token_config(self.settings.layout)
        except hsm.HsmError as exc:
            raise CannotRun(f"refusing to serve: {exc}") from None
        if cfg is None:
            return
        try:
            problem = hsm.probe(cfg)
            if problem is None and cfg.signing_label:
                signing_keys.token_key(self.settings.layout)
            if problem is None and cfg.kek_label:  # from the environment too: in clear, refused
                env = os.environ.get(vault.ENV_VAR)
                vault.keyring_from_env(env) if env else vault.read_keyring(self.settings.layout.data_keys)
        except (hsm.HsmError, vault.KeyringError) as exc:
            problem = str(exc)
        finally:
            hsm.release()
        if problem is not None:
            raise CannotRun(f"refusing to serve: the hardware security module: {problem}")

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
        from gateway.store.redis_client import client_from_url

        client = client_from_url(url, timeout_s=3)
        try:
            client.ping()
        finally:
            client.close()

    def warn_if_redis_unreachable(self) -> None:
        """`serve` starts without Redis (each worker counts its own share of the limits until Redis
        answers, gateway.store.redis_store), so a node restarted during an outage still serves; it
        says so, as /readyz and contactgate_redis_up do."""
        import redis

        try:
            self.check_redis_reachable()
        except redis.RedisError as exc:
            click.echo(f"warning: cannot reach Redis ({_one_line(exc)}): serving in degraded mode, each worker "
                       "counting its share of the rate limits until Redis answers (docs/operations.md, "
                       "section 5); check CONTACTGATE_REDIS_URL", err=True)


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


def fail(message: str) -> None:
    raise Refused(message)


def command(name: str, **attrs):
    """A `contactgate` command (``needs_home=False`` for one that runs without an initialised home)."""
    return click.command(name, cls=Command, **attrs)


def group(name: str, **attrs):
    """A `contactgate` command group; its ``.command()`` makes `Command`s."""
    return click.group(name, cls=CommandGroup, **attrs)


class MainGroup(CommandGroup):
    """`contactgate`: the gateway's own commands, and commands other installed distributions add
    under the entry-point group ``contactgate.commands`` (`push` from the connecting organisation's
    side, `demo`). Those are found only when asked for, so a gateway command pays nothing for them.
    Only `contactgate` itself offers them: its groups are plain CommandGroups (``org push`` is not a
    command)."""

    group_class = CommandGroup

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(added_commands()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is None and name in added_commands():
            found = added_commands()[name].load()
        return found


ADDED_COMMANDS = "contactgate.commands"


def added_commands() -> dict:
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=ADDED_COMMANDS)}


def local_origin() -> str:
    """Where a command's audit entries say it came from: this machine's account that ran it (its
    real uid, not $USER: gateway.officers.local_source)."""
    return officers.local_source()


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))

