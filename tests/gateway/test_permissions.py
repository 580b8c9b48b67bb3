"""Files only the gateway can read: the home 0700, every directory under it 0700 and every file 0600
(database and its -wal/-shm, keys, certificates, checkpoints, the client CA bundle, trusted CAs),
whatever the umask; an older, looser home is tightened by `init`; `serve` refuses a loose one."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from gateway.audit import AuditTrail
from gateway.config import Settings
from gateway.db import make_engine
from contactgate_local import free_port
from gateway.trust.crl import write_client_bundle
from gateway.trust import pki
from tests.gateway.cli_runner import (SECOND, CONTACTGATE, clean_env, contactgate, init_and_sign_in, invoke, sign_in,
                                      tree)
from tests.support import postgres_database

UMASKS = (0o000,)  # the loosest umask: a file private under it is private under any (022 ran the same paths)
BACKENDS = ["sqlite", "postgresql"]



@contextlib.contextmanager
def process_umask(value: int):
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def loose(root: Path) -> dict[str, str]:
    """Paths under ``root`` that anyone but the owner may use, with their modes."""
    found = {}
    for relative, mode in tree(root).items():
        path = root / relative
        if path.is_symlink():
            continue
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            found[relative] = oct(mode)
    return found


@contextlib.contextmanager
def backend_env(backend: str, home: Path):
    if backend == "postgresql":
        with postgres_database() as url:
            yield clean_env(CONTACTGATE_HOME=str(home), CONTACTGATE_DATABASE_URL=url)
    else:
        yield clean_env(CONTACTGATE_HOME=str(home))


@contextlib.contextmanager
def running_server(env: dict, client_dir: Path, umask: int):
    port = free_port()
    log = open(Path(env["CONTACTGATE_HOME"]).parent / "server.log", "wb")
    process = subprocess.Popen([CONTACTGATE, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                                "--metrics-bind", "none"],
                               env=env, stdout=log, stderr=subprocess.STDOUT,
                               preexec_fn=lambda: os.umask(umask))
    log.close()
    session = requests.Session()
    session.cert = (str(client_dir / "cert.pem"), str(client_dir / "key.pem"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if session.get(f"https://127.0.0.1:{port}/healthz", verify=str(client_dir / "ca.pem"),
                               timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(15)


# ---- a new home, used: every file 0600 -----------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("umask", UMASKS, ids=["umask000"])
def test_home_and_every_file_in_it_are_private_whatever_the_umask(umask, backend, tmp_path):
    """`init` and `login` through the real script under the umask on SQLite; the commands after them,
    and PostgreSQL's, through click in this process with the process's umask set (the same code
    writing the same files: a umask is the process's, in either); the server, the real one."""
    home = tmp_path / "home"
    ca = pki.make_ca("Regional CA")[1]
    pki.write_public(tmp_path / "regional-ca.pem", pki.cert_pem(ca))
    with backend_env(backend, home) as env:
        env = init_and_sign_in(env, tmp_path, umask=umask, in_process=backend != "sqlite")

        def cg(*args):
            run = invoke(*args, env=env, umask=umask)
            assert run.code == 0, run
            return run

        cg("org", "add", "LA", "--name", "Leeds", "--kind", "local_authority")
        from connectors import credentials

        made = credentials.make_request("LA", home / "clients" / "la")  # as the organisation does: 0600 key
        request = tmp_path / "la.csr"
        request.write_bytes(made.request_path.read_bytes())
        made.request_path.unlink()
        second = sign_in({k: v for k, v in env.items() if k != "CONTACTGATE_SESSION"}, tmp_path, umask=umask,
                         officer=SECOND, in_process=True)
        issuing = cg("cert", "issue", "LA", "--csr", str(request)).out
        approved = invoke("cert", "approve", "LA", "--proposal", issuing.split()[1], "--out-dir",
                          str(home / "clients" / "la"), env=second, umask=umask)  # inside the home: private
        assert approved.code == 0, approved
        proposed = cg("trust", "add-ca", str(tmp_path / "regional-ca.pem")).out
        approved = invoke("trust", "approve", "--proposal", proposed.split()[1], env=second, umask=umask)
        assert approved.code == 0, approved
        cg("audit", "verify")  # writes the checkpoints file
        with running_server(env, home / "clients" / "la", umask):  # writes the client CA bundle
            if backend == "sqlite":  # the server holds the database open: -wal and -shm exist now
                assert (home / "contactgate.db-wal").exists() and (home / "contactgate.db-shm").exists()
            assert loose(home) == {}
        assert (home / "tls" / "client-cas.pem").exists()
        assert (home / "audit" / "checkpoints").exists()
        assert list((home / "trust").glob("*.pem"))
        assert loose(home) == {}


def test_sqlite_gives_wal_and_shm_the_database_files_mode(tmp_path):
    """SQLite creates -wal and -shm with the database file's mode, whatever the umask: so a database
    created 0600 keeps all three private."""
    url = f"sqlite:///{tmp_path}/db/contactgate.db"
    with process_umask(0o000):
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x)")
        raw = sqlite3.connect(tmp_path / "db" / "contactgate.db")
        raw.execute("INSERT INTO t VALUES (1)")
        raw.commit()
        try:
            assert {p.name for p in (tmp_path / "db").iterdir()} == {
                "contactgate.db", "contactgate.db-wal", "contactgate.db-shm"}
            assert loose(tmp_path / "db") == {}
        finally:
            raw.close()
            engine.dispose()


def test_file_writers_are_private_under_umask_000(tmp_path):
    home = tmp_path / "home"
    settings = Settings.from_env({}, home=str(home), database_url=f"sqlite:///{home}/contactgate.db")
    with process_umask(0o000):
        from gateway.home import init_home

        init_home(settings, [])
        write_client_bundle(settings)
        trail = AuditTrail.from_file(settings.layout.audit_key, checkpoints=settings.layout.audit_checkpoints)
        engine = make_engine(settings.database_url)
        assert trail.verify(engine).ok
        engine.dispose()
        existing = home / "tls" / "server.pem"
        existing.chmod(0o644)
        pki.write_private(existing, existing.read_bytes())  # rewriting a loose file tightens it
    assert loose(home) == {}


def test_the_organisations_key_and_the_handed_over_certificates_whatever_the_umask(tmp_path):
    """`contactgate csr` (the organisation's side) keeps its key 0600 in a 0700 directory; `cert
    approve --out-dir` writes the certificates 0644, for handing over."""
    env = init_and_sign_in(clean_env(CONTACTGATE_HOME=str(tmp_path / "home")), tmp_path, in_process=True)
    assert invoke("org", "add", "LA", "--name", "Leeds", "--kind", "local_authority", env=env).code == 0
    mine = tmp_path / "organisation" / "la"
    made = contactgate("csr", "--org", "LA", "--out-dir", str(mine), env=env, umask=0o000)
    assert made.code == 0, made
    assert mine.stat().st_mode & 0o777 == 0o700 and mine.parent.stat().st_mode & 0o777 == 0o700
    assert (mine / "key.pem").stat().st_mode & 0o777 == 0o600
    proposed = invoke("cert", "issue", "LA", "--csr", str(mine / "request.csr"), env=env, umask=0o000)
    assert proposed.code == 0, proposed
    second = sign_in({k: v for k, v in env.items() if k != "CONTACTGATE_SESSION"}, tmp_path, officer=SECOND,
                     in_process=True)
    out = tmp_path / "handover" / "la"
    run = contactgate("cert", "approve", "LA", "--proposal", proposed.out.split()[1], "--out-dir", str(out),
                      env=second, umask=0o000)
    assert run.code == 0, run
    assert (out / "cert.pem").stat().st_mode & 0o777 == 0o644  # public material, meant to be handed over
    assert not (out / "key.pem").exists()


def test_make_engine_creates_a_private_database_and_directory(tmp_path):
    with process_umask(0o000):
        engine = make_engine(f"sqlite:///{tmp_path}/new/contactgate.db")
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new" / "contactgate.db").stat().st_mode & 0o777 == 0o600


# ---- an older home: init tightens it, serve refuses it -------------------------------------------

def _loosen(home: Path) -> list[Path]:
    loosened = [home, home / "ca", home / "contactgate.db", home / "ca" / "ca-key.pem", home / "tls" / "server.pem"]
    for path in loosened:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (home / "audit").mkdir(exist_ok=True)
    checkpoints = home / "audit" / "checkpoints"
    checkpoints.write_text("")
    checkpoints.chmod(0o666)
    return [*loosened, checkpoints]


def test_init_tightens_an_older_home_and_says_so(tmp_path):
    home = tmp_path / "home"
    env = clean_env(CONTACTGATE_HOME=str(home))
    assert invoke("init", env=env).code == 0
    loosened = _loosen(home)
    run = contactgate("init", env=env)
    assert run.code == 0, run
    for path in loosened:
        name = "home" if path == home else str(path.relative_to(home))
        assert any(line.startswith("tightened") and name in line for line in run.out.splitlines()), (name, run)
    assert loose(home) == {}
    assert "tightened" not in invoke("init", env=env).out


@pytest.mark.parametrize("backend", BACKENDS)
def test_serve_refuses_a_loose_home_naming_the_file_and_the_fix(backend, tmp_path):
    home = tmp_path / "home"
    with backend_env(backend, home) as env:  # the first refusal through the real script, the rest in-process
        assert invoke("init", env=env).code == 0
        key = home / "ca" / "ca-key.pem"
        key.chmod(0o640)
        contactgate("serve", "--bind", "192.0.2.1:9", env=env).assert_clean_failure(
            2, str(key), f"chmod 600 {key}", "contactgate init")
        key.chmod(0o600)
        home.chmod(0o755)
        invoke("serve", "--bind", "192.0.2.1:9", env=env).assert_clean_failure(
            2, f"chmod 700 {home}")
        home.chmod(0o700)
        if backend == "sqlite":
            database = home / "contactgate.db"
            database.chmod(0o644)
            invoke("serve", "--bind", "192.0.2.1:9", env=env).assert_clean_failure(
                2, f"chmod 600 {database}")
            database.chmod(0o600)
        (home / "notes.txt").write_text("left by an operator")
        (home / "notes.txt").chmod(0o644)
        invoke("serve", "--bind", "192.0.2.1:9", env=env).assert_clean_failure(2, "notes.txt")


def test_serve_checks_a_sqlite_database_outside_the_home(tmp_path):
    database = tmp_path / "data" / "gateway.db"
    env = clean_env(CONTACTGATE_HOME=str(tmp_path / "home"), CONTACTGATE_DATABASE_URL=f"sqlite:///{database}")
    assert invoke("init", env=env, umask=0o022).code == 0
    assert database.stat().st_mode & 0o777 == 0o600
    database.chmod(0o644)
    contactgate("serve", "--bind", "192.0.2.1:9", env=env).assert_clean_failure(2, f"chmod 600 {database}")
