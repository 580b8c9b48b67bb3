"""The Alembic migrations build exactly the schema the code describes, on both backends."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.db import metadata


def _alembic_config(database_url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "gateway:migrations")
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def test_migrated_schema_matches_the_tables_in_code(engine):
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_migrating_again_is_a_no_op(database_url):
    from gateway.db import migrate

    migrate(database_url)


def test_0003_carries_unexpired_replay_keys_into_processed_messages(database_url):
    """Messages answered just before the upgrade stay answered (refused, or their first answer)."""
    import time

    from alembic import command
    from sqlalchemy import create_engine, select, text

    from gateway.db import processed_messages

    cfg = _alembic_config(database_url)
    command.downgrade(cfg, "0002")
    engine = create_engine(database_url)
    now = int(time.time())
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO replay_keys (key, expires_at, response) VALUES "
                          "(:a, :live, :answer), (:b, :live, NULL), (:c, :dead, NULL)"),
                     {"a": "LA:" + "a" * 64, "b": "HEALTH:" + "b" * 64, "c": "LA:" + "c" * 64,
                      "live": now + 300, "dead": now - 1, "answer": b"<first answer/>"})
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        rows = sorted(tuple(r) for r in conn.execute(select(
            processed_messages.c.org_code, processed_messages.c.signature_id, processed_messages.c.answer)))
    engine.dispose()
    assert rows == [("HEALTH", "b" * 64, None), ("LA", "a" * 64, b"<first answer/>")]


def test_0004_recomputes_the_family_name_key_for_letters_outside_a_to_z(database_url):
    """Children stored before 0004 are found by the key in every script (and back on downgrade)."""
    import datetime as dt
    import json

    from alembic import command
    from sqlalchemy import create_engine, select

    from gateway.db import children
    from gateway.index.model import family_name_key

    cfg = _alembic_config(database_url)
    command.downgrade(cfg, "0003")
    engine = create_engine(database_url)
    now = dt.datetime.now(dt.timezone.utc)
    old_keys = {"AAAA-0000-0000-0001": ("Søren", "sren"), "AAAA-0000-0000-0002": ("O'Brien", "obrien"),
                "AAAA-0000-0000-0003": ("Łukasz-Nguyễn", "ukasznguyen")}
    with engine.begin() as conn:
        for child_id, (family, key) in old_keys.items():
            record = {"identity": {"family_name": family, "given_names": ["Ann"], "date_of_birth": "2015-01-01",
                                   "gender": "female"}}
            conn.execute(children.insert().values(
                child_id=child_id, shielded=False, record=json.dumps(record), family_name_norm=key,
                date_of_birth=dt.date(2015, 1, 1), created_at=now, updated_at=now))

    def keys():
        with engine.connect() as conn:
            return dict(conn.execute(select(children.c.child_id, children.c.family_name_norm)).all())

    command.upgrade(cfg, "head")
    assert keys() == {child_id: family_name_key(family) for child_id, (family, _) in old_keys.items()}
    assert keys()["AAAA-0000-0000-0001"] == "søren"
    command.downgrade(cfg, "0003")
    assert keys() == {child_id: key for child_id, (_, key) in old_keys.items()}
    command.upgrade(cfg, "head")
    engine.dispose()
