"""The command line as an operator meets it: the real `contactgate` script in a subprocess, with a
clean environment. No traceback, ever; one line saying what is wrong and what to do; nothing created
by a command that could not run; exit codes 0 done, 1 a check found a problem, 2 usage or refused,
3 could not run. On SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import click
from click.testing import CliRunner
import pytest
from sqlalchemy import create_engine, inspect

from gateway.cli import main
from gateway.migrations import head_revision
from gateway.trust import pki
from tests.gateway.cli_runner import (CONTACTGATE, SETPRIV, Run, clean_env, contactgate, init_and_sign_in, invoke,
                                      tree)
from tests.support import postgres_database

BACKENDS = ["sqlite", "postgresql"]

UNREACHABLE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def _commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    """Every command reachable from `contactgate`, as its path of names."""
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, path)
        else:
            yield path, command


def _future() -> str:
    return (dt.date.today() + dt.timedelta(days=100)).isoformat()


# Arguments that get each command past click's own checks, so that it reaches the point where it
# needs the home or the database. {material} is a directory of real PEM files outside the home;
# {out} is inside the workspace that must stay untouched.
HEAD = head_revision()  # the newest schema revision

SAMPLE_ARGS: dict[str, list[str]] = {
    "audit report": ["--child", "CHILD"],
    "audit verify": [],
    "audit review": ["--since", "2026-01-01"],
    "audit export": ["--since", "2026-01-01", "--out", "{out}/export.json"],
    "cert issue": ["LA", "--csr", "{material}/request.csr"],
    "cert approve": ["LA", "--proposal", "1", "--out-dir", "{out}/la"],
    "cert decline": ["LA", "--proposal", "1", "--reason", "wrong key"],
    "cert crl": [],
    "cert list": [],
    "cert register": ["LA", "--cert", "{material}/cert.pem"],
    "cert revoke": ["ab" * 32, "--reason", "lost"],
    "keys retire": ["k00000000"],
    "linkage train": ["--random-pairs", "1000"],
    "linkage use": ["2027-01-01.index-em.1"],
    "linkage approve": ["--proposal", "1"],
    "linkage decline": ["--proposal", "1", "--reason", "recall fell"],
    "linkage list": [],
    "keys destroy": ["k00000000"],
    "backup": ["--out", "{out}/backup.cgb", "--key-file", "{material}/cert.pem"],
    "restore status": [],
    "restore acknowledge": [],
    "login": ["--officer", "alice", "--password-stdin", "--code", "123456"],
    "logout": [],
    "whoami": [],
    "officer add": ["eve", "--name", "Eve", "--role", "officer"],
    "officer disable": ["eve", "--reason", "left"],
    "officer list": [],
    "officer password": ["--password-stdin"],
    "officer reset": ["eve"],
    "keys rotate": [],
    "hsm status": [],
    "hsm create-kek": [],
    "hsm wrap-keyring": [],
    "hsm import-signing-key": [],
    "keys status": [],
    "migrate": [],
    "roles show": [],
    "precedence show": [],
    "org accredit": ["LA", "--scope", "push", "--expires", _future(), "--officer", "alice"],
    "org add": ["LA", "--name", "Leeds", "--kind", "local_authority"],
    "org approve": ["LA", "--proposal", "1", "--officer", "bob"],
    "org check": ["LA", "--cert", "{material}/cert.pem", "--key", "{material}/cert.pem"],
    "org decline": ["LA", "--proposal", "1", "--reason", "no agreement"],
    "org list": [],
    "org reinstate": ["LA", "--reason", "resolved"],
    "org revoke": ["LA", "--reason", "dissolved"],
    "org show": ["LA"],
    "org suspend": ["LA", "--officer", "bob", "--reason", "breach"],
    "review conflict": ["1", "--officer", "dora"],
    "review conflicts": [],
    "review distinct": ["1", "--officer", "dora"],
    "review link": ["1", "--officer", "dora"],
    "review list": [],
    "review merge": ["0000-0000-0000-0000", "1111-1111-1111-1111", "--officer", "dora"],
    "review settle": ["1", "--keep", "shown", "--officer", "dora"],
    "review show": ["1", "--officer", "dora"],
    "review unmerge": ["1", "--officer", "dora"],
    "retention run": [],
    "load": ["{material}/cert.pem"],
    "retention show": ["0000-0000-0000-0000", "--officer", "dora"],
    "serve": ["--bind", "192.0.2.1:9"],
    "console": ["--bind", "192.0.2.1:9"],
    "portal": ["--bind", "192.0.2.1:9"],
    "idp propose": ["LA", "--issuer", "https://login.example.org", "--client-id", "portal", "--redirect-uri",
                    "https://portal.example.org/oidc/callback", "--role", "hv=health visitor", "--amr", "otp"],
    "idp approve": ["1"],
    "idp decline": ["1", "--reason", "wrong tenant"],
    "idp remove": ["1", "--reason", "contract ended"],
    "idp list": [],
    "idp show": ["1"],
    "portal-admin propose": ["LA", "la.admin", "--name", "Ann Admin", "--job-title", "Systems lead"],
    "portal-admin approve": ["1"],
    "portal-admin decline": ["1", "--reason", "not the right person"],
    "portal-admin list": [],
    "portal-admin lapsing": [],
    "portal-admin disable": ["LA", "la.admin", "--reason", "left the council"],
    "portal-admin reset": ["LA", "la.admin"],
    "portal-admin enable": ["LA", "la.admin", "--reason", "back from leave"],
    "portal-admin approve-role": ["1"],
    "proxy issue": ["--name", "nginx-1", "--csr", "{material}/request.csr"],
    "proxy register": ["--name", "nginx-1", "--cert", "{material}/cert.pem"],
    "proxy approve": ["--proposal", "1", "--out", "{out}/proxy.pem"],
    "proxy decline": ["--proposal", "1", "--reason", "wrong host"],
    "proxy revoke": ["ab" * 32, "--reason", "host rebuilt"],
    "proxy list": [],
    "trust add-ca": ["{material}/ca.pem"],
    "trust approve": ["--proposal", "1"],
    "trust decline": ["--proposal", "1", "--reason", "unknown CA"],
    "trust list": [],
    "trust remove": ["ab" * 32],
    "signing-key status": [],
    "signing-key rotate": [],
    "signing-key promote": ["--grace-days", "0"],
    "signing-key discard": [],
    "signing-key retire": [],
    "signing-key bundle": ["--out", "{out}/bundle.pem"],
}
# Commands that do not need an initialised home: `init` makes it, `demo` makes its own.
NEED_NO_HOME = {"init", "demo", "push", "csr", "unbundle",  # push, csr, unbundle: the connecting organisation's
                "restore archive"}  # `restore ARCHIVE`: onto a new machine, into an empty home


@pytest.fixture(scope="module")
def material(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("material")
    ca_key, ca_cert = pki.make_ca("Regional CA")
    key = pki.new_rsa_key()
    pki.write_public(directory / "ca.pem", pki.cert_pem(ca_cert))
    pki.write_public(directory / "cert.pem", pki.cert_pem(
        pki.issue_org_cert(ca_key, ca_cert, "LA", "Leeds", key.public_key())))
    from connectors import credentials

    credentials.make_request("LA", directory / "la")
    (directory / "request.csr").write_bytes((directory / "la" / "request.csr").read_bytes())
    return directory


@pytest.fixture(scope="module")
def empty_postgres():
    with postgres_database() as url:
        yield url


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def _database_url(backend: str, empty_postgres: str) -> str | None:
    return empty_postgres if backend == "postgresql" else None


# ---- help, version -------------------------------------------------------------------------------

def test_sample_arguments_cover_every_command():
    """A new command must be added to SAMPLE_ARGS (or NEED_NO_HOME) so the tests below run it."""
    names = {" ".join(path) for path, _ in _commands()}
    assert names - NEED_NO_HOME == set(SAMPLE_ARGS), "add the new command to SAMPLE_ARGS"


def test_every_command_and_option_has_help_and_settings_show_their_variable():
    for path, command in [((), main), *_commands()]:
        assert command.help, f"`contactgate {' '.join(path)}` has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{'/'.join(param.opts)} of `contactgate {' '.join(path)}` has no help"
                if param.envvar:
                    assert param.show_envvar, f"{'/'.join(param.opts)} does not show {param.envvar}"
    for group in [main, *(c for _, c in _commands() if isinstance(c, click.Group))]:
        for name, sub in group.commands.items():
            if isinstance(sub, click.Group):
                assert sub.help, f"group {name} has no help text"


def test_help_names_the_environment_variables_and_touches_nothing(tmp_path):
    run = contactgate("--help", cwd=tmp_path)
    assert run.code == 0, run
    for variable in ("CONTACTGATE_HOME", "CONTACTGATE_DATABASE_URL", "CONTACTGATE_REDIS_URL"):
        assert variable in run.out, run
    assert "migrate" in run.out
    assert tree(tmp_path) == {".": tree(tmp_path)["."]}


def test_added_commands_appear_only_at_the_top(tmp_path):
    """`push`, `csr`, `unbundle` and `demo` come from other distributions' entry points: they are
    `contactgate` commands, never subcommands of a group (`contactgate org push` once ran a push)."""
    from click.testing import CliRunner

    added = ("push", "csr", "unbundle", "demo")
    top = contactgate("--help", cwd=tmp_path)
    assert top.code == 0 and all(f"  {name} " in top.out for name in added), top
    for name in added:  # through click in this process: the same entry points, as the script's listing shows
        run = invoke(name, "--help", cwd=tmp_path)
        assert run.code == 0 and f"Usage: contactgate {name}" in run.out, run
    refused = contactgate("org", "push", cwd=tmp_path)
    assert refused.code == 2 and "No such command 'push'" in refused.err, refused
    groups = [(path, c) for path, c in _commands_and_groups() if isinstance(c, click.Group)]
    assert {"org", "cert", "audit", "officer"} <= {" ".join(path) for path, _ in groups}
    runner = CliRunner()
    for path, group in groups:
        listed = runner.invoke(main, [*path, "--help"], prog_name="contactgate", env=clean_env())
        assert listed.exit_code == 0, listed.output
        assert set(added).isdisjoint(listed.output.split("Commands:", 1)[1].split()), listed.output
        for name in added:
            assert runner.invoke(main, [*path, name, "--help"], env=clean_env()).exit_code == 2, (path, name)
    assert tree(tmp_path) == {".": tree(tmp_path)["."]}


def _commands_and_groups(group: click.Group = main, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands_and_groups(command, (*prefix, name))


def test_version(tmp_path):
    run = contactgate("--version", cwd=tmp_path)
    assert run.code == 0 and "0.1.0" in run.out, run


# ---- before init ---------------------------------------------------------------------------------

# Every command is run through click in this process (what the script runs, without a new
# interpreter's 1-2 s of start-up per command), on both backends; a sample also through the real
# script, each command on one backend, the backends taken in turn.
SCRIPT_SAMPLE = (("org list", "sqlite"), ("serve", "postgresql"), ("audit verify", "sqlite"), ("load", "postgresql"),
                 ("cert issue", "sqlite"))


def _before_init(command, backend, material, empty_postgres, tmp_path, monkeypatch, *, script: bool):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    home = workspace / "home"
    args = [a.format(material=material, out=workspace / "out") for a in SAMPLE_ARGS[command]]
    settings = {"CONTACTGATE_HOME": str(home), "CONTACTGATE_DATABASE_URL": _database_url(backend, empty_postgres)}
    before = tree(workspace)
    if script:
        run = contactgate(*command.split(), *args, env=clean_env(**settings), cwd=workspace)
    else:
        monkeypatch.chdir(workspace)
        env = {k: None for k in os.environ if k.startswith("CONTACTGATE_")} | settings
        result = CliRunner().invoke(main, [*command.split(), *args], env=env, prog_name="contactgate")
        run = Run(tuple(command.split()), result.exit_code, result.stdout, result.stderr)
    run.assert_clean_failure(3, "contactgate init")
    assert tree(workspace) == before
    if backend == "postgresql":
        assert _tables(empty_postgres) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("command", sorted(SAMPLE_ARGS))
def test_every_command_before_init_says_run_init_and_creates_nothing(command, backend, material, empty_postgres,
                                                                     tmp_path, monkeypatch):
    _before_init(command, backend, material, empty_postgres, tmp_path, monkeypatch, script=False)


@pytest.mark.parametrize("command,backend", SCRIPT_SAMPLE)
def test_the_script_before_init_says_run_init_and_creates_nothing(command, backend, material, empty_postgres,
                                                                  tmp_path, monkeypatch):
    _before_init(command, backend, material, empty_postgres, tmp_path, monkeypatch, script=True)


def test_default_home_is_not_created_by_a_command_before_init(tmp_path):
    run = contactgate("org", "list", cwd=tmp_path)
    run.assert_clean_failure(3, "contactgate init", str(tmp_path / "var"))
    assert not (tmp_path / "var").exists()


# ---- bad settings --------------------------------------------------------------------------------

BAD_SETTINGS = [
    ("CONTACTGATE_RATE_LIMIT_PER_USER", "abc"),
    ("CONTACTGATE_RATE_LIMIT_PER_ORG", "-5"),
    ("CONTACTGATE_MAX_MESSAGE_BYTES", "8MB"),
    ("CONTACTGATE_DATABASE_URL", "not a url"),
    ("CONTACTGATE_DATABASE_URL", "postgres://postgres@127.0.0.1/test"),  # SQLAlchemy says postgresql
    ("CONTACTGATE_DATABASE_URL", "mysql://root@127.0.0.1/contactgate"),   # no driver installed
    ("CONTACTGATE_REDIS_URL", "http://127.0.0.1:6379"),
]


# Through the real script for these; the others through click in this process (the settings are read
# and refused by the same code before any command runs, with no interpreter start-up per run).
SCRIPT_SETTINGS = {("CONTACTGATE_RATE_LIMIT_PER_USER", "abc"), ("CONTACTGATE_DATABASE_URL", "not a url")}


@pytest.mark.parametrize("variable,value", BAD_SETTINGS)
def test_a_bad_setting_is_named_exit_2_and_nothing_created(variable, value, tmp_path):
    home = tmp_path / "home"
    env = clean_env(CONTACTGATE_HOME=str(home), **{variable: value})
    run_it = contactgate if (variable, value) in SCRIPT_SETTINGS else invoke
    for args in (["init"], ["org", "list"]):
        run = run_it(*args, env=env, cwd=tmp_path)
        run.assert_clean_failure(2, variable)
        assert "password" not in run.err
        assert tree(tmp_path) == {".": tree(tmp_path)["."]}
    assert run_it("org", "list", "--help", env=env, cwd=tmp_path).code == 0


def test_unreachable_postgresql_exit_3_and_nothing_created(tmp_path):
    home = tmp_path / "home"
    for args, run_it in ((["init"], contactgate), (["migrate"], invoke)):  # the script's exit 3 once
        run = run_it("--home", str(home), "--database-url", UNREACHABLE_POSTGRES, *args, cwd=tmp_path)
        run.assert_clean_failure(3, "database", "CONTACTGATE_DATABASE_URL")
        assert not home.exists()
    with postgres_database() as url:  # a home made against a database that has gone away since
        assert invoke("--home", str(home), "--database-url", url, "init").code == 0
    before = tree(home)
    run = invoke("--home", str(home), "--database-url", UNREACHABLE_POSTGRES, "org", "list")
    run.assert_clean_failure(3, "database", "CONTACTGATE_DATABASE_URL")
    assert tree(home) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreachable_redis_stops_init_and_serve_before_anything_is_made(backend, empty_postgres, tmp_path):
    home = tmp_path / "home"
    env = clean_env(CONTACTGATE_HOME=str(home), CONTACTGATE_REDIS_URL=UNREACHABLE_REDIS,
                    CONTACTGATE_DATABASE_URL=_database_url(backend, empty_postgres))
    contactgate("init", env=env).assert_clean_failure(3, "Redis", "CONTACTGATE_REDIS_URL")
    assert not home.exists()
    if backend == "postgresql":
        assert _tables(empty_postgres) == []


@pytest.fixture(params=BACKENDS)
def initialised(request, tmp_path):
    """An initialised home (and database), made through click in this process (`init` and `login`
    through the script: test_fresh_init_reports_the_schema_it_created, test_permissions.py); yields
    the environment that reaches it."""
    home = tmp_path / "home"
    if request.param == "postgresql":
        with postgres_database() as url:
            env = clean_env(CONTACTGATE_HOME=str(home), CONTACTGATE_DATABASE_URL=url)
            yield init_and_sign_in(env, tmp_path, in_process=True)
    else:
        env = init_and_sign_in(clean_env(CONTACTGATE_HOME=str(home)), tmp_path, in_process=True)
        yield env


def _runner(env: dict):
    """The real script on SQLite; on PostgreSQL the same commands through click in this process: the
    backend changes what the database answers, not the script's exit codes, which SQLite's run shows."""
    return invoke if env.get("CONTACTGATE_DATABASE_URL", "").startswith("postgresql") else contactgate


def test_serve_with_unreachable_redis_starts_degraded_and_says_so(initialised):
    """Redis holds only rate counters: a node restarted while it is down serves (each worker its
    share of the limits), says so at start, and /readyz says degraded (issue 24, item 4)."""
    import subprocess
    import time
    import urllib.request

    from local import free_port

    env = {**initialised, "CONTACTGATE_REDIS_URL": UNREACHABLE_REDIS}
    soap, metrics = free_port(), free_port()
    server = subprocess.Popen([CONTACTGATE, "serve", "--workers", "1", "--bind", f"127.0.0.1:{soap}",
                               "--metrics-bind", f"127.0.0.1:{metrics}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        answer, deadline = None, time.monotonic() + 60
        while answer is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=5) as response:
                    answer = (response.status, response.read().decode())
            except OSError:
                time.sleep(0.2)
        assert server.poll() is None, server.stdout.read()
        assert answer is not None and answer[0] == 200 and "degraded: redis" in answer[1], answer
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "cannot reach Redis" in output and "degraded mode" in output, output


# ---- init, migrate, the schema at head -----------------------------------------------------------

def _downgrade(env: dict, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from gateway.config import Settings

    url = Settings.from_env(env).database_url
    cfg = Config()
    cfg.set_main_option("script_location", "gateway:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.downgrade(cfg, revision)


def test_init_says_what_it_created_then_what_it_kept(initialised):
    home = Path(initialised["CONTACTGATE_HOME"])
    shutil.rmtree(home / "signing")
    again = _runner(initialised)("init", env=initialised)
    assert again.code == 0, again
    assert "created  response-signing key" in again.out
    assert "kept     gateway CA" in again.out
    assert f"kept     database schema (already at head: {HEAD})" in again.out


def test_fresh_init_reports_the_schema_it_created(tmp_path):
    run = contactgate("init", env=clean_env(CONTACTGATE_HOME=str(tmp_path / "home")))
    assert run.code == 0, run
    for item in ("gateway CA", "server TLS certificate", "response-signing key", "audit chain key"):
        assert f"created  {item}" in run.out, run
    assert f"created  database schema at {HEAD}" in run.out, run


def test_schema_behind_head_refuses_until_migrate(initialised):
    run = _runner(initialised)
    _downgrade(initialised, "0001")
    run("org", "list", env=initialised).assert_clean_failure(3, "contactgate migrate")
    check = run("migrate", "--check", env=initialised)
    assert check.code == 1 and "0001" in check.out + check.err, check
    migrated = run("migrate", env=initialised)
    assert migrated.code == 0 and f"migrated from 0001 to {HEAD}" in migrated.out, migrated
    assert run("migrate", "--check", env=initialised).code == 0
    assert "already at head" in run("migrate", env=initialised).out
    # 0001 had no officer accounts: they are made again, and signed in again
    unsigned = {k: v for k, v in initialised.items() if k != "CONTACTGATE_SESSION"}
    signed = init_and_sign_in(unsigned, Path(initialised["CONTACTGATE_SESSION"]).parent, in_process=True)
    assert run("org", "list", env=signed).code == 0


def test_init_migrates_an_older_schema_and_says_so(initialised):
    _downgrade(initialised, "0001")
    run = _runner(initialised)("init", env=initialised)
    assert run.code == 0 and f"migrated database schema from 0001 to {HEAD}" in run.out, run


def test_refusals_exit_2(initialised):
    run = _runner(initialised)
    run("org", "show", "NOBODY", env=initialised).assert_clean_failure(2, "NOBODY")
    assert run("org", "add", "LA", "--name", "Leeds", "--kind", "bank", env=initialised).code == 2
    run("org", "add", "LA", "--name", "Leeds", "--kind", "local_authority", env=initialised)
    run("org", "add", "LA", "--name", "Leeds", "--kind", "local_authority",
        env=initialised).assert_clean_failure(2, "already exists")


# ---- crashes -------------------------------------------------------------------------------------

def test_an_unexpected_error_exits_3_in_one_line_and_the_traceback_only_with_debug(initialised):
    key = Path(initialised["CONTACTGATE_HOME"]) / "keys" / "audit-chain.key"
    key.write_bytes(b"short")  # the trail refuses a key this short: an error the CLI does not expect
    args = ["org", "add", "LA", "--name", "Leeds", "--kind", "local_authority"]
    run = contactgate(*args, env=initialised)
    run.assert_clean_failure(3, "CONTACTGATE_DEBUG=1")
    debug = contactgate(*args, env={**initialised, "CONTACTGATE_DEBUG": "1"})
    assert debug.code == 3 and "Traceback" in debug.err, debug


def test_a_corrupt_sqlite_database_exits_3_without_a_traceback(tmp_path):
    env = clean_env(CONTACTGATE_HOME=str(tmp_path / "home"))
    assert invoke("init", env=env).code == 0
    (tmp_path / "home" / "contactgate.db").write_bytes(b"this is not a database" * 100)
    contactgate("org", "list", env=env).assert_clean_failure(3)


# ---- a home this user cannot write ---------------------------------------------------------------

@pytest.fixture
def world_reachable_tmp():
    """A temporary directory the unprivileged user can reach (pytest's tmp_path is root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="cg-ro-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _chown_tree(root: Path, user: str = "nobody", group: str = "nogroup") -> None:
    for directory, dirs, files in os.walk(root):
        shutil.chown(directory, user, group)
        for name in files:
            shutil.chown(Path(directory) / name, user, group)


def _read_only_tree(root: Path) -> None:
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in files:
            (Path(directory) / name).chmod(0o400)
        Path(directory).chmod(0o500)


@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv to run the CLI as an unprivileged user")
@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_home_as_an_unprivileged_user(backend, world_reachable_tmp, material):
    """The operator runs `contactgate` as a user who may read but not write the home: commands that
    only read work or say why not; commands that write say so; nothing is created; no traceback."""
    home = world_reachable_tmp / "home"
    database = postgres_database() if backend == "postgresql" else None
    url = database.__enter__() if database else None
    try:
        officer = world_reachable_tmp / "officer"
        officer.mkdir()
        env = init_and_sign_in(clean_env(CONTACTGATE_HOME=str(home), CONTACTGATE_DATABASE_URL=url), officer,
                               in_process=True)  # made as root; only the runs below are the point
        assert invoke("org", "add", "LA", "--name", "Leeds", "--kind", "local_authority", env=env).code == 0
        _chown_tree(home)
        _chown_tree(officer)
        _read_only_tree(home)
        regional_ca = world_reachable_tmp / "regional-ca.pem"
        shutil.copy(material / "ca.pem", regional_ca)
        regional_ca.chmod(0o644)
        request = world_reachable_tmp / "request.csr"
        shutil.copy(material / "request.csr", request)
        request.chmod(0o644)
        before = tree(world_reachable_tmp)
        out = world_reachable_tmp / "out"
        runs = {
            "init": contactgate("init", env=env, as_nobody=True),
            "trust add-ca": contactgate("trust", "add-ca", str(regional_ca), env=env, as_nobody=True),
            "cert issue": contactgate("cert", "issue", "LA", "--csr", str(request), env=env, as_nobody=True),
            "org list": contactgate("org", "list", env=env, as_nobody=True),
            "audit verify": contactgate("audit", "verify", env=env, as_nobody=True),
        }
        if backend == "sqlite":  # the database itself is in the home
            runs["org add"] = contactgate("org", "add", "LB", "--name", "Leeds", "--kind", "local_authority",
                                          env=env, as_nobody=True)
        for name, run in runs.items():
            if run.code != 0:
                run.assert_clean_failure(3)
                assert "Traceback" not in run.err
        # With PostgreSQL, `init` on a complete home has nothing to write: it may succeed.
        # trust add-ca only proposes (a database row): with PostgreSQL it has nothing to write in the home
        for name in (("init", "org add", "trust add-ca") if backend == "sqlite" else ()):
            assert runs[name].code == 3, runs[name]
        assert tree(world_reachable_tmp) == before
    finally:
        if database:
            database.__exit__(None, None, None)
