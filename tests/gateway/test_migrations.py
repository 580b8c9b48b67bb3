"""The Alembic migrations build exactly the schema the code describes, on both backends."""

import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.db import metadata
from gateway.index.sealed import answer_context
from gateway.security.vault import current


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
    assert rows[0] == ("HEALTH", "b" * 64, None)
    assert rows[1][:2] == ("LA", "a" * 64) and rows[1][2].startswith(b"cg1:")  # sealed by 0007
    assert current().open_bytes(rows[1][2].decode(), answer_context("LA", "a" * 64)) == b"<first answer/>"


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

    command.upgrade(cfg, "0004")  # (0007 retires the key: see the 0005 test)
    assert keys() == {child_id: family_name_key(family) for child_id, (family, _) in old_keys.items()}
    assert keys()["AAAA-0000-0000-0001"] == "søren"
    command.downgrade(cfg, "0003")
    assert keys() == {child_id: key for child_id, (_, key) in old_keys.items()}
    command.upgrade(cfg, "head")
    engine.dispose()


def _rows_at_0005(conn) -> dict:
    """What the tables held at revision 0005 (the columns of that revision only)."""
    from sqlalchemy import select

    from gateway.db import children, review_queue, source_records

    shape = {"children": (children.c.child_id, children.c.record, children.c.provenance, children.c.shielded),
             "source_records": tuple(source_records.c), "review_queue": tuple(review_queue.c)}
    return {name: sorted(tuple(map(str, r)) for r in conn.execute(select(*columns))) for name, columns in shape.items()}


def test_0005_carries_children_involvements_and_held_records_over(database_url):
    """Before 0005 a child's record was one record for all its sources, involvements belonged to an
    organisation, and a record held for review was not stored. After: each source has its record,
    each involvement its source record, every child its keys and provenance, and the held record
    is a child of its own, paired with its candidate."""
    import datetime as dt
    import json

    from alembic import command
    from sqlalchemy import create_engine, select, text

    from gateway.db import blocking_keys, children, involvements, review_queue, source_records
    from gateway.index import sealed, store

    cfg = _alembic_config(database_url)
    command.downgrade(cfg, "0004")
    engine = create_engine(database_url)
    now = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.timezone.utc)
    record = {"identity": {"family_name": "Abara", "given_names": ["Tobi"], "date_of_birth": "2014-05-05",
                           "gender": "male", "nhs_number": "9434765919", "previous_names": []},
              "address": {"lines": ["3 Kiln Road"], "postcode": "LS6 2AB", "town": "Leeds"}, "carers": []}
    held = {"record": {**record, "identity": {**record["identity"], "given_names": ["Toby"]}},
            "involvements": [{"service": "Early help", "start": "2025-01-01", "end": None,
                              "caf_assessment": False, "lead_professional": False, "practitioner_name": None,
                              "role": None, "phone": None, "email": None}]}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO children (child_id, shielded, record, family_name_norm, date_of_birth, "
                          "nhs_number, created_at, updated_at) VALUES ('AAAA-0000-0000-0001', false, :r, "
                          "'abara', '2014-05-05', '9434765919', :now, :now)"), {"r": json.dumps(record), "now": now})
        conn.execute(text("INSERT INTO source_records (org_code, source_record_id, child_id) "
                          "VALUES ('LA', 'la-1', 'AAAA-0000-0000-0001')"))
        conn.execute(text("INSERT INTO involvements (child_id, org_code, service, start, caf_assessment, "
                          "lead_professional) VALUES ('AAAA-0000-0000-0001', 'LA', 'Social care', '2024-01-01', "
                          "false, false)"))
        conn.execute(text("INSERT INTO review_queue (org_code, source_record_id, candidate_child_id, submitted, "
                          "created_at) VALUES ('GP', 'gp-7', 'AAAA-0000-0000-0001', :s, :now)"),
                     {"s": json.dumps(held), "now": now})
    command.upgrade(cfg, "0005")
    with engine.connect() as conn, sealed.installed(conn, sealed.plain()):
        la = conn.execute(select(source_records).where(source_records.c.source_record_id == "la-1")).one()
        assert json.loads(la.record)["identity"]["family_name"] == "Abara"
        assert conn.execute(select(involvements.c.source_record_id).where(
            involvements.c.child_id == "AAAA-0000-0000-0001")).scalars().all() == ["la-1"]
        keys = set(conn.execute(select(blocking_keys.c.key)
                                .where(blocking_keys.c.child_id == "AAAA-0000-0000-0001")).scalars())
        assert "nhs:9434765919" in keys
        child = conn.execute(select(children.c.nhs_number, children.c.provenance)
                             .where(children.c.child_id == "AAAA-0000-0000-0001")).one()
        assert child.nhs_number is None and json.loads(child.provenance)["identity.family_name"]["org"] == "LA"
        entry = conn.execute(select(review_queue)).one()
        assert entry.status == "open" and entry.child_id not in (None, "AAAA-0000-0000-0001")
        held_as = conn.execute(select(source_records.c.record).where(source_records.c.child_id == entry.child_id)).scalar_one()
        assert json.loads(held_as)["identity"]["given_names"] == ["Toby"]
        before = _rows_at_0005(conn)

    # 0007 seals all of it: nothing in clear, every value still read through the store.
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        values = [str(v) for table in (children, source_records, involvements, review_queue, blocking_keys)
                  for row in conn.execute(select(table)) for v in row]
        # Random ciphertext and blind keys can spell a short word by chance ("LS6" once did): the
        # needles are searched in everything else, and a sealed value must be a whole token.
        opaque = re.compile(r"cg1:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+|[A-Za-z0-9_-]{22}")
        raw = " ".join(opaque.sub("", v) for v in values)
        assert sum(bool(opaque.fullmatch(v)) for v in values) >= 10, "the test must see sealed and blinded values"
        for clear in ("Abara", "abara", "Tobi", "Toby", "2014-05-05", "9434765919", "LS6", "Kiln", "la-1", "gp-7"):
            assert clear not in raw
        stored = store.get_child(conn, entry.child_id, dt.date(2026, 1, 5))
        assert stored.identity.given_names == ("Toby",) and stored.identity.nhs_number == "9434765919"
        assert [c.involvement.service for c in stored.contacts] == ["Early help"]
        assert store.provenance(conn, "AAAA-0000-0000-0001")["sources"][0]["source_record_id"] == "la-1"
    command.downgrade(cfg, "0005")  # opened again, exactly
    with engine.connect() as conn:
        after = _rows_at_0005(conn)
    assert after["source_records"] == before["source_records"]
    assert after["children"] == before["children"]
    command.downgrade(cfg, "0004")
    with engine.connect() as conn:
        assert conn.execute(select(text("nhs_number")).select_from(text("children"))
                            .where(text("child_id = 'AAAA-0000-0000-0001'"))).scalar_one() == "9434765919"
    command.upgrade(cfg, "head")
    engine.dispose()


def test_0010_links_the_entries_written_before_into_the_public_chain(database_url):
    """Entries written before 0010 (without the new fields) verify after it, each with its public link."""
    from alembic import command
    from sqlalchemy import create_engine, select, text

    from gateway.audit import AuditTrail, new_key
    from gateway.audit.links import GENESIS, entry_hash, public_hash
    from gateway.db import audit_log

    cfg = _alembic_config(database_url)
    command.downgrade(cfg, "0009")
    engine = create_engine(database_url)
    key, prev = new_key(), GENESIS
    with engine.begin() as conn:
        for seq in (1, 2, 3):
            row = {"seq": seq, "at": f"2026-01-0{seq}T00:00:00.000000Z", "org_code": "LA", "cert_fingerprint": None,
                   "user_id": "u", "role": "r", "operation": "GetContacts", "reason_code": None, "reason_text": None,
                   "child_ids": "", "outcome": "accepted", "fault_code": None, "request_digest": None,
                   "detail": f"entry {seq}", "prev_hash": prev}
            row["entry_hash"] = prev = entry_hash(key, prev, row)
            conn.execute(text("INSERT INTO audit_log (seq, at, org_code, cert_fingerprint, user_id, role, operation, "
                              "reason_code, reason_text, child_ids, outcome, fault_code, request_digest, detail, "
                              "prev_hash, entry_hash) VALUES (:seq, :at, :org_code, :cert_fingerprint, :user_id, "
                              ":role, :operation, :reason_code, :reason_text, :child_ids, :outcome, :fault_code, "
                              ":request_digest, :detail, :prev_hash, :entry_hash)"), row)
        conn.execute(text("UPDATE audit_head SET seq = 3, entry_hash = :h WHERE id = 1"), {"h": prev})
    command.upgrade(cfg, "head")
    try:
        assert AuditTrail(key).verify(engine).ok
        with engine.connect() as conn:
            rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).mappings().all()
        link = GENESIS
        for row in rows:
            link = public_hash(link, row)
            assert row["public_hash"] == link
    finally:
        with engine.begin() as conn:  # leave the database as the other tests expect it
            conn.execute(text("DELETE FROM audit_log"))
            conn.execute(text("UPDATE audit_head SET seq = 0, entry_hash = :g, public_hash = :g WHERE id = 1"),
                         {"g": GENESIS})
        engine.dispose()


def test_0012_remembers_where_each_officer_signed_in_at_the_console_in_the_last_30_days(database_url):
    """So that the upgrade does not leave officers open to the lock it closes (review of issue 22, B)."""
    import datetime as dt

    from alembic import command
    from sqlalchemy import create_engine, select, text

    from gateway.db import officer_known_sources

    cfg = _alembic_config(database_url)
    command.downgrade(cfg, "0011")
    engine = create_engine(database_url)
    now = dt.datetime.now(dt.timezone.utc)

    def at(days: float) -> str:
        return (now - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    entries = [  # (officer, operation, outcome, address, days ago)
        ("alice", "officer.login", "done", "198.51.100.10", 3),
        ("alice", "officer.step_up", "done", "198.51.100.10", 1),  # the latest from there
        ("alice", "officer.login", "done", "2001:db8:1:2::5", 2),  # counted by its /64
        ("bob", "officer.login", "refused", "203.0.113.9", 1),  # refused: not where bob signs in
        ("bob", "officer.login", "done", "198.51.100.20", 40),  # longer ago than remembered
        ("carol", "officer.login", "done", "local:carol", 1),  # the command line's old source
        ("ghost", "officer.login", "done", "198.51.100.30", 1),  # no such officer (any more)
    ]
    with engine.begin() as conn:
        for officer_id in ("alice", "bob", "carol"):
            conn.execute(text("INSERT INTO officers (officer_id, name, roles, password_hash, must_change_password, "
                              "totp_secret, failed_signins, created_at, updated_at) VALUES (:o, :o, 'officer', "
                              "'$argon2id$x', false, 'cg1:x', 0, :now, :now)"), {"o": officer_id, "now": now})
        for seq, (officer_id, operation, outcome, address, days) in enumerate(entries, 1):
            conn.execute(text("INSERT INTO audit_log (seq, at, user_id, operation, child_ids, outcome, prev_hash, "
                              "entry_hash, public_hash, source_address) VALUES (:seq, :at, :o, :op, '', :outcome, "
                              "'0', '0', '0', :address)"),
                         {"seq": seq, "at": at(days), "o": officer_id, "op": operation, "outcome": outcome,
                          "address": address})
    command.upgrade(cfg, "head")
    try:
        with engine.connect() as conn:
            known = {(r.officer_id, r.source): r.last_signed_in_at for r in conn.execute(select(officer_known_sources))}
        assert set(known) == {("alice", "198.51.100.10"), ("alice", "2001:db8:1:2::/64")}
        latest = known[("alice", "198.51.100.10")]
        latest = latest if latest.tzinfo else latest.replace(tzinfo=dt.timezone.utc)
        assert abs(latest - (now - dt.timedelta(days=1))) < dt.timedelta(seconds=2)
        command.downgrade(cfg, "0011")  # and back
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()
