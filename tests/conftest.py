import contextlib
import datetime as dt

import pytest
import redis as redis_lib
from sqlalchemy import update

from connectors.client import GatewayClient
from gateway.db import organisations
from tests.heavy_first import pytest_collection_modifyitems  # noqa: F401  (the longest files first)
from tests.migrated import MigratedTemplates
from tests.support import REDIS_URL, Gateway, postgres_database, sqlite_database

BACKENDS = ["sqlite", "postgresql"]
SHIELD_ROLE = "designated safeguarding lead"


@pytest.fixture(scope="session", autouse=True)
def data_keys():
    """Keys for what the tests store in-process (engines without a home's keyring): generated now,
    held in memory only. A running gateway seals with its own home's keyring."""
    from gateway.security import vault

    with vault.using(vault.throwaway()) as keys:
        yield keys


# Officers' passwords in the tests: real argon2id, at a test cost (argon2-cffi's defaults, the
# product's, are 3 passes over 64 MiB in 4 lanes, 0.1-0.9 s a hash; every `init` of a local home
# hashes eleven officers' passwords, and every sign-in verifies one). The hash carries its cost, so
# whatever verifies a hash made here (a `contactgate` subprocess too) pays the test cost.
TEST_ARGON2 = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


@contextlib.contextmanager
def _argon2_hasher(hasher):
    from gateway import officers

    saved = officers._HASHER, officers._DUMMY_HASH
    officers._HASHER, officers._DUMMY_HASH = hasher, None
    try:
        yield hasher
    finally:
        officers._HASHER, officers._DUMMY_HASH = saved


@pytest.fixture(scope="session", autouse=True)
def test_argon2_cost():
    """In-process hashing and verifying at TEST_ARGON2, unless a test asks for production_argon2."""
    from argon2 import PasswordHasher

    with _argon2_hasher(PasswordHasher(**TEST_ARGON2)) as hasher:
        yield hasher


@pytest.fixture
def production_argon2():
    """The product's argon2id parameters, for a test about what a password check costs (it must be
    requested before the fixture that makes the home: `pytest.mark.usefixtures` does that)."""
    from argon2 import PasswordHasher

    with _argon2_hasher(PasswordHasher()) as hasher:
        yield hasher


@pytest.fixture(scope="module")
def production_argon2_module():
    """production_argon2 for a whole module (whose module-scoped homes must hold production hashes)."""
    from argon2 import PasswordHasher

    with _argon2_hasher(PasswordHasher()) as hasher:
        yield hasher


@pytest.fixture(scope="session", params=BACKENDS)
def gateway(request):
    """A running gateway per backend: SQLite + embedded store, PostgreSQL + Redis (see
    _running_gateway). Both stay up for the whole session: a parametrized session fixture is torn
    down each time the backend changes, and with --dist loadfile that is in every file (each file's
    SQLite tests, then its PostgreSQL tests), so the gateways are held by a fixture per backend and
    this one only picks one."""
    return request.getfixturevalue(f"gateway_{request.param}")


@pytest.fixture(scope="session")
def gateway_sqlite(tmp_path_factory):
    yield from _running_gateway("sqlite", tmp_path_factory)


@pytest.fixture(scope="session")
def gateway_postgresql(tmp_path_factory):
    yield from _running_gateway("postgresql", tmp_path_factory)


def _running_gateway(backend, tmp_path_factory):
    """A running gateway on ``backend``: SQLite + embedded store, PostgreSQL + Redis.

    Organisations (all made through the CLI):
      la       local authority, push + query         health  health provider, query only
      pending  accreditation proposed, not approved  unacc   registered, never accredited
      susp     accredited then suspended             expired accredited, expiry passed
      la_revoked   a second LA certificate, revoked
      shielder local authority, query + shield
    The role "designated safeguarding lead" may see a shielded child's location (CONTACTGATE_SHIELD_ROLES).
    """
    home = tmp_path_factory.mktemp(f"home-{backend}")
    with _database(backend) as url:
        gw = Gateway(backend=backend, home=home, database_url=url,
                     redis_url=REDIS_URL if backend == "postgresql" else None)
        gw.cli("init")
        gw.add_org("LA", "local_authority", ["push", "query"])
        gw.add_org("HEALTH", "health", ["query"])
        gw.add_org("SHIELDER", "local_authority", ["query", "shield"])
        gw.extra_env["CONTACTGATE_SHIELD_ROLES"] = SHIELD_ROLE
        gw.add_org("PENDING", "education", ["query"], approve=False)
        gw.add_org("UNACC", "other")
        gw.add_org("SUSP", "youth_offending", ["push", "query"])
        gw.cli("org", "suspend", "SUSP", "--officer", "officer-a", "--reason", "test suspension")
        gw.add_org("EXPIRED", "police", ["query"])
        with gw.engine.begin() as conn:  # let the accreditation lapse (officers cannot set a past date)
            conn.execute(update(organisations).where(organisations.c.code == "EXPIRED")
                         .values(expires=dt.date.today() - dt.timedelta(days=1)))
        revoked_dir = gw.issue_cert("LA", "la_revoked")
        fp = _fingerprint(revoked_dir)
        gw.cli("cert", "revoke", fp, "--reason", "laptop stolen")
        gw.start()
        try:
            yield gw
        finally:
            gw.stop()
            if gw.redis_url:
                _drop_redis_keys(gw.redis_url, gw.redis_prefix)


def _fingerprint(directory):
    from gateway.trust import pki

    return pki.fingerprint(pki.load_cert_pem((directory / "cert.pem").read_bytes()))


def _database(backend):
    return postgres_database() if backend == "postgresql" else sqlite_database()


def _drop_redis_keys(url, prefix):
    client = redis_lib.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture(scope="session")
def migrated_templates():
    """The migrated databases that database_url copies (tests/migrated.py), dropped at the end."""
    templates = MigratedTemplates()
    yield templates
    templates.drop()


@pytest.fixture(params=BACKENDS)
def database_url(request, migrated_templates):
    """A fresh database with the schema migrated to head, on each backend (a copy of one migrated
    once per test process)."""
    with migrated_templates.database(request.param) as url:
        yield url


@pytest.fixture
def engine(database_url):
    from gateway.db import make_engine

    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def clients(gateway):
    """One SDK client per certificate directory and backend (building zeep clients is not free)."""
    made: dict[str, GatewayClient] = {}

    def get(name: str) -> GatewayClient:
        if name not in made:
            made[name] = gateway.client(name)
        return made[name]

    return get
