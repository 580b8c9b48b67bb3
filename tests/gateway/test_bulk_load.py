"""`contactgate load` (gateway.bulk_load) in this process, on both backends: a signed load file made
with `contactgate load-prepare`'s code (connectors.load_file) from generated extracts (bench/
population.py: families, twins, siblings, typos) links exactly as the online path does, is audited
once per batch in the batch's own transaction, and a file that is forged, unsigned, altered, or
from an organisation that may not push is refused, audited, and changes nothing.

The command itself (a kill and a resume, reads while it runs) is in tests/gateway/cli/test_load.py.
"""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import func, select, update

from bench import load as bench_load
from contactgate_wire import load_file
from contactgate_wire.faults import (
    CertificateRejected, MalformedMessage, NotAccredited, Refusal, SchemaInvalid, ScopeDenied, SignatureInvalid,
)
from gateway import bulk_load
from gateway.audit import chain as audit
from gateway.db import audit_log, bulk_loads, certificates, make_engine, organisations, source_records
from gateway.index import batches
from gateway.index.deciding import DEFAULT_POLICY

BACKENDS = ["sqlite", "postgresql"]
CHILDREN = 100
BATCH = 40


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """Extracts of three organisations, trust material, and each organisation's signed load file."""
    work = tmp_path_factory.mktemp("bulk-load")
    extracts = bench_load.write_extracts(work, CHILDREN, seed=30)
    with bench_load.trust_material(work) as (anchors, folders):
        files = {}
        for code, extract in extracts.items():
            files[code] = work / f"{code.lower()}.cgload"
            bench_load.prepare(extract, work / "mapping.yaml", folders[code], files[code], batch_size=BATCH)
        yield {"work": work, "extracts": extracts, "mapping": work / "mapping.yaml", "anchors": anchors,
               "folders": folders, "files": files}


@pytest.fixture(params=BACKENDS)
def fresh(request, material, migrated_templates):
    """A fresh database with the organisations registered and accredited (push and query): a copy of
    the session's migrated template (migrating each test's database cost 5-7 s on PostgreSQL)."""
    with migrated_templates.database(request.param) as url:
        engine = make_engine(url)
        bench_load.register(engine, material["folders"])
        yield engine
        engine.dispose()


TRAIL = audit.AuditTrail(audit.new_key())


def _load(engine, material, code, **kwargs):
    return bulk_load.run(engine, TRAIL, material["anchors"], material["files"][code], policy=DEFAULT_POLICY,
                         purge_years=6, **kwargs)


def _entries(engine, operation=bulk_load.OPERATION):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(audit_log).where(audit_log.c.operation == operation)
                                              .order_by(audit_log.c.seq)).mappings()]


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _batches(material, code) -> int:
    with open(material["files"][code], "rb") as f:
        return len(json.loads(f.readline())["batches"])


# ---- the same outcomes as the online path ------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_load_links_the_records_exactly_as_pushes_do(backend, material, migrated_templates):
    """The same extracts through the online path (mapped as `push` maps them, SubmitUpdates'
    apply_updates per push batch) and through the load file, into two fresh databases: the same
    clusters of source records, the same review pairs, the same counts of every table."""
    with migrated_templates.database(backend) as url_online, migrated_templates.database(backend) as url_load:
        online, loaded = make_engine(url_online), make_engine(url_load)
        try:
            bench_load.register(online, material["folders"])
            bench_load.register(loaded, material["folders"])
            for code, extract in material["extracts"].items():
                bench_load.online(online, TRAIL, code, extract, material["mapping"], batch_size=100)
            for code in material["extracts"]:
                _load(loaded, material, code)
            expected, got = bench_load.outcome(online), bench_load.outcome(loaded)
        finally:
            online.dispose()
            loaded.dispose()
    assert got["counts"] == expected["counts"]
    assert got["review_pairs"] == expected["review_pairs"]
    assert got["clusters"] == expected["clusters"]
    # the data is not trivial: children held by several organisations, and pairs held for review
    assert any(len(cluster) > 1 for cluster in got["clusters"])
    assert got["review_pairs"]


# ---- audited per batch, in the batch's transaction ---------------------------------------------

def test_each_batch_is_audited_once_with_its_rows(fresh, material):
    summary = _load(fresh, material, "LA")
    n = _batches(material, "LA")
    entries = _entries(fresh)
    assert summary.batches_applied == n and summary.records_applied == _count(fresh, source_records)
    assert [e["outcome"] for e in entries] == ["accepted"] * n
    assert [e["detail"].split(":")[0].split()[-1] for e in entries] == [f"{i}/{n}" for i in range(1, n + 1)]
    assert all(e["org_code"] == "LA" and e["child_ids"] for e in entries)
    assert TRAIL.verify(fresh).ok


def test_a_batch_that_fails_leaves_neither_its_rows_nor_its_audit_entry(fresh, material, monkeypatch):
    """The second batch fails mid-way (after apply_updates wrote its rows): its rows, its audit entry
    and its progress roll back together; the first batch stays, with its entry."""
    real, calls = batches.apply_updates, []

    def failing(conn, *args, **kwargs):
        results = real(conn, *args, **kwargs)
        calls.append(len(results))
        if len(calls) == 2:
            raise RuntimeError("the machine fell over")
        return results

    monkeypatch.setattr(batches, "apply_updates", failing)
    with pytest.raises(RuntimeError):
        _load(fresh, material, "LA")
    assert _count(fresh, source_records) == calls[0] == BATCH
    assert len(_entries(fresh)) == 1
    with fresh.connect() as conn:
        assert conn.execute(select(bulk_loads.c.batches_done)).scalar_one() == 1
    monkeypatch.setattr(batches, "apply_updates", real)
    summary = _load(fresh, material, "LA")  # run again: resumes at the second batch
    assert summary.batches_before == 1 and summary.batches_applied == _batches(material, "LA") - 1
    assert _count(fresh, source_records) == summary.records_applied + BATCH
    assert len(_entries(fresh)) == _batches(material, "LA")
    again = _load(fresh, material, "LA")
    assert again.already_loaded and len(_entries(fresh)) == _batches(material, "LA")


# ---- refusals ----------------------------------------------------------------------------------

def _rewrite(material, tmp_path, change_header=None, change_lines=None, name="changed.cgload"):
    with open(material["files"]["LA"], "rb") as f:
        header = json.loads(f.readline())
        lines = f.read().splitlines()
    if change_header:
        change_header(header)
    if change_lines:
        lines = change_lines(lines)
    path = tmp_path / name
    path.write_bytes(json.dumps(header, sort_keys=True).encode() + b"\n" + b"".join(l + b"\n" for l in lines))
    return path


def _resign(header, key_path):
    from cryptography.hazmat.primitives import serialization

    header["signature"] = load_file.sign(header, serialization.load_pem_private_key(key_path.read_bytes(), None))


def _forged_batch(material):
    """A batch the operator wrote: a record of their own making added (a valid record, in the file's form)."""
    def change(lines):
        import copy

        from lxml import etree

        payload = etree.fromstring(load_file.batch_xml(lines[0]))
        forged = copy.deepcopy(payload[0])
        srid = forged.find("{urn:contactgate:v1}SourceRecordId")
        srid.text = "FORGED-" + srid.text
        payload.append(forged)
        return [load_file.batch_line(etree.tostring(payload, encoding="utf-8")), *lines[1:]]
    return change


def _refused(engine, material, path, expected: type[Refusal]):
    before = _count(engine, audit_log)
    with pytest.raises(expected) as refused:
        bulk_load.run(engine, TRAIL, material["anchors"], path, policy=DEFAULT_POLICY, purge_years=6)
    entries = _entries(engine)
    assert [e["outcome"] for e in entries] == ["refused"], entries
    assert entries[0]["fault_code"] == expected.code
    assert _count(engine, audit_log) == before + 1
    assert _count(engine, source_records) == 0 and _count(engine, bulk_loads) == 0
    return refused.value


def test_an_unsigned_file_is_refused(fresh, material, tmp_path):
    path = _rewrite(material, tmp_path, change_header=lambda h: h.update(signature=""))
    _refused(fresh, material, path, SignatureInvalid)


def test_a_batch_changed_by_the_operator_is_refused_before_anything_is_written(fresh, material, tmp_path):
    """The forged batch is the LAST one: the whole file is checked before the first batch is applied."""
    def last_forged(lines):
        return [*lines[:-1], *_forged_batch(material)([lines[-1]])]

    _refused(fresh, material, _rewrite(material, tmp_path, change_lines=last_forged), SignatureInvalid)


def test_a_header_changed_by_the_operator_is_refused(fresh, material, tmp_path):
    """The operator adds a batch of their own and puts its digest in the header: the signature fails."""
    def add(lines):
        return [*lines, *_forged_batch(material)([lines[0]])]

    def digest(header):
        lines = add(_rewrite(material, tmp_path, name="probe").read_bytes().splitlines()[1:])
        header["batches"].append(load_file.batch_digest(lines[-1]))

    path = _rewrite(material, tmp_path, change_header=digest, change_lines=add)
    _refused(fresh, material, path, SignatureInvalid)


def test_a_batch_dropped_from_the_file_is_refused(fresh, material, tmp_path):
    _refused(fresh, material, _rewrite(material, tmp_path, change_lines=lambda lines: lines[:-1]), SignatureInvalid)


def test_a_file_signed_with_a_key_the_gateway_does_not_trust_is_refused(fresh, material, tmp_path):
    """The operator makes a CA and a certificate naming LA, and signs a file with it."""
    with bench_load.trust_material(tmp_path, codes=("LA",)) as (_, rogue):
        from gateway.trust import pki

        cert = pki.load_cert_pem((rogue["LA"] / "cert.pem").read_bytes())

        def forge(header):
            header["certificate"] = pki.cert_pem(cert).decode()
            _resign(header, rogue["LA"] / "key.pem")

        _refused(fresh, material, _rewrite(material, tmp_path, change_header=forge), CertificateRejected)


def test_a_file_signed_with_another_organisations_certificate_is_refused(fresh, material, tmp_path):
    """HEALTH's key signs a file naming LA (HEALTH may push in this registry)."""
    from contactgate_wire.faults import SignerMismatch

    def as_health(header):
        header["certificate"] = (material["folders"]["HEALTH"] / "cert.pem").read_text()
        _resign(header, material["folders"]["HEALTH"] / "key.pem")

    _refused(fresh, material, _rewrite(material, tmp_path, change_header=as_health), SignerMismatch)


def test_a_file_of_an_organisation_not_accredited_is_refused(fresh, material):
    with fresh.begin() as conn:
        conn.execute(update(organisations).where(organisations.c.code == "LA").values(status="suspended"))
    _refused(fresh, material, material["files"]["LA"], NotAccredited)


def test_a_file_of_an_organisation_without_the_push_scope_is_refused(fresh, material):
    with fresh.begin() as conn:
        conn.execute(update(organisations).where(organisations.c.code == "LA").values(scopes="query"))
    _refused(fresh, material, material["files"]["LA"], ScopeDenied)


def test_a_file_signed_with_a_revoked_certificate_is_refused(fresh, material):
    import datetime as dt

    with fresh.begin() as conn:
        conn.execute(update(certificates).where(certificates.c.org_code == "LA").values(
            revoked_at=dt.datetime.now(dt.timezone.utc), revoked_reason="key lost"))
    _refused(fresh, material, material["files"]["LA"], CertificateRejected)


def test_a_file_that_is_not_a_load_file_is_refused(fresh, material, tmp_path):
    path = tmp_path / "extract.csv"
    path.write_bytes(material["extracts"]["LA"].read_bytes())
    _refused(fresh, material, path, MalformedMessage)


def test_a_signature_that_is_not_base64_does_not_hold(material):
    with open(material["files"]["LA"], "rb") as f:
        header = json.loads(f.readline())
    from gateway.trust import pki

    cert = pki.load_cert_pem(header["certificate"].encode())
    assert load_file.signature_holds(header, cert)
    assert not load_file.signature_holds({**header, "signature": "!!"}, cert)
    assert not load_file.signature_holds({**header, "records": header["records"] + 1}, cert)
    assert not load_file.signature_holds({**header, "signature": base64.b64encode(b"x" * 64).decode()}, cert)


# ---- replay: a load file applied once, and never over newer data (review of issue 30 item 1) ----

def test_a_loaded_file_with_its_header_rewritten_is_not_applied_again(fresh, material, tmp_path):
    """The operator re-serialises the header line (spaces, key order: the signed fields unchanged,
    the signature still holds): still the same load, already loaded, nothing applied again."""
    first = _load(fresh, material, "LA")
    with open(material["files"]["LA"], "rb") as f:
        header = json.loads(f.readline())
        rest = f.read()
    path = tmp_path / "reserialised.cgload"  # keys reversed, no spaces: other bytes, the same signed fields
    path.write_bytes(json.dumps(dict(reversed(list(header.items()))), separators=(",", ":")).encode() + b"\n" + rest)
    assert path.read_bytes().split(b"\n", 1)[0] != material["files"]["LA"].read_bytes().split(b"\n", 1)[0]
    again = bulk_load.run(fresh, TRAIL, material["anchors"], path, policy=DEFAULT_POLICY, purge_years=6)
    assert again.already_loaded and again.batches_applied == 0
    assert len(_entries(fresh)) == first.batches_applied
    assert _count(fresh, bulk_loads) == 1


def test_a_file_made_before_the_organisations_later_pushes_is_refused(fresh, material):
    """LA pushes (online) after its load file was made; the operator then loads the older file: it
    would restate every record as it stood before the pushes. Refused, audited, nothing changed."""
    from contactgate_wire.faults import MessageExpired

    bench_load.online(fresh, TRAIL, "LA", material["extracts"]["LA"], material["mapping"], batch_size=100)
    with fresh.connect() as conn:
        before = conn.execute(select(source_records.c.source_record_id, source_records.c.record)
                              .order_by(source_records.c.source_record_id)).all()
    with pytest.raises(MessageExpired):
        _load(fresh, material, "LA")
    assert [e["outcome"] for e in _entries(fresh)] == ["refused"]
    with fresh.connect() as conn:
        assert conn.execute(select(source_records.c.source_record_id, source_records.c.record)
                            .order_by(source_records.c.source_record_id)).all() == before
    assert _count(fresh, bulk_loads) == 0


def test_a_push_accepted_while_a_load_runs_stops_it_before_its_next_batch(fresh, material):
    """LA pushes after the first batch of its (older) load file is committed: the next batch's
    transaction finds the push and refuses the rest of the file; the first batch stays."""
    from contactgate_wire.faults import MessageExpired

    pushed = []

    def push_after_the_first_batch(summary):
        if summary.batches_applied == 1 and not pushed:
            pushed.append(bench_load.online(fresh, TRAIL, "LA", material["extracts"]["LA"], material["mapping"],
                                            batch_size=100))

    with pytest.raises(MessageExpired):
        _load(fresh, material, "LA", progress=push_after_the_first_batch)
    assert [e["outcome"] for e in _entries(fresh)] == ["accepted", "refused"]
    with fresh.connect() as conn:
        assert conn.execute(select(bulk_loads.c.batches_done)).scalar_one() == 1


@pytest.mark.parametrize("bad_line", [
    b'"\\ud800"', b"[" * 100_000,
    load_file.batch_line(b'<cg:SubmitUpdates xmlns:cg="urn:contactgate:v1"><cg:Nonsense/></cg:SubmitUpdates>'),
], ids=["lone-surrogate", "deep-json", "schema-invalid"])
def test_a_signed_last_batch_that_cannot_be_read_is_refused_before_anything_is_applied(
        fresh, material, tmp_path, bad_line):
    """The organisation's own key signs it (a faulty load-prepare): refused, audited, nothing applied."""
    def sign_it(header):
        header["batches"][-1] = load_file.batch_digest(bad_line)
        _resign(header, material["folders"]["LA"] / "key.pem")

    path = _rewrite(material, tmp_path, change_header=sign_it, change_lines=lambda lines: [*lines[:-1], bad_line])
    _refused(fresh, material, path, MalformedMessage if b"cg:" not in bad_line else SchemaInvalid)


def test_a_batch_changed_on_disk_after_the_file_was_checked_is_not_applied(fresh, material, tmp_path, monkeypatch):
    """The operator swaps the last batch for one of their own after the whole file was checked and
    before it is applied (time of check, time of use): the batch is checked again as it is read for
    applying, refused, and not applied; the batches before it, as signed, stay applied."""
    path = tmp_path / "swapped.cgload"
    path.write_bytes(material["files"]["LA"].read_bytes())
    real = bulk_load.check_batches

    def then_swap(*args, **kwargs):
        real(*args, **kwargs)
        _rewrite(material, tmp_path, change_lines=lambda lines: [*lines[:-1], *_forged_batch(material)([lines[-1]])],
                 name="swapped.cgload")

    monkeypatch.setattr(bulk_load, "check_batches", then_swap)
    with pytest.raises(SignatureInvalid):
        bulk_load.run(
            fresh, TRAIL, material["anchors"], path, policy=DEFAULT_POLICY, purge_years=6)
    assert [e["outcome"] for e in _entries(fresh)] == ["accepted"] * (_batches(material, "LA") - 1) + ["refused"]
    assert _count(fresh, source_records) <= BATCH * (_batches(material, "LA") - 1)  # not the forged record


def test_a_load_validates_with_the_compiled_schema_the_message_pipeline_holds():
    """The XSD is compiled once per thread, as the message pipeline holds it (Services.schema), and a
    load validates with that one: not compiled again for every load."""
    import contactgate_schemas as schemas
    from gateway.pipeline.context import compiled_schema

    assert bulk_load._schema() is bulk_load._schema() is compiled_schema(schemas.read(schemas.XSD_NAME))
