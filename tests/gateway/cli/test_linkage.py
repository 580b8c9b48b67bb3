"""`contactgate linkage`: a model trained from the index's own records (opened in memory only), put
in use by one senior officer and approved by a second, refused when malformed or out of range, and
never used once its file has changed after approval (the gateway does not start; a running process
links nothing). Both backends.

The index is filled by the gateway's own store (``store.apply_updates``, what a SubmitUpdates
applies, sealing with the home's keys) with two organisations' views of 150 generated children
(bench/population.py): cheap, and the same rows a push leaves."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import time

import pytest
from sqlalchemy import select

from contactgate_local import proposal_id
from gateway.db import audit_log, proposals
from gateway.index.linkage import versions
from gateway.home import sqlite_database_path
from tests.support import in_clear, in_process_gateway

BACKENDS = ["sqlite", "postgresql"]

TODAY = dt.date(2026, 12, 1)


@pytest.fixture(scope="module", params=BACKENDS)
def trained(request, tmp_path_factory):
    """A home whose index holds two organisations' records of 150 children, pushed as signed
    SubmitUpdates through the gateway's pipeline in this process, and a model trained from it (with
    a truth file of those records, outside the home)."""
    from bench import population
    from bench.linkage import wire_update

    tmp = tmp_path_factory.mktemp(f"linkage-{request.param}")
    orgs = {"LA": ("local_authority", ["push"]), "HEALTH": ("health", ["push"])}
    with in_process_gateway(request.param, tmp / "home", orgs=orgs) as pipeline:
        gw = pipeline.local
        people = population.generate(150, 23, "default", today=TODAY)
        per_org = population.views(people, 2, 23, today=TODAY)
        for org, records in per_org.items():
            for start in range(0, len(records), 250):
                batch = [wire_update(r.update) for r in records[start:start + 250]]
                assert pipeline.send(org.lower(), "SubmitUpdates", ChildUpdate=batch).status == 200
        truth = tmp / "truth.csv"
        with open(truth, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["org", "record_id", "cluster_id"])
            for org, records in per_org.items():
                writer.writerows([org, r.update.source_record_id, r.person_id] for r in records)
        result = gw.cli("linkage", "train", "--version", "trained.1", "--random-pairs", "20000", "--truth",
                        str(truth), officer="senior-s")
        gw.train_output = result.output
        gw.engine = pipeline.services.engine
        gw.pipeline = pipeline
        gw.records = [r for records in per_org.values() for r in records]
        try:
            yield gw
        finally:
            versions.IN_USE.configure(None)


def _run(gw, *args, officer="senior-s", ok=True):
    result = gw.cli(*args, expect_ok=False, officer=officer)
    assert (result.exit_code == 0) == ok, result.output
    return result


def _audit(gw, prefix="linkage."):
    with gw.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(audit_log.c.operation, audit_log.c.user_id, audit_log.c.detail)
            .where(audit_log.c.operation.like(prefix + "%")).order_by(audit_log.c.seq))]


def _copy_as(gw, version: str, change=None) -> str:
    """Another version: the trained model's file under a new version (``change(doc)`` applied)."""
    doc = json.loads(versions.path_of(gw.home, "trained.1").read_bytes())
    doc["version"] = version
    if change:
        change(doc)
    from gateway import files

    files.write_private(versions.path_of(gw.home, version), json.dumps(doc).encode())
    return version


def _in_use(gw) -> str:
    return json.loads(_run(gw, "linkage", "list", "--json").output)["in_use"]["version"]


def _put_in_use(gw, version: str) -> None:
    pid = proposal_id(_run(gw, "linkage", "use", version).output)
    _run(gw, "linkage", "approve", "--proposal", pid, officer="senior-t")


def test_train_writes_a_new_version_whose_m_exceeds_u_where_a_child_agrees_and_prints_old_against_new(trained):
    gw = trained
    path = versions.path_of(gw.home, "trained.1")
    assert path.stat().st_mode & 0o777 == 0o600
    data = path.read_bytes()
    with gw.engine.connect() as conn:
        from gateway.index import sealed

        model = versions.model_from(data, sealed.vault_of(conn), "trained.1")
    for field, level in (("given", "exact"), ("family", "exact"), ("dob", "exact"),
                         ("location", "postcode_and_line"), ("identifier", "agree")):
        i = model.raw["fields"][field]
        assert i[level]["m"] > 10 * i[level]["u"], (field, i[level])
    assert model.m["given"][-1] < model.u["given"][-1]  # a different given name: more often two children
    assert model.raw["trained"]["records"] == len(gw.records) and model.raw["trained"]["by"] == "senior-s"
    out = gw.train_output
    assert "m (in use)" in out and "m (new)" in out and "given      exact" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("in use ", "new "))]
    assert len(rows) == 2  # precision / recall / F1 of the model in use and of the new one
    [(operation, officer, detail)] = [e for e in _audit(gw) if e[0] == "linkage.train"]
    assert officer == "senior-s" and f"sha256={versions.sha256(data)}" in detail
    assert _in_use(gw) != "trained.1"  # trained is not in use: two officers decide that


def test_training_writes_nothing_of_the_index_in_clear_in_the_home(trained):
    gw = trained
    needles = set()
    for r in gw.records:
        u = r.update
        needles |= {u.identity.family_name, *u.identity.given_names}
        if u.address:
            needles |= {u.address.postcode, *u.address.lines[:1]}
        if u.identity.nhs_number:
            needles.add(u.identity.nhs_number)
    from contactgate_local import LOCAL_OFFICERS

    officers = {word.lower() for name, _ in LOCAL_OFFICERS.values() for word in name.split()}  # "Alice"
    needles = {n for n in needles if n and len(n) >= 4 and n.lower() not in officers}
    assert len(needles) > 100
    found = set()
    database = sqlite_database_path(gw.database_url)
    for path in [*gw.home.rglob("*"), *([database] if database else [])]:
        if path.is_file():
            blob = path.read_bytes()
            found |= {n for n in needles if in_clear(n, blob) or in_clear(n.lower(), blob)
                      or in_clear(n.upper(), blob)}
    assert not found, sorted(found)[:10]
    doc = json.loads(versions.path_of(gw.home, "trained.1").read_bytes())
    assert set(doc["term_frequencies"]) == {"sealed", "note"}


def test_use_then_approval_by_a_second_senior_officer_puts_the_model_in_use_both_audited(trained):
    gw = trained
    version = _copy_as(gw, "approved.1")
    before = _audit(gw)
    pid = proposal_id(_run(gw, "linkage", "use", version).output)
    assert _in_use(gw) != version  # proposed only
    assert "second officer" in _run(gw, "linkage", "approve", "--proposal", pid, ok=False).output
    assert "senior_officer" in _run(gw, "linkage", "approve", "--proposal", pid, officer="officer-b",
                                    ok=False).output
    _run(gw, "linkage", "approve", "--proposal", pid, officer="senior-t")
    assert _in_use(gw) == version
    listed = {m["version"]: m for m in json.loads(_run(gw, "linkage", "list", "--json").output)["models"]}
    assert listed[version]["in_use"] and listed[version]["approvals"][0]["approved_by"] == "senior-t"
    assert listed["trained.1"]["trained_by"] == "senior-s"
    new = [e[:2] for e in _audit(gw) if e not in before]
    assert new == [("linkage.propose", "senior-s"), ("linkage.approve", "senior-t")]
    digest = versions.sha256(versions.path_of(gw.home, version).read_bytes())
    assert digest in _audit(gw)[-1][2]
    from gateway.index import store

    versions.IN_USE.configure(gw.home)
    try:
        with gw.engine.connect() as conn:
            assert store.scoring_model(conn).version == version  # what the gateway links with now
    finally:
        versions.IN_USE.configure(gw.home)


def test_a_declined_model_is_not_put_in_use_and_the_decline_is_audited(trained):
    gw = trained
    version = _copy_as(gw, "declined.1")
    was = _in_use(gw)
    pid = proposal_id(_run(gw, "linkage", "use", version).output)
    _run(gw, "linkage", "decline", "--proposal", pid, "--reason", "recall too low on our sample", officer="senior-t")
    assert _in_use(gw) == was
    assert "declined" in _run(gw, "linkage", "approve", "--proposal", pid, officer="senior-t", ok=False).output
    assert _audit(gw)[-1][:2] == ("linkage.decline", "senior-t")


def _bad(name):
    def set_m(value):
        def change(doc):
            doc["fields"]["given"]["exact"]["m"] = value
        return change
    return {
        "m of one": (set_m(1.0), None, "fields.given.exact.m is 1.0"),
        "m of zero": (set_m(0), None, "fields.given.exact.m is 0"),
        "negative u": (lambda d: d["fields"]["dob"]["exact"].update(u=-0.1), None, "fields.dob.exact.u is -0.1"),
        "missing field": (lambda d: d["fields"].pop("location"), None, "fields.location is missing"),
        "prior of one": (lambda d: d.update(prior_match_probability=1), None, "prior_match_probability is 1"),
        "not a distribution": (lambda d: d["fields"]["gender"]["agree"].update(m=0.5), None, "add up to"),
        "NaN": (None, lambda text: text.replace('"prior_match_probability": ', '"prior_match_probability": NaN, "x": '),
                "NaN"),
        "not JSON": (None, lambda text: text[:-20], "not JSON"),
        "a key twice": (None, lambda text: text.replace('{', '{"version": "x", ', 1), "twice"),
        "too deep": (lambda d: d.update(deep=json.loads("[" * 40 + "]" * 40)), None, "nests deeper"),
        "too large": (lambda d: d.update(padding="x" * (versions.MAX_MODEL_BYTES + 1)), None, "larger than"),
    }[name]


def test_a_malformed_or_out_of_range_model_is_refused_with_a_specific_error_changing_nothing(trained):
    gw = trained
    from gateway import files

    with gw.engine.connect() as conn:
        before = conn.execute(select(proposals.c.id)).all()
    for i, name in enumerate(("m of one", "m of zero", "negative u", "missing field", "prior of one",
                              "not a distribution", "NaN", "not JSON", "a key twice", "too deep", "too large")):
        change, edit, expected = _bad(name)
        version = f"bad-{i}"
        _copy_as(gw, version, change)
        if edit:
            path = versions.path_of(gw.home, version)
            text = path.read_text()
            files.write_private(path, edit(text).encode())
        out = _run(gw, "linkage", "use", version, ok=False).output
        assert f"model {version} refused" in out and expected in out, (name, out)
    assert "refused" in _run(gw, "linkage", "use", "../../etc/passwd", ok=False).output
    assert "no model file" in _run(gw, "linkage", "use", "nowhere.1", ok=False).output
    with gw.engine.connect() as conn:
        assert conn.execute(select(proposals.c.id)).all() == before  # nothing proposed
    assert _audit(gw, "officer.refused")[-1][1] == "senior-s"


def test_a_model_changed_or_removed_after_approval_stops_the_gateway_at_start_and_at_reload(trained):
    gw = trained
    from gateway.app import build_services, check_linkage_model
    from gateway.config import Settings
    from gateway.index import store

    version = _copy_as(gw, "tampered.1")
    _put_in_use(gw, version)
    path = versions.path_of(gw.home, version)
    good = path.read_bytes()
    doc = json.loads(good)
    doc["fields"]["dob"]["exact"]["m"], doc["fields"]["dob"]["disagree"]["m"] = (
        doc["fields"]["dob"]["disagree"]["m"], doc["fields"]["dob"]["exact"]["m"])  # in range, still sums to 1
    changed = json.dumps(doc).encode()
    settings = Settings.from_env(env={}, home=str(gw.home), database_url=gw.database_url)
    record = [{"SourceRecordId": "tamper-1", "Identity": {"FamilyName": "Quillfeather", "GivenName": ["Ada"],
                                                        "DateOfBirth": "2016-03-04", "Gender": "female"}}]
    try:
        versions.IN_USE.configure(gw.home)
        with gw.engine.connect() as conn:
            assert versions.IN_USE.model(conn).version == version
        path.write_bytes(changed)
        os.chmod(path, 0o600)
        # At start: `serve` refuses (exit 3). A worker booted later (a reload) is built, linking
        # nothing, rather than failing its boot: gunicorn would halt the whole node, reads and all.
        result = gw.cli("serve", expect_ok=False)
        assert result.exit_code == 3 and "not the approved" in result.output, result.output
        with pytest.raises(versions.ModelUnavailable):
            check_linkage_model(settings, gw.engine)
        build_services(settings).engine.dispose()
        # At a reload: the running process links nothing, and says only Unavailable.
        versions.IN_USE.configure(gw.home)
        path.write_bytes(good)
        with gw.engine.connect() as conn:
            assert versions.IN_USE.model(conn, at=0.0).version == version
            path.write_bytes(changed)
            later = time.monotonic() + versions.RECHECK_S
            with pytest.raises(versions.ModelUnavailable, match="not the approved"):
                versions.IN_USE.model(conn, at=later)
            with pytest.raises(versions.ModelUnavailable):
                store.scoring_model(conn, at=later)
        answer = gw.pipeline.send("la", "SubmitUpdates", ChildUpdate=record)
        assert answer.status == 503 and answer.fault_code == "Unavailable"
        assert b"tampered" not in answer.body and b"linkage" not in answer.body  # nothing of why
        path.unlink()
        with gw.engine.connect() as conn:
            with pytest.raises(versions.ModelUnavailable, match="no model file"):
                # a second past the re-read (later + RECHECK_S - later can round below RECHECK_S)
                versions.IN_USE.model(conn, at=later + versions.RECHECK_S + 1)
        result = gw.cli("serve", expect_ok=False)
        assert result.exit_code == 3 and "no model file" in result.output, result.output
    finally:
        path.write_bytes(good)
        os.chmod(path, 0o600)
        versions.IN_USE.configure(gw.home)
    _put_in_use(gw, versions.shipped_version())  # back to the shipped model (it can be proposed too)
    assert _in_use(gw) == versions.shipped_version()


def test_a_data_key_a_models_name_table_is_sealed_under_is_not_retired(trained):
    gw = trained
    from gateway.security import vault

    old = vault.read_keyring(gw.home / "keys" / "data-keys.json").active
    _run(gw, "keys", "rotate")
    out = _run(gw, "keys", "retire", old, ok=False).output
    assert "trained.1" in out and "linkage model" in out
    assert old in vault.read_keyring(gw.home / "keys" / "data-keys.json").data_keys


def test_a_model_with_a_number_too_long_to_read_is_refused_with_a_specific_error(trained):
    """Python refuses to read an integer of more than 4,300 digits (ValueError, not a JSON error):
    the model is refused like any other malformed one, audited, nothing proposed."""
    gw = trained
    from gateway import files

    version = _copy_as(gw, "long-number.1")
    path = versions.path_of(gw.home, version)
    text = path.read_text().replace('"prior_match_probability": ', '"huge": ' + "7" * 5000 + ', '
                                    '"prior_match_probability": ', 1)
    files.write_private(path, text.encode())
    seq_before = len(_audit(gw, "officer.refused"))
    out = _run(gw, "linkage", "use", version, ok=False).output
    assert f"model {version} refused" in out and "number" in out, out
    assert len(_audit(gw, "officer.refused")) == seq_before + 1
    with pytest.raises(versions.ModelError, match="number"):
        versions.parse(path.read_bytes())


def test_the_model_approved_last_is_in_use_even_when_the_approving_hosts_clock_is_behind(trained, monkeypatch):
    """Officers approve on whichever host they are at: a host whose clock is ten minutes behind
    approves model b after model a was approved elsewhere. b is in use, as `linkage approve` said."""
    gw = trained
    from gateway.trust import registry

    first, second = _copy_as(gw, "clock-a.1"), _copy_as(gw, "clock-b.1")
    _put_in_use(gw, first)
    behind = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    monkeypatch.setattr(registry, "_now", lambda: behind)
    _put_in_use(gw, second)
    monkeypatch.undo()
    assert _in_use(gw) == second
    _put_in_use(gw, versions.shipped_version())
