"""The misuse review at national scale (issue 30, item 4): a month is tens of millions of entries,
so the review reads the period as a stream and holds per user a count and a digest, not the
entries; a finding's id still names all of its evidence, however much of it there is."""

from __future__ import annotations

import datetime as dt
import tracemalloc

from sqlalchemy import func, insert, select

from gateway.audit import review
from gateway.audit.links import timestamp
from gateway.db import audit_log

MONDAY = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)  # London is on UTC in November
USERS = [f"sw.{n:02d}" for n in range(30)]


def bulk(engine, entries: list[dict]) -> list[int]:
    """Entries written straight to the table (the review reads them; it does not verify the chain)."""
    with engine.begin() as conn:
        first = (conn.execute(select(func.max(audit_log.c.seq))).scalar() or 0) + 1
        rows = [{"seq": first + n, "org_code": "LA", "role": "social worker", "outcome": "accepted",
                 "child_ids": "", "prev_hash": "0" * 64, "entry_hash": "0" * 64, "public_hash": "0" * 64, **entry}
                for n, entry in enumerate(entries)]
        for start in range(0, len(rows), 2000):
            conn.execute(insert(audit_log), rows[start:start + 2000])
    return [row["seq"] for row in rows]


def office_week(start: dt.datetime, reads_per_user: int) -> list[dict]:
    """Every user finds and reads children of their own, in office hours, each with its own reason."""
    entries = []
    for n in range(reads_per_user):
        at = start + dt.timedelta(days=n % 5, hours=9, seconds=n * 7)
        for user in USERS:
            child = f"C{n:05d}-{USERS.index(user):04d}-0000-0000"
            common = {"user_id": user, "reason_code": "referral", "reason_text": f"case {user} {n}", "child_ids": child}
            entries.append({"at": timestamp(at), "operation": "FindChild", **common})
            entries.append({"at": timestamp(at + dt.timedelta(minutes=2)), "operation": "GetContacts", **common})
    return entries


def peak_of_review(engine, since: dt.datetime) -> int:
    with engine.connect() as conn:
        tracemalloc.start()
        try:
            review.run(conn, since, review.Thresholds(), until=since + dt.timedelta(days=7),
                       rules=("volume", "fishing", "out_of_hours", "reason_reuse", "refusals"))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_the_review_holds_no_more_for_a_longer_trail_of_the_same_users(engine, monkeypatch):
    """Four times the entries of the same 30 users: the review's peak memory does not follow them
    (it once read the whole period into a list). It holds STREAM_BATCH rows at a time: smaller
    here than either period."""
    monkeypatch.setattr(review, "STREAM_BATCH", 500)
    later = MONDAY + dt.timedelta(days=7)
    bulk(engine, office_week(MONDAY, 50) + office_week(later, 200))  # 3,000 and 12,000 entries
    small, large = peak_of_review(engine, MONDAY), peak_of_review(engine, later)
    assert large < 1.6 * small, (small, large)


def test_a_finding_with_more_evidence_than_it_lists_counts_and_names_all_of_it(engine):
    """450 reads at night: the finding counts 450, lists the first 200, and its id is the digest of
    all 450 (as it always was), so a mark made on it holds until the evidence changes."""
    entries = [{"at": timestamp(MONDAY + dt.timedelta(hours=1, seconds=n)), "operation": "GetContacts",
                "user_id": "sw.owl", "reason_text": f"night {n}", "child_ids": f"C{n:05d}-0000-0000-0000"}
               for n in range(450)]
    seqs = bulk(engine, entries)
    with engine.connect() as conn:
        [found] = review.run(conn, MONDAY, review.Thresholds(), until=MONDAY + dt.timedelta(days=7),
                             rules=("out_of_hours",))
    assert (found.count, found.evidence) == (450, seqs[:review.EVIDENCE_LIMIT])
    assert found.id == review.Finding("out_of_hours", "LA:sw.owl", "", seqs).id


def test_one_reason_pasted_with_stray_spaces_counts_as_one(engine):
    """The database counts reason reuse (as many reason texts as reads): one text pasted with and
    without trailing spaces is one text."""
    entries = [{"at": timestamp(MONDAY + dt.timedelta(hours=10, minutes=n)), "operation": "GetContacts",
                "user_id": "sw.paste" if n % 2 else "sw.copy", "reason_text": "checking" + " " * (n % 3),
                "child_ids": f"C{n:05d}-0000-0000-0000"} for n in range(12)]
    seqs = bulk(engine, entries)
    with engine.connect() as conn:
        [found] = review.run(conn, MONDAY, review.Thresholds(), until=MONDAY + dt.timedelta(days=7),
                             rules=("reason_reuse",))
    assert (found.subject, found.count, found.evidence) == ("LA:sw.copy,sw.paste", 12, seqs)
    assert "reads of 12 children" in found.summary


def test_a_reason_ending_in_a_tab_or_newline_is_the_same_pasted_reason(engine):
    """Whitespace at either end, whatever it is (a tab, a newline, a no-break space), as str.strip()."""
    endings = ["", " ", "\t", "\n", "\u00a0", " \r\n"]
    entries = [{"at": timestamp(MONDAY + dt.timedelta(hours=10, minutes=n)), "operation": "GetContacts",
                "user_id": "sw.paste", "reason_text": "checking" + endings[n % len(endings)],
                "child_ids": f"C{n:05d}-0000-0000-0000"} for n in range(12)]
    entries.append({"at": timestamp(MONDAY + dt.timedelta(hours=11)), "operation": "GetContacts",
                    "user_id": "sw.blank", "reason_text": "\t\n", "child_ids": "C99999-0000-0000-0000"})
    seqs = bulk(engine, entries)
    with engine.connect() as conn:
        [found] = review.run(conn, MONDAY, review.Thresholds(), until=MONDAY + dt.timedelta(days=7),
                             rules=("reason_reuse",))
    assert (found.subject, found.count, found.evidence) == ("LA:sw.paste", 12, seqs[:12])
    assert found.id == review.Finding("reason_reuse", "LA:sw.paste", "", seqs[:12]).id


def test_a_read_logged_just_before_its_search_by_another_node_still_follows_it_up(engine):
    """Two nodes' clocks a few seconds apart: the read is written first (a lower seq) but is later by
    time than the search; it is still the search's follow-up, as when the trail was read whole."""
    entries = []
    for n in range(12):
        at = MONDAY + dt.timedelta(hours=10, minutes=5 * n)
        common = {"user_id": "sw.skew", "reason_text": f"case {n}", "child_ids": f"C{n:05d}-0000-0000-0000"}
        entries.append({"at": timestamp(at + dt.timedelta(seconds=30)), "operation": "GetContacts", **common})
        entries.append({"at": timestamp(at), "operation": "FindChild", **common})
    bulk(engine, entries)
    with engine.connect() as conn:
        assert review.run(conn, MONDAY, review.Thresholds(), until=MONDAY + dt.timedelta(days=7),
                          rules=("fishing",)) == []
