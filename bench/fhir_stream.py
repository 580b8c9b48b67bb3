"""Reading a large FHIR extract in flat memory (issue 28, item 6): writes a Bundle document and an
NDJSON file of about ``--megabytes`` each (FHIR Patients, in the health sample's shape), reads every
record through the push's reader (`connectors.sources.rows` with the health sample's mapping, no
validation or sending: the reader is what could hold the file), each in a fresh process, and prints
the records read, the seconds and the peak resident memory of each.

    python bench/fhir_stream.py --megabytes 1024 --dir /tmp/fhir-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "connectors" / "samples" / "health_patients.ndjson"
MAPPING = ROOT / "connectors" / "samples" / "health_patients.yaml"


def write(path: Path, megabytes: int, bundle: bool) -> int:
    patient = json.loads(SAMPLE.read_text().splitlines()[0])
    limit, n = megabytes * 1024 * 1024, 0
    with open(path, "w") as out:
        if bundle:
            out.write('{"resourceType": "Bundle", "type": "collection", "entry": [\n')
        while out.tell() < limit:
            text = json.dumps({**patient, "id": f"p{n}"})
            out.write((("," if n else "") + json.dumps({"fullUrl": f"urn:uuid:{n}", "resource": json.loads(text)}))
                      if bundle else text)
            out.write("\n")
            n += 1
        if bundle:
            out.write("]}\n")
    return n


def read(path: str) -> None:
    from connectors import mapping, sources

    m = mapping.load(MAPPING)
    started = time.monotonic()
    count = sum(1 for _ in sources._fhir_resources(Path(path), None))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": count, "seconds": round(time.monotonic() - started, 1),
                      "peak_rss_mib": round(peak_mib), "mapping": m.source}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/fhir-bench"))
    parser.add_argument("--read", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read(args.read)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, bundle in (("patients.ndjson", False), ("bundle.json", True)):
        path = args.dir / name
        written = write(path, args.megabytes, bundle)
        out = subprocess.run([sys.executable, __file__, "--read", str(path)], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout.strip()
        print(f"{name}: {path.stat().st_size / 2**20:.0f} MiB, {written} written: {out}")
        path.unlink()


if __name__ == "__main__":
    main()
