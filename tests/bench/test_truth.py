"""bench/linkage.py --truth: the labelled-extract format, the FEBRL mapping, and a small extract
scored end to end (store path)."""

from __future__ import annotations

import datetime as dt
import json

from bench import linkage as bench_linkage
from bench import truth

HEADER = "record_id,cluster_id,org,family_name,given_names,date_of_birth,gender,address_line1,postcode,twin_of\n"


def test_a_truth_csv_is_read_and_unsendable_rows_are_counted(tmp_path):
    path = tmp_path / "extract.csv"
    path.write_text(HEADER
                    + "a1,c1,LA,Hartley,Imogen Rose,2014-06-17,female,14 Larch Grove,LS6 2AB,\n"
                    + "a2,c2,LA,,Tom,2015-01-01,male,,,\n"
                    + "h1,c1,GP,Hartley,Imogen,2014-06-17,,14 Larch Gr,LS62AB,\n"
                    + "h2,c3,GP,Hartley,Isobel,not a date,female,,,c1\n", encoding="utf-8")
    records, skipped = truth.read_truth(path, orgs=3)
    assert [(r.org, r.cluster_id, r.update.source_record_id) for r in records] == [("LA", "c1", "a1"), ("GP", "c1", "h1")]
    assert records[0].update.identity.given_names == ("Imogen", "Rose")
    assert records[1].update.identity.gender == "unknown"
    assert skipped == {"no family name": 1, "no valid date of birth": 1}


def test_without_an_org_column_records_are_dealt_to_organisations_by_their_id(tmp_path):
    path = tmp_path / "extract.csv"
    path.write_text("record_id,cluster_id,family_name,given_names,date_of_birth\n"
                    + "".join(f"r{n},c{n},Okafor,Chidi,2015-04-09\n" for n in range(30)), encoding="utf-8")
    records, _ = truth.read_truth(path, orgs=3)
    assert {r.org for r in records} == {"org1", "org2", "org3"}
    assert records == truth.read_truth(path, orgs=3)[0]  # the same deal every time


def test_febrl_values_are_mapped_as_an_organisation_here_would_send_them():
    assert truth.uk_postcode("2119") == "B2 1NR"  # area, district, sector digit, unit letters
    assert truth.uk_postcode("2118")[:-2] == truth.uk_postcode("2119")[:-2]  # a slip in one digit: one part
    assert truth.uk_postcode("") is None and truth.uk_postcode("21a") is None
    today = dt.date(2026, 12, 1)
    assert truth.child_date("19560409", today) == "2022-04-09"  # the year's last digit on a decade ending last year
    assert truth.child_date("19560230", today) is None and truth.child_date("", today) is None


def test_a_small_extract_is_scored_end_to_end(tmp_path, capsys):
    path = tmp_path / "extract.csv"
    path.write_text(HEADER
                    + "a1,c1,LA,Hartley,Imogen,2014-06-17,female,14 Larch Grove,LS6 2AB,\n"
                    + "h1,c1,GP,Hartley,Imogen,2014-06-17,female,14 Larch Grove,LS6 2AB,\n"
                    + "a2,c2,LA,Hartley,Isobel,2014-06-17,female,14 Larch Grove,LS6 2AB,c1\n"
                    + "h2,c2,GP,Hartley,Isobel,2014-06-17,female,14 Larch Grove,LS6 2AB,c1\n", encoding="utf-8")
    assert bench_linkage.main(["--truth", str(path), "--direct", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert (result["true_pairs"], result["true_positives"], result["false_positives"]) == (2, 2, 0)
    assert result["twins_merged"] == 0 and result["twin_pairs"] == 1 and result["wrong_clusters"] == 0
