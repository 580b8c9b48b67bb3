"""`contactgate load` against the online path (SubmitUpdates' apply_updates), side by side.

    python bench/load.py --children 10000                  # SQLite, then PostgreSQL if reachable
    python bench/load.py --children 100000 --backend postgresql --json
    make bench-load                                        # 10 k and 100 k on both backends

Generates ``--children`` synthetic children (bench/population.py: families, twins, siblings,
typos) as up to three organisations hold them (LA, HEALTH, SCHOOL), writes each organisation's
extract as a CSV with MAPPING, and loads the same extracts two ways into two fresh databases:

- **online**: each row mapped as `contactgate push` maps it and read as the gateway reads a
  SubmitUpdates, applied by ``apply_updates`` in push-sized batches (1,000), one transaction and one
  audit entry per batch (the SOAP, TLS and signatures of a real push left out: this is the floor of
  the online path);
- **load**: `contactgate load-prepare` (at the organisation, not timed) then ``gateway.bulk_load.run``
  (what `contactgate load` runs), timed from the file on disk to the last commit.

Then it compares the outcomes (the same clusters of source records, the same review pairs, the
same counts) and prints records/s of both, their ratio and the load average. The runs are
sequential in one sitting (the machine is shared: the ratio is what carries over).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable (bench.*)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import population  # noqa: E402

MAPPING = """\
# A generated caseload (bench/load.py): one row per child record.
description: generated caseload
source: csv
id: {from: Id}
fields:
  Identity.FamilyName: {from: Family, required: true}
  Identity.GivenName: {from: Given, split: " "}
  Identity.PreferredName: {from: Preferred}
  Identity.DateOfBirth: {from: Dob, date: ["%Y-%m-%d"]}
  Identity.Gender: {from: Gender, map: {male: male, female: female, other: other, unknown: unknown}, default: unknown}
  Identity.NhsNumber: {from: Nhs}
  Identity.PupilNumber: {from: Upn}
  Address.Line1: {from: Line1}
  Address.Line2: {from: Line2}
  Address.Town: {from: Town}
  Address.Postcode: {from: Postcode}
  Carer[0].Name: {from: CarerName}
  Carer[0].Relationship: {from: CarerRelationship, default: other}
  Carer[0].Phone: {from: CarerPhone}
  EducationalSetting.Name: {from: SchoolName}
  EducationalSetting.Code: {from: SchoolCode}
  GpPractice.Name: {from: GpName}
  GpPractice.Code: {from: GpCode}
  Involvement[0].Service: {from: Service}
  Involvement[0].PractitionerName: {from: Practitioner}
  Involvement[0].Role: {from: Role}
  Involvement[0].Phone: {from: WorkerPhone}
  Involvement[0].Start: {from: Start, date: ["%Y-%m-%d"]}
  Involvement[0].CafAssessment: {from: Caf, map: {Y: true, N: false}, default: false}
  Involvement[0].LeadProfessional: {from: Lead, map: {Y: true, N: false}, default: false}
"""
COLUMNS = ["Id", "Family", "Given", "Preferred", "Dob", "Gender", "Nhs", "Upn", "Line1", "Line2", "Town", "Postcode",
           "CarerName", "CarerRelationship", "CarerPhone", "SchoolName", "SchoolCode", "GpName", "GpCode", "Service",
           "Practitioner", "Role", "WorkerPhone", "Start", "Caf", "Lead"]


def row_of(update) -> list[str]:
    i, a = update.identity, update.address
    carer = update.carers[0] if update.carers else None
    inv = update.involvements[0]
    school, gp = update.educational_setting, update.gp_practice
    lines = list(a.lines) if a else []
    return [update.source_record_id, i.family_name, " ".join(i.given_names), i.preferred_name or "",
            i.date_of_birth.isoformat(), i.gender, i.nhs_number or "", i.pupil_number or "",
            lines[0] if lines else "", lines[1] if len(lines) > 1 else "", (a.town or "") if a else "",
            a.postcode if a else "", carer.name if carer else "", carer.relationship if carer else "",
            (carer.phone or "") if carer else "", school.name if school else "", (school.code or "") if school else "",
            gp.name if gp else "", (gp.code or "") if gp else "", inv.service, inv.practitioner_name or "",
            inv.role or "", inv.phone or "", inv.start.isoformat(), "Y" if inv.caf_assessment else "N",
            "Y" if inv.lead_professional else "N"]


def write_extracts(directory: Path, children: int, seed: int = 30, orgs: int = 3, overlap: float = 0.8,
                   mix: str = "default") -> dict[str, Path]:
    """Each organisation's extract (CSV) of ``children`` generated children, and mapping.yaml."""
    people = population.generate(children, seed, mix)
    views = population.views(people, orgs, seed, overlap, mix)
    (directory / "mapping.yaml").write_text(MAPPING)
    out = {}
    for code, records in views.items():
        path = directory / f"{code.lower()}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for record in records:
                writer.writerow(row_of(record.update))
        out[code] = path
    return out


KINDS = {"LA": "local_authority", "HEALTH": "health", "SCHOOL": "education"}


@contextlib.contextmanager
def trust_material(directory: Path, codes=tuple(KINDS)):
    """A CA of the test's own, and a certificate and key (EC) for each organisation code."""
    from gateway.trust import pki

    ca_key, ca_cert = pki.make_ca("Bulk load test CA")
    pki.write_public(directory / "ca.pem", pki.cert_pem(ca_cert))
    made = {}
    for code in codes:
        key = pki.new_ec_key()
        cert = pki.issue_org_cert(ca_key, ca_cert, code, f"{code} organisation", key.public_key())
        folder = directory / code.lower()
        folder.mkdir(exist_ok=True)
        pki.write_private(folder / "key.pem", pki.key_pem(key))
        pki.write_public(folder / "cert.pem", pki.cert_pem(cert))
        made[code] = folder
    yield pki.TrustAnchors.from_files([directory / "ca.pem"]), made


def register(engine, folders: dict[str, Path], *, scopes: str = "push,query", status: str = "accredited") -> None:
    """The organisations and their certificates in the registry, accredited (as two officers would
    leave them; the four-eyes steps are tested elsewhere)."""
    from gateway.db import certificates, organisations
    from gateway.trust import pki

    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        for code, folder in folders.items():
            conn.execute(organisations.insert().values(
                code=code, code_key=code.upper(), name=f"{code} organisation", kind=KINDS.get(code, "other"),
                status=status, scopes=scopes, expires=now.date() + dt.timedelta(days=365), created_at=now,
                updated_at=now, proposed_by="officer-a", approved_by="officer-b"))
            cert = pki.load_cert_pem((folder / "cert.pem").read_bytes())
            conn.execute(certificates.insert().values(org_code=code, created_at=now, **pki.describe(cert)))


def prepare(extract: Path, mapping: Path, folder: Path, out: Path, batch_size: int = 1000):
    from connectors import load_file, push

    return load_file.prepare(extract, mapping, folder / "cert.pem", folder / "key.pem", out,
                             organisation=push.organisation_of(folder / "cert.pem"), batch_size=batch_size,
                             rejects=out.with_name(out.name + ".rejects.csv"))


def online(engine, trail, org_code: str, extract: Path, mapping: Path, batch_size: int = 1000) -> int:
    """The extract as pushes would apply it: mapped as `push` maps it, read as SubmitUpdates reads
    it, ``apply_updates`` per batch, one transaction and one audit entry each. Records applied."""
    from lxml import etree

    from connectors import mapping as mapping_mod
    from connectors import model, sources
    from gateway.audit import chain as audit
    from gateway.index import batches
    from gateway.pipeline import contactgate_v1 as dialect

    m = mapping_mod.load(mapping)
    applied = 0
    batch = []

    def send():
        nonlocal applied
        payload = etree.Element(f"{{{model.CG}}}SubmitUpdates")
        payload.extend(batch)
        updates = dialect.read_submit_updates(etree.fromstring(etree.tostring(payload)))
        with engine.begin() as conn:
            results = batches.apply_updates(conn, org_code, updates, dt.datetime.now(dt.timezone.utc))
            trail.append(conn, audit.Entry(operation="SubmitUpdates", outcome="accepted", org_code=org_code,
                                           child_ids=[r.child_id for r in results if r.child_id]))
        applied += len(updates)
        batch.clear()

    for _, row in sources.rows(extract, m):
        try:
            batch.append(model.record_element(m.record(row)))
        except mapping_mod.RowError:
            continue
        if len(batch) == batch_size:
            send()
    if batch:
        send()
    return applied


def outcome(engine) -> dict:
    """What the index holds, children named by their source records (ids are random): the clusters
    of (organisation, source record id), the open review pairs as pairs of clusters, and counts."""
    from sqlalchemy import func, select

    from gateway.db import blocking_keys, children, involvements, review_queue, source_records
    from gateway.index import sealed

    with engine.connect() as conn:
        v = sealed.vault_of(conn)
        held: dict[str, list] = {}
        for row in conn.execute(select(source_records.c.child_id, source_records.c.org_code,
                                       source_records.c.source_record_id, source_records.c.record)):
            sent_id = sealed.open_source(v, row.org_code, row.source_record_id, row.record)[0]
            held.setdefault(row.child_id, []).append((row.org_code, sent_id))
        name = {child: tuple(sorted(records)) for child, records in held.items()}
        pairs = sorted(tuple(sorted((name.get(r.child_id, (r.child_id,)), name.get(r.candidate_child_id,
                                                                                    (r.candidate_child_id,)))))
                       for r in conn.execute(select(review_queue.c.child_id, review_queue.c.candidate_child_id)
                                             .where(review_queue.c.status == "open")))
        counts = {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                  for table in (children, source_records, involvements, blocking_keys, review_queue)}
        counts["live_children"] = conn.execute(select(func.count()).select_from(children).where(
            children.c.merged_into.is_(None), children.c.archived_at.is_(None))).scalar_one()
    return {"clusters": sorted(name.values()), "review_pairs": pairs, "counts": counts}


# ---- the bench ----------------------------------------------------------------------------------

def _database(backend: str):
    from tests.support import postgres_database, sqlite_database

    return postgres_database() if backend == "postgresql" else sqlite_database()


def measure(backend: str, children: int, work: Path, seed: int = 30) -> dict:
    from gateway.audit import chain as audit
    from gateway.bulk_load import run as load_run
    from gateway.db import make_engine, migrate
    from gateway.index.deciding import DEFAULT_POLICY

    extracts = write_extracts(work, children, seed)
    mapping = work / "mapping.yaml"
    trail = audit.AuditTrail(audit.new_key())
    with trust_material(work) as (anchors, folders):
        files = {code: work / f"{code.lower()}.cgload" for code in extracts}
        for code, extract in extracts.items():
            prepare(extract, mapping, folders[code], files[code])
        records = sum(1 for code in files for _ in open(extracts[code])) - len(files)
        figures = {"backend": backend, "children": children, "records": records}
        with _database(backend) as url_a, _database(backend) as url_b:
            migrate(url_a)
            migrate(url_b)
            a, b = make_engine(url_a), make_engine(url_b)
            register(a, folders)
            register(b, folders)
            load_before = os.getloadavg()[0]
            started, cpu = time.monotonic(), time.process_time()
            for code, extract in extracts.items():
                online(a, trail, code, extract, mapping)
            figures["online_s"] = time.monotonic() - started
            figures["online_cpu_s"] = round(time.process_time() - cpu, 2)  # this process only (not PostgreSQL's)
            started, cpu = time.monotonic(), time.process_time()
            for code in extracts:
                load_run(b, trail, anchors, files[code], policy=DEFAULT_POLICY, purge_years=6)
            figures["load_s"] = time.monotonic() - started
            figures["load_cpu_s"] = round(time.process_time() - cpu, 2)
            figures["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            same_a, same_b = outcome(a), outcome(b)
            figures["identical"] = same_a == same_b
            figures["counts"] = same_b["counts"]
            figures["review_pairs"] = len(same_b["review_pairs"])
            a.dispose()
            b.dispose()
    figures["online_per_s"] = round(records / figures["online_s"], 1)
    figures["load_per_s"] = round(records / figures["load_s"], 1)
    figures["ratio"] = round(figures["online_s"] / figures["load_s"], 2)
    figures["cpu_ratio"] = round(figures["online_cpu_s"] / figures["load_cpu_s"], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, action="append", help="children (repeat for several runs)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    if "postgresql" in backends and not os.environ.get("CONTACTGATE_TEST_POSTGRES_URL"):
        backends = tuple(b for b in backends if b != "postgresql")
    from gateway.security import vault

    results = []
    for children in args.children or [10000]:
        for backend in backends:
            with tempfile.TemporaryDirectory() as work, vault.using(vault.throwaway()):
                figures = measure(backend, children, Path(work))
            results.append(figures)
            if args.json:
                print(json.dumps(figures), flush=True)
            else:
                print(f"{backend:<10} {children:>8} children {figures['records']:>8} records: online "
                      f"{figures['online_per_s']:>7.0f}/s, load {figures['load_per_s']:>7.0f}/s, ratio "
                      f"{figures['ratio']:.2f}x (client CPU {figures['online_cpu_s']:.0f} s / {figures['load_cpu_s']:.0f} s = "
                      f"{figures['cpu_ratio']:.2f}x), identical {figures['identical']}, review pairs "
                      f"{figures['review_pairs']}, load average {figures['loadavg']}", flush=True)
    sys.exit(0 if all(f["identical"] for f in results) else 1)


if __name__ == "__main__":
    main()
