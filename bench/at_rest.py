"""What encryption at rest costs, per operation, on this machine (in-process, no database).

    python bench/at_rest.py [--n 20000]

Times sealing and opening a shown record, a source record and an involvement's details, and
blinding a blocking key; then adds up what one GetContacts (one shown record, its involvements)
and one pushed record (its source record, its child's shown record and provenance, its blocking
keys, plus opening the candidates' records it is compared with) do. The end-to-end figures are
bench/throughput.py (GetContacts) and bench/linkage_scale.py (pushed records).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.index import linkage  # noqa: E402
from gateway.security import vault  # noqa: E402


def _per_call(fn, n: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="calls timed per figure")
    parser.add_argument("--involvements", type=int, default=3, help="involvements per GetContacts")
    parser.add_argument("--compared", type=int, default=5, help="candidate records opened per pushed record")
    args = parser.parse_args(argv)
    v = vault.throwaway()
    shown = json.dumps({"identity": {"family_name": "Okonkwo", "given_names": ["Chidi"],
                                               "date_of_birth": "2016-02-11", "gender": "male"},
                                  "address": {"lines": ["12 Acacia Avenue"], "postcode": "LS6 2AB", "town": "Leeds"},
                                  "carers": [{"name": "Alex Okonkwo", "relationship": "parent",
                                              "phone": "0113 496 0100"}],
                        "educational_setting": {"name": "Hillside Primary", "code": "URN123456", "phone": None},
                        "gp_practice": {"name": "Riverside Medical Centre", "code": "B86002", "phone": None}},
                       sort_keys=True)
    person = linkage.person_from_record(json.loads(shown))
    keys = sorted(linkage.blocking_keys(person))
    details = json.dumps({"practitioner_name": "Sam Patel", "phone": "0113 496 0300", "email": "sam.patel@la.example"})
    token, inv_token = v.seal(shown, "children.record|X"), v.seal(details, "involvements.sealed|LA|x")
    figures = {
        "seal shown record": _per_call(lambda: v.seal(shown, "children.record|X"), args.n),
        "open shown record": _per_call(lambda: v.open(token, "children.record|X"), args.n),
        "open involvement": _per_call(lambda: v.open(inv_token, "involvements.sealed|LA|x"), args.n),
        "blind one key": _per_call(lambda: v.blind(keys[0], "blocking_key"), args.n),
    }
    per_get = figures["open shown record"] + args.involvements * figures["open involvement"]
    per_push = (3 * figures["seal shown record"] + len(keys) * figures["blind one key"] * 2
                + args.compared * figures["open shown record"] + figures["blind one key"])
    print(f"record {len(shown)} bytes, {len(keys)} blocking keys; vault: AES-256-GCM, HMAC-SHA-256")
    for name, us in figures.items():
        print(f"  {name:22} {us:7.1f} µs")
    print(f"  per GetContacts        {per_get:7.1f} µs  (1 record + {args.involvements} involvements opened)")
    print(f"  per pushed record      {per_push:7.1f} µs  (3 seals, keys blinded twice, {args.compared} records opened)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
