"""Preparing a signed load file (`contactgate load-prepare`): an organisation's whole caseload for a
first (or full re-) load, run by the gateway's operator with `contactgate load` on the gateway host.

Each row of the extract is mapped and checked exactly as `contactgate push` maps and checks it
(connectors.mapping, connectors.sources: the columns the mapping does not name never leave the
organisation; a row that cannot be sent goes to the reject file with its line and reason). The
records are written in batches of ``batch_size`` as ``cg:SubmitUpdates`` elements, and the header
holding each batch's SHA-256 is signed with the organisation's key (contactgate_wire.load_file).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from connectors import mapping as mapping_mod
from connectors import model, sources
from contactgate_wire import load_file
from contactgate_wire.certificates import fingerprint

DEFAULT_BATCH = 1000


@dataclasses.dataclass
class Prepared:
    rows: int = 0
    records: int = 0
    rejected: int = 0
    batches: int = 0
    organisation: str = ""
    fingerprint: str = ""


def prepare(extract: Path, mapping_file: Path, cert_path: Path, key_path: Path, out: Path, *,
            organisation: str, rejects: Path | None = None, batch_size: int = DEFAULT_BATCH,
            now: dt.datetime | None = None) -> Prepared:
    """Write the signed load file ``out`` from ``extract`` mapped by ``mapping_file``."""
    if not 1 <= batch_size <= load_file.MAX_RECORDS_PER_BATCH:
        raise ValueError(f"the batch size must be 1 to {load_file.MAX_RECORDS_PER_BATCH}")
    m = mapping_mod.load(mapping_file)
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    now = now or dt.datetime.now(dt.timezone.utc)
    summary = Prepared(organisation=organisation, fingerprint=fingerprint(certificate))
    body = out.with_name(out.name + ".part")
    digests: list[str] = []
    reject_file = open(rejects, "w", newline="", encoding="utf-8") if rejects else None
    try:
        reject_rows = csv.writer(reject_file) if reject_file else None
        if reject_rows:
            reject_rows.writerow(["line", "source_record_id", "rejected_by", "reason"])
        with open(body, "wb") as lines:
            batch: list[etree._Element] = []

            def write() -> None:
                payload = etree.Element(f"{{{model.CG}}}SubmitUpdates", nsmap={"cg": model.CG})
                payload.extend(batch)
                line = load_file.batch_line(etree.tostring(payload, encoding="utf-8"))
                digests.append(load_file.batch_digest(line))
                lines.write(line + b"\n")
                summary.batches += 1
                batch.clear()

            for line_no, row in sources.rows(extract, m):
                summary.rows += 1
                try:
                    record = m.record(row)
                except mapping_mod.RowError as exc:
                    summary.rejected += 1
                    if reject_rows:
                        srid = (row.get(m.id_rule.source) or "").strip() if m.id_rule.source else ""
                        reject_rows.writerow([line_no, srid, "mapping", str(exc)])
                    continue
                batch.append(model.record_element(record))
                summary.records += 1
                if len(batch) == batch_size:
                    write()
            if batch:
                write()
        header = {"format": load_file.FORMAT, "organisation": organisation, "created": now.isoformat(),
                  "certificate": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                  "batches": digests, "records": summary.records, "signature": ""}
        header["signature"] = load_file.sign(header, key)
        with open(out, "wb") as final, open(body, "rb") as lines:
            final.write(json.dumps(header, sort_keys=True).encode("ascii") + b"\n")
            while chunk := lines.read(1 << 20):
                final.write(chunk)
    finally:
        if reject_file:
            reject_file.close()
        if body.exists():
            os.unlink(body)
    os.chmod(out, 0o600)  # it holds children's records
    return summary
