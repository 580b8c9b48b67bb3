"""Fresh databases with the schema at head, without running the migrations for each: they run once
per backend and test process, into a template, and each test gets a copy of it (PostgreSQL:
``CREATE DATABASE ... TEMPLATE``; SQLite: a copy of the file). A copy is the database the
migrations make, byte for byte on SQLite; migrating every test's database cost ~1 s of a core each
on an idle machine, several hundred times a run. Tests of the migrations themselves
(tests/gateway/test_migrations.py) make and migrate their own databases."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support import POSTGRES_ADMIN_URL, sqlite_database


@contextlib.contextmanager
def _admin():
    engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


class MigratedTemplates:
    """One migrated template per backend, made on first use; ``drop`` removes them."""

    def __init__(self):
        self._sqlite_dir: Path | None = None
        self._postgres_name: str | None = None

    def sqlite_template(self) -> Path:
        from gateway.db import migrate

        if self._sqlite_dir is None:
            directory = Path(tempfile.mkdtemp(prefix="cg-template-"))
            migrate(f"sqlite:///{directory}/contactgate.db")
            # the migration's engine is disposed: fold any write-ahead log into the file itself, so
            # that the file alone is the whole database
            with contextlib.closing(sqlite3.connect(directory / "contactgate.db")) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._sqlite_dir = directory
        return self._sqlite_dir / "contactgate.db"

    def postgres_template(self) -> str:
        from gateway.db import migrate

        if self._postgres_name is None:
            name = f"cg_test_tmpl_{uuid.uuid4().hex[:12]}"
            with _admin() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            self._postgres_name = name
            migrate(f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}")
        return self._postgres_name

    @contextlib.contextmanager
    def database(self, backend: str):
        """A new database, a copy of the migrated template of ``backend``; removed afterwards."""
        if backend == "postgresql":
            template = self.postgres_template()
            name = f"cg_test_{uuid.uuid4().hex[:12]}"
            with _admin() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
            try:
                yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
            finally:
                with _admin() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            template = self.sqlite_template()
            with sqlite_database() as url:
                from gateway import files

                path = Path(url.removeprefix("sqlite:///"))
                files.create_private(path)  # 0600, as make_engine makes a new database file
                shutil.copyfile(template, path)
                yield url

    def drop(self) -> None:
        if self._sqlite_dir is not None:
            shutil.rmtree(self._sqlite_dir, ignore_errors=True)
        if self._postgres_name is not None:
            with _admin() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self._postgres_name}" WITH (FORCE)'))
