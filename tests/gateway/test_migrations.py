"""The Alembic migrations build exactly the schema the code describes, on both backends."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.db import metadata


def test_migrated_schema_matches_the_tables_in_code(engine):
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_migrating_again_is_a_no_op(database_url):
    from gateway.db import migrate

    migrate(database_url)
