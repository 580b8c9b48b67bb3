"""`contactgate mapping check --sample` judges likely duplicates inside the extract with the
gateway's own linkage engine (issue 28, item 4): in process, on the sample's mapped records, no
gateway called; each pair with the engine's decision and score, as text and JSON. And what it
says of a pair is what a real gateway then does with it (both backends)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors import check, mapping
from connectors.cli import main
from tests.support import unique, unique_name

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "samples"
LA_MAPPING = SAMPLES / "la_case_management.yaml"


def family_of_rows(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The LA sample's shape: a child (A), the same child entered again by another team (B), a child
    with another first name and everything else the same (C: a twin, or one child under two names),
    a brother born three years before (D). Names no other test has."""
    template = next(csv.DictReader(open(SAMPLES / "la_case_management.csv", newline="")))
    tag, family = unique("d"), unique_name().upper()
    given = {"A": "Chidera Grace", "B": "Chidera Grace", "C": unique_name().title(), "D": unique_name().title()}
    born = {"A": "14/03/2015", "B": "14/03/2015", "C": "14/03/2015", "D": "02/07/2012"}
    srids = {who: f"{tag}-{who}" for who in "ABCD"}
    path = tmp_path / "sample.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, list(template))
        writer.writeheader()
        for who in "ABCD":
            writer.writerow({**template, "CaseRef": srids[who], "ChildName": f"{family}, {given[who]}",
                             "DOB": born[who], "NHSNumber": "", "Sex": "F" if who != "D" else "M"})
    return path, srids


def test_likely_duplicates_are_judged_by_the_gateways_linkage_engine_as_text_and_json(tmp_path):
    sample, srids = family_of_rows(tmp_path)
    result = CliRunner().invoke(main, ["mapping", "check", str(LA_MAPPING), "--sample", str(sample), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)["sample"]
    assert "linkage engine" in report["scorer"] and "model" in report["scorer"]
    found = {tuple(p["source_record_ids"]): p for p in report["likely_duplicates"]}
    a, b, c, d = (srids[w] for w in "ABCD")
    assert found[(a, b)]["decision"] == "link" and found[(a, b)]["score"] >= 0.95, found
    assert found[(a, c)]["decision"] == "review" and "twins" in found[(a, c)]["why"], found
    assert found[(b, c)]["decision"] == "review", found
    assert not [pair for pair in found if d in pair], found  # a brother: two children, not reported
    assert report["likely_duplicates_count"] == 3 and found[(a, b)]["lines"] == [2, 3]
    text = CliRunner().invoke(main, ["mapping", "check", str(LA_MAPPING), "--sample", str(sample)],
                              catch_exceptions=False).output
    assert f"lines 2 and 3 ({a}, {b}): the gateway would link them (matched), score " in text, text
    assert f"lines 2 and 4 ({a}, {c}): the gateway would hold them for review, score " in text, text


def test_without_the_gateways_engine_installed_the_simple_scorer_says_so(tmp_path):
    sample, srids = family_of_rows(tmp_path)
    report = check.check_sample(mapping.load(LA_MAPPING), sample, simple=True)
    assert report["scorer"].startswith("simple")
    assert [srids["A"], srids["B"]] in [p["source_record_ids"] for p in report["likely_duplicates"]]


def test_what_the_check_says_of_a_pair_is_what_the_gateway_does(gateway, clients, tmp_path):
    """The pair the check links is matched to one child by a real gateway; the pair it holds for
    review is two children in the index and one entry in the review queue."""
    sample, srids = family_of_rows(tmp_path)
    m = mapping.load(LA_MAPPING)
    from connectors import sources

    records = {m.record(row)["SourceRecordId"]: m.record(row) for _, row in sources.rows(sample, m)}
    la = clients("la")
    [first] = la.submit_updates([records[srids["A"]]])
    assert first.outcome == "created"
    second, third = la.submit_updates([records[srids["B"]], records[srids["C"]]])
    assert (second.outcome, second.child_id) == ("matched", first.child_id)
    assert third.outcome == "created" and third.child_id != first.child_id
    queue = [json.loads(line) for line in gateway.cli("review", "list", "--status", "all", "--limit", "10000",
                                                      "--json", officer="dora").output.splitlines()]
    assert [e for e in queue if e["source_record_id"] == srids["C"]], "the twin-like pair is not in the review queue"


class BrokenEntry:
    name = "extract"

    def __init__(self, error: Exception):
        self.error = error

    def load(self):
        raise self.error


@pytest.mark.parametrize("error", [ImportError("No module named 'rapidfuzz'"), RuntimeError("a broken engine")])
def test_a_declared_engine_that_cannot_load_says_so_and_the_simple_scorer_judges(tmp_path, monkeypatch, error):
    """Review (close28): the entry point declared but its engine failing to load either crashed the
    check with a traceback (any error but ImportError) or fell back to the simple scorer without a
    word of why (ImportError: the data engineer believes the gateway's engine was not installed)."""
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [BrokenEntry(error)])
    sample, srids = family_of_rows(tmp_path)
    report = check.check_sample(mapping.load(LA_MAPPING), sample)
    assert report["scorer"].startswith("simple"), report["scorer"]
    assert "could not be loaded" in report["scorer"] and str(error) in report["scorer"], report["scorer"]
    assert [srids["A"], srids["B"]] in [p["source_record_ids"] for p in report["likely_duplicates"]]
