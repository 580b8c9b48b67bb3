"""Alembic migrations of the database schema, and where a database stands against them."""

from __future__ import annotations

import functools

from sqlalchemy.engine import Engine


@functools.cache
def _scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", "gateway:migrations")
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    """The newest revision this version of ContactGate knows."""
    return _scripts().get_current_head()


def known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database without a ContactGate schema."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class UnknownRevision(Exception):
    """The database is at a revision this version does not know: a newer ContactGate wrote it."""

    def __init__(self, revision: str):
        super().__init__(f"the database schema is at revision {revision}, which this version of "
                         f"ContactGate does not know (newer software migrated it): upgrade contactgate")
        self.revision = revision


def upgrade(url: str, keys=None) -> tuple[str | None, str]:
    """Bring the database at ``url`` to the head revision; returns (revision before, revision after).
    The revision before is None for a database that had no ContactGate schema. ``keys``: the home's
    keyring file, which seals what earlier versions stored in clear (0007)."""
    from gateway.db import make_engine, migrate, reader

    engine = make_engine(url)
    try:
        before = current_revision(reader(engine))
    finally:
        engine.dispose()
    if before is not None and before not in known_revisions():
        raise UnknownRevision(before)
    head = head_revision()
    if before != head:
        import contextlib
        import os

        from gateway.security import vault

        with contextlib.ExitStack() as stack:
            if keys is not None and (os.environ.get(vault.ENV_VAR) or keys.exists()):
                stack.enter_context(vault.using(vault.for_home(keys)))
            migrate(url)
    return before, head
