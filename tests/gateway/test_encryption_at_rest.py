"""Encryption at rest (issue 7): what the database holds is ciphertext and blind indexes.

Attacks a reader of the database (an administrator, a backup, a stolen disk): every identifying
value pushed is looked for in the raw tables and in the database files themselves, on both
backends; a value moved to another row does not open; the data keys never enter the database.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from gateway.db import children, metadata, source_records
from gateway.index import sealed, store
from gateway.security import vault
from tests.support import child_update, in_clear, nhs_number, unique, unique_name

READ = dict(user_id="enc.tester", role="gp", reason_code="referral", reason_text="encryption test")


def _distinctive_child():
    """A child whose every identifying value is unlike anything else in the index."""
    family, given = unique_name("Sealy"), unique_name("Quen")
    values = {
        "family": family, "given": given, "dob": "2013-07-29", "nhs": nhs_number(int(unique()[:7], 16)),
        "postcode": "ZE2 9QX", "line": f"{unique_name('')} Terrace", "carer": unique_name("Carer"),
        "phone": "01632 960" + str(int(unique()[:3], 16) % 1000).zfill(3), "email": f"{unique_name('p')}@enc.example",
        "practitioner": unique_name("Prac"), "srid": unique("enc-srid-"),
    }
    update = child_update(values["srid"], family, given, values["dob"], nhs=values["nhs"], postcode=values["postcode"],
                          involvements_=[{"Service": "Early help", "PractitionerName": values["practitioner"],
                                          "Role": "family support worker", "Phone": values["phone"],
                                          "Email": values["email"], "Start": "2025-01-01",
                                          "CafAssessment": True, "LeadProfessional": True}])
    update["Address"]["Line1"] = values["line"]
    update["Carer"] = [{"Name": values["carer"], "Relationship": "mother", "Phone": values["phone"],
                        "Email": values["email"]}]
    return update, values


def _needles(values: dict) -> list[str]:
    compact_postcode = values["postcode"].replace(" ", "")
    return [values["family"], values["family"].casefold(), values["given"], values["given"].casefold(),
            values["dob"], values["dob"].replace("-", ""), values["nhs"], values["postcode"], compact_postcode,
            values["line"], values["carer"], values["phone"], values["email"], values["practitioner"],
            values["srid"]]


def _raw_dump(engine) -> str:
    """Every value of every table, as text: what anyone with SQL access reads."""
    parts = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.extend(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
    return "\n".join(parts)


def test_no_identifying_value_is_in_any_table_on_either_backend(gateway, clients):
    update_, values = _distinctive_child()
    la = clients("la")
    [created] = la.submit_updates([update_])
    assert created["Outcome"] == "created"
    la.find_child(family_name=values["family"], date_of_birth=values["dob"], **READ)  # audited reads too
    child = la.get_contacts(created["ChildId"], **READ)
    assert child["Identity"]["FamilyName"] == values["family"]  # ...and every value still reads back
    assert child["Contact"][0]["Involvement"]["Email"] == values["email"]
    dump = _raw_dump(gateway.engine)
    found = [needle for needle in _needles(values) if needle in dump]
    assert found == [], f"in clear in the database: {found}"


def _postgresql_files(engine) -> bytes:
    """Every file of the database's tables, TOAST tables and indexes, after a checkpoint, where
    the server lets this process read them (else skipped: the raw-table scan still ran)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")
        directory = Path(conn.exec_driver_sql("SHOW data_directory").scalar())
        names = [t.name for t in metadata.sorted_tables]
        relations = conn.execute(text(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c WHERE c.oid IN ("
            " SELECT oid FROM pg_class WHERE relname = ANY(:names)"
            " UNION SELECT reltoastrelid FROM pg_class WHERE relname = ANY(:names) AND reltoastrelid <> 0"
            " UNION SELECT indexrelid FROM pg_index WHERE indrelid IN"
            "  (SELECT oid FROM pg_class WHERE relname = ANY(:names)))"), {"names": names}).scalars().all()
    try:
        return b"".join((directory / p).read_bytes() for p in relations if p and (directory / p).exists())
    except PermissionError:
        pytest.skip("the PostgreSQL data files are not readable by this user")


def test_the_database_files_hold_no_identifying_value(gateway, clients):
    update_, values = _distinctive_child()
    clients("la").submit_updates([update_])
    if gateway.backend == "postgresql":
        blob = _postgresql_files(gateway.engine)
    else:
        path = Path(gateway.database_url.split("///", 1)[1])
        blob = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    found = [n for n in _needles(values) if in_clear(n, blob) or in_clear(n, blob, "utf-16-le")]
    assert found == [], f"in clear in the database files: {found}"


def test_a_demo_run_leaves_nothing_readable_in_the_database_file(tmp_path):
    """The product as a newcomer runs it (`make demo`): afterwards, the database file and the audit
    trail hold none of the demo children's names, birth dates, postcodes, phones, emails or NHS numbers."""
    from contactgate_local.demo import _children, run_demo

    home = tmp_path / "demo-home"
    assert run_demo(home=home) == 0
    needles = []
    for pushed in _children():
        identity = pushed["Identity"]
        needles += [identity["FamilyName"], identity["GivenName"][0], identity["DateOfBirth"], identity["NhsNumber"],
                    pushed["Address"]["Postcode"], pushed["Address"]["Line1"], pushed["Carer"][0]["Name"],
                    pushed["Carer"][0]["Phone"], pushed["SourceRecordId"]]
        for involvement in pushed["Involvement"]:
            needles += [involvement["PractitionerName"], involvement["Phone"], involvement.get("Email")]
    needles = sorted({n for n in needles if n})
    blob = b"".join(p.read_bytes() for p in home.glob("contactgate.db*"))
    assert blob, "the demo left its database"
    found = [n for n in needles if in_clear(n, blob)]
    assert found == [], f"in clear in the demo's database file: {found}"
    keyring = json.loads((home / "keys" / "data-keys.json").read_text())
    for key in [keyring["index_key"], *keyring["data_keys"].values()]:
        assert key.encode() not in blob, "a data key is in the database"
    assert (home / "keys" / "data-keys.json").stat().st_mode & 0o077 == 0


def test_a_value_moved_to_another_row_does_not_open(engine):
    """Associated data binds each sealed value to its row: copying one child's record over another's
    (a database administrator 'fixing' a record) is refused, not shown as the other child's."""
    from tests.gateway.index.test_matching_rules import push, update as make_update

    [a] = push(engine, "LA", make_update("la-move-1", family="Abbot", given=("Ada",), dob="2014-01-01"))
    [b] = push(engine, "LA", make_update("la-move-2", family="Zubrowski", given=("Zed",), dob="2011-12-12",
                                          gender="male"))
    with engine.begin() as conn:
        record_a = conn.execute(select(children.c.record).where(children.c.child_id == a.child_id)).scalar_one()
        conn.execute(update(children).where(children.c.child_id == b.child_id).values(record=record_a))
    with engine.connect() as conn:
        with pytest.raises(vault.SealError):
            store.get_child(conn, b.child_id, dt.date(2026, 1, 1))
        assert store.get_child(conn, a.child_id, dt.date(2026, 1, 1)).identity.family_name == "Abbot"


def test_a_source_record_moved_to_another_organisation_does_not_open(engine):
    from tests.gateway.index.test_matching_rules import orgs, push, update as make_update

    orgs(engine)
    [a] = push(engine, "LA", make_update("la-org-1", family="Ormerod", given=("Olive",), dob="2015-05-05"))
    with engine.begin() as conn:
        conn.execute(update(source_records).where(source_records.c.org_code == "LA").values(org_code="SCH"))
    with engine.connect() as conn, pytest.raises(vault.SealError):
        store.provenance(conn, a.child_id)


def test_tampered_or_truncated_values_do_not_open():
    v = vault.throwaway()
    token = v.seal("Ada Abbot", "children.record|X")
    assert v.open(token, "children.record|X") == "Ada Abbot"
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), token[:20], "cg1:knope:AAAA", "Ada Abbot"):
        with pytest.raises(vault.SealError):
            v.open(bad, "children.record|X")
    with pytest.raises(vault.SealError):
        v.open(token, "children.provenance|X")  # another column of the same row
    assert v.seal("Ada", "c") != v.seal("Ada", "c"), "a random nonce per value"
    assert v.blind("Ada", "p") == v.blind("Ada", "p") != vault.throwaway().blind("Ada", "p")
    assert v.blind("Ada", "p") != v.blind("Ada", "q"), "blind indexes differ by purpose"


def test_a_keyring_readable_by_others_or_missing_is_refused(tmp_path):
    path = tmp_path / "data-keys.json"
    with pytest.raises(vault.KeyringError, match="contactgate init"):
        vault.read_keyring(path)
    vault.write_keyring(path, vault.Keyring.generate())
    assert vault.read_keyring(path).active
    path.chmod(0o644)
    with pytest.raises(vault.KeyringError, match="readable by others"):
        vault.read_keyring(path)
    path.chmod(0o600)
    path.write_text('{"data_keys": {}, "active": "k1", "index_key": ""}')
    with pytest.raises(vault.KeyringError):
        vault.read_keyring(path)


def test_a_refused_message_leaves_no_identifying_value_in_the_audit(gateway, clients):
    """A schema refusal quotes the offending value back to the caller, never into the audit trail:
    a family name too long, a birth date that is no date."""
    from tests.gateway.pipeline.attacks import assert_post_refused, find_kwargs

    la = clients("la")
    family = "O'" + unique_name("Brienlong") * 12  # over 100 characters, with an apostrophe
    for kwargs in (find_kwargs(FamilyName=family), find_kwargs(DateOfBirth="2014-13-45")):
        seq = gateway.audit_seq()
        data = la.build_request("FindChild", **kwargs)
        assert_post_refused(gateway, la, "FindChild", data, "SchemaInvalid", org_code="LA")
        [entry] = gateway.audit_entries_after(seq)
        stored = " ".join(str(v) for v in entry.values())
        assert family[2:30] not in stored and "2014-13-45" not in stored, entry["detail"]
        if "DateOfBirth" in kwargs and kwargs["DateOfBirth"] == "2014-13-45":
            assert "a value of 10 characters, sha256" in entry["detail"]
