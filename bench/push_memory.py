"""The push client's peak memory on large extracts of each kind (issue 28, item 6): the whole push
path, not only the reader.

    python bench/push_memory.py --megabytes 100 1024 --dir /tmp/push-memory

For each size and each kind (a case-management CSV whose mapping uses the value transforms:
collapse_spaces, title, lower, nhs_number, postcode, a lookup file, a join, a conditional default;
FHIR Patients as NDJSON; the same Patients as one Bundle document), an extract of about that many
megabytes is written to --dir, then pushed in a fresh process by `connectors.push.push_file` (what
`contactgate push` runs): read, mapped with its transforms, checked, batched by 1,000, each batch
built (from the schema's types, connectors/submit_xml.py: the bytes zeep would build) and signed
(WS-Security, RSA-2048, a throwaway key) and held in the state file as the real push does. Only
the network is left out: the client's `exchange` answers each batch itself ("created" for every
record) instead of posting it, which measures the client and not a gateway's speed. The process's
peak resident memory (getrusage) is printed with rows, seconds and rows/s, and the push's CPU
seconds and rows per CPU second (steadier than wall time on a shared machine); each extract and
state is deleted once measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "connectors" / "samples"
KINDS = ("csv", "ndjson", "bundle")

# the case-management system's nightly export and its lookup file (tests/connectors/test_nightly.py's too)
CSV_MAPPING = SAMPLES / "case_system.yaml"
CSV_LOOKUP = SAMPLES / "case_system_relationships.csv"
CSV_HEADER = ["Case ID", "Child Full Name", "Date of Birth", "Gender", "NHS No", "House No", "Street", "Post Code",
              "Main Carer", "Carer Rel", "Worker", "Allocated", "Closed", "CAF", "Team", "Case Notes"]
SYLLABLES = [c + v for c in "bdfghjklmnprstvwz" for v in "aeiou"]


def _nhs(n: int) -> str:
    """A valid NHS number (modulus 11) from ``n``."""
    while True:
        digits = f"{400_000_000 + n % 500_000_000:09d}"
        check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11
        if check == 11:
            return digits + "0"
        if check != 10:
            return digits + str(check)
        n += 1


def _name(rng: random.Random, n: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n))


def write_csv(directory: Path, megabytes: float) -> tuple[Path, Path]:
    import csv

    shutil.copy(CSV_LOOKUP, directory)
    mapping = directory / "cases.yaml"
    shutil.copy(CSV_MAPPING, mapping)
    extract = directory / "cases.csv"
    rng, limit, i = random.Random(7), megabytes * 2**20, 0
    with open(extract, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_HEADER)
        while stream.tell() < limit:
            for _ in range(100):
                nhs = _nhs(i * 7919)
                born = dt.date(2010, 1, 1) + dt.timedelta(days=i % 5000)
                writer.writerow([f"C-{i:08d}", f"{_name(rng).upper()},  {_name(rng).title()} {_name(rng, 2).title()}",
                                 born.strftime("%d/%m/%Y"), ["Male", "FEMALE", "female", ""][i % 4],
                                 [f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}", f"{nhs[:3]}-{nhs[3:6]}-{nhs[6:]}", nhs, ""][i % 4],
                                 str(1 + i % 200), f"{_name(rng)} road", f"ls{1 + i % 28}{i % 10}a{'bdefghjl'[i % 8]}",
                                 f"{_name(rng)} {_name(rng, 4)}", ["MUM", "DAD", "GRAN"][i % 3], "Sam Worker",
                                 "02/09/2024", "", ["Y", "N", ""][i % 3], ["EH", "CIN"][i % 2], "confidential notes"])
                i += 1
    return extract, mapping


def write_fhir(directory: Path, megabytes: float, bundle: bool) -> tuple[Path, Path]:
    patient = json.loads((SAMPLES / "health_patients.ndjson").read_text().splitlines()[0])
    extract = directory / ("bundle.json" if bundle else "patients.ndjson")
    limit, n = megabytes * 2**20, 0
    with open(extract, "w") as out:
        if bundle:
            out.write('{"resourceType": "Bundle", "type": "collection", "entry": [\n')
        while out.tell() < limit:
            resource_ = {**patient, "id": f"p{n}"}
            for identifier in resource_.get("identifier") or []:
                if identifier.get("system", "").endswith("nhs-number"):
                    identifier["value"] = _nhs(n * 7919)
            text = json.dumps(resource_)
            out.write(("," if n else "") + '{"fullUrl": "urn:uuid:%d", "resource": %s}' % (n, text) if bundle else text)
            out.write("\n")
            n += 1
        if bundle:
            out.write("]}\n")
    return extract, SAMPLES / "health_patients.yaml"


def write(kind: str, directory: Path, megabytes: float) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return write_csv(directory, megabytes) if kind == "csv" else write_fhir(directory, megabytes, kind == "bundle")


def _throwaway_credentials(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BENCH")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    for name_ in ("cert.pem", "ca.pem", "gateway-signing.pem"):
        (directory / name_).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / "cert.pem", directory / "key.pem"


def push_without_network(extract: Path, mapping: Path, work: Path, batch_size: int = 1000) -> dict:
    """`push_file` through a real client whose `exchange` answers each signed batch itself."""
    from lxml import etree

    from connectors.client import GatewayClient
    from connectors.push import push_file
    from contactgate_wire.soap import CG, SOAP_ENV, q

    class NoNetworkClient(GatewayClient):
        def exchange(self, operation: str, data: bytes):
            message = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True))
            body = etree.Element(q(SOAP_ENV, "Body"))
            answer = etree.SubElement(body, q(CG, "SubmitUpdatesResponse"))
            for srid in message.iter(q(CG, "SourceRecordId")):
                result = etree.SubElement(answer, q(CG, "Result"))
                etree.SubElement(result, q(CG, "SourceRecordId")).text = srid.text
                etree.SubElement(result, q(CG, "Outcome")).text = "created"
            return 200, body

    cert, key = _throwaway_credentials(work)
    client = NoNetworkClient("https://127.0.0.1:9", cert=cert, key=key)
    started = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    summary = push_file(client, extract, mapping, state=work / "push.state", rejects=work / "rejects.csv",
                        batch_size=batch_size)
    seconds = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    return {"rows": summary.rows, "seconds": round(seconds, 1), "rows_per_s": round(summary.rows / max(seconds, 1e-6)),
            "cpu_seconds": round(cpu, 1), "rows_per_cpu_s": round(summary.rows / max(cpu, 1e-6)),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "counts": summary.counts()}


def measure(kind: str, megabytes: float, directory: Path, batch_size: int = 1000) -> dict:
    """Write an extract of ``kind``, push it in a fresh process, delete it: that process's figures."""
    import shutil

    work = Path(tempfile.mkdtemp(prefix=f"push-memory-{kind}-", dir=directory))
    try:
        extract, mapping = write(kind, work, megabytes)
        size = extract.stat().st_size
        done = subprocess.run([sys.executable, __file__, "--push", str(extract), "--mapping", str(mapping),
                               "--work", str(work), "--batch-size", str(batch_size)], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"push of {extract} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        return {"kind": kind, "megabytes": round(size / 2**20, 1), **json.loads(done.stdout.strip().splitlines()[-1])}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, nargs="+", default=[100, 1024])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--batch-size", type=int, default=1000, help="records per SubmitUpdates (default 1,000)")
    parser.add_argument("--push", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mapping", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.push:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(push_without_network(args.push, args.mapping, args.work, args.batch_size)))
        return
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    args.dir.mkdir(parents=True, exist_ok=True)
    for megabytes in args.megabytes:
        for kind in args.kinds:
            print(json.dumps(measure(kind, megabytes, args.dir, args.batch_size)), flush=True)


if __name__ == "__main__":
    main()
