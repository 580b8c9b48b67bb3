"""`contactgate load-prepare` and `contactgate load` as an organisation and an operator run them, on
a running gateway of each backend: the load is killed (SIGKILL) part-way and run again: each record
is applied once, each batch audited once; GetContacts is answered while the load runs; a file fully
applied is not applied again; a file the operator altered is refused with exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import func, select

from bench import load as bench_load
from gateway.db import audit_log, bulk_loads, involvements, source_records
from tests.gateway.cli_runner import CONTACTGATE, contactgate
from tests.support import private_gateway

READ = dict(user_id="load.tester", role="gp", reason_code="referral", reason_text="bulk load test")
BATCH = 4


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def prepared(request, tmp_path_factory):
    """A gateway with LA (push, query), and LA's signed load file of its generated extract."""
    work = tmp_path_factory.mktemp(f"load-{request.param}")
    with private_gateway(request.param, work / "home", orgs={"LA": ("local_authority", ["push", "query"])},
                         workers=1) as gw:
        extract = bench_load.write_extracts(work, 200, seed=31, orgs=1)["LA"]
        credentials = gw.certs["la"]
        out = work / "la.cgload"
        made = contactgate("load-prepare", str(extract), "--mapping", str(work / "mapping.yaml"),
                           "--cert", str(credentials / "cert.pem"), "--key", str(credentials / "key.pem"),
                           "--out", str(out), "--batch-size", str(BATCH), env=gw.env())
        assert made.code == 0, made
        assert oct(out.stat().st_mode & 0o777) == "0o600"
        yield gw, out


def _count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def _done(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(bulk_loads.c.batches_done)).scalar() or 0


def test_a_load_killed_part_way_resumes_and_applies_each_record_once(prepared):
    gw, path = prepared
    header = json.loads(path.read_bytes().split(b"\n", 1)[0])
    total, records = len(header["batches"]), header["records"]
    la = gw.client("la")
    la.ping(user_id=READ["user_id"], role=READ["role"])  # its TLS session and WSDL ready: the read below is quick
    loader = subprocess.Popen([CONTACTGATE, "load", str(path)], env=gw.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _done(gw.engine) < 2 and time.monotonic() < deadline and loader.poll() is None:
            time.sleep(0.05)
        assert _done(gw.engine) >= 2, loader.communicate()
        with gw.engine.connect() as conn:
            child_id = conn.execute(select(source_records.c.child_id).limit(1)).scalar_one()
        answered = la.get_contacts(child_id, **READ)  # read while the load runs: answered
        assert answered["ChildId"] == child_id
    finally:
        # Killed now, part-way: of its ~55 batches of 4 the load had done 2 when the read began, and
        # a read takes what one exchange takes (the client was ready before the load started).
        os.kill(loader.pid, signal.SIGKILL)
        loader.communicate()
    killed_at = _done(gw.engine)
    assert killed_at < total, "the load finished before it could be killed: make more batches"
    # what was committed is whole: each batch applied has its rows and its one audit entry
    applied = _count(gw.engine, audit_log, audit_log.c.operation == "BulkLoad")
    assert applied == killed_at
    assert _count(gw.engine, source_records) == killed_at * BATCH

    again = contactgate("load", str(path), env=gw.env(), timeout=600)
    assert again.code == 0, again
    assert f"{killed_at} applied before (resumed)" in again.out
    assert _count(gw.engine, source_records) == records  # each record once
    assert _count(gw.engine, involvements) == records  # no involvement twice
    entries = _details(gw.engine)
    assert [d.split(":")[0].split()[-1] for d in entries] == [f"{i}/{total}" for i in range(1, total + 1)]

    third = contactgate("load", str(path), env=gw.env())
    assert third.code == 0 and "already loaded" in third.out, third
    assert len(_details(gw.engine)) == total


def _details(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(audit_log.c.detail).where(
            audit_log.c.operation == "BulkLoad", audit_log.c.outcome == "accepted").order_by(audit_log.c.seq)).scalars())


def test_a_file_the_operator_altered_is_refused_with_exit_2(prepared, tmp_path):
    gw, path = prepared
    header, rest = path.read_bytes().split(b"\n", 1)
    altered = tmp_path / "altered.cgload"
    altered.write_bytes(header + b"\n" + rest.replace(b"Service>", b"Service>X", 1))
    before = _count(gw.engine, audit_log, audit_log.c.outcome == "refused", audit_log.c.operation == "BulkLoad")
    refused = contactgate("load", str(altered), env=gw.env())
    refused.assert_clean_failure(2, "SignatureInvalid")
    assert _count(gw.engine, audit_log, audit_log.c.outcome == "refused",
                  audit_log.c.operation == "BulkLoad") == before + 1
