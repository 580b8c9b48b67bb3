"""The console's review page and a shielded child (issue 22, item 3), on both backends: the location
of both children of a pair with a shielded child is absent from the page (not hidden) unless the
officer holds a role listed in CONTACTGATE_REVIEW_SHIELD_ROLES (none by default), and the read is
marked in the audit as GetContacts marks it. The CLI and the SOAP path that queues such a pair:
tests/gateway/test_review_shielded_location.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from sqlalchemy import select

from gateway.config import Settings
from gateway.console import create_console
from gateway.db import audit_log, review_queue
from gateway.index import store
from gateway.index.model import Address, Carer, Setting
from tests.gateway.console.conftest import Browser
from tests.gateway.index.test_matching_rules import at, update
from tests.support import nhs_number, unique, unique_name


def located(srid: str, nhs: str, dob: str) -> tuple:
    """A record whose location values are its own, and those values."""
    tag = unique_name().title()
    record = update(srid, unique_name("Shield").title(), (unique_name("Kid").title(),), dob, nhs=nhs,
                    address=Address((f"7 {tag} Close",), "LS6 2QX", f"{tag}ford"),
                    school=Setting(f"{tag} Primary", "URN424242"),
                    gp=Setting(f"{tag} Surgery", "B86999", "0113 496 7781"))
    record = dataclasses.replace(record, carers=(Carer("Pat Parent", "mother", "0113 496 7782",
                                                      f"{tag.lower()}@home.example",
                                                      Address((f"9 {tag} Mews",), "LS6 2QY")),))
    return record, [f"7 {tag} Close", f"{tag}ford", f"{tag} Primary", f"{tag} Surgery", "0113 496 7781",
                    "0113 496 7782", f"{tag.lower()}@home.example", f"9 {tag} Mews", "LS6 2QX", "LS6 2QY"]


def shielded_pair(gateway) -> tuple[int, list[str]]:
    """A child LA holds (then shielded), and a record with its NHS number and other demographics:
    the pair is queued for review."""
    nhs = nhs_number(int(unique()[:7], 16))
    held, needles = located(unique("held-"), nhs, "2015-05-15")
    probe, probe_needles = located(unique("probe-"), nhs, "2011-02-03")
    with gateway.engine.begin() as conn:
        [known] = store.apply_updates(conn, "LA", [held], at(0))
        [queued] = store.apply_updates(conn, "LA", [probe], at(1))
        assert store.set_shielding(conn, known.child_id, True, dt.date.today()) == known.child_id
        entry = conn.execute(select(review_queue.c.id).where(
            review_queue.c.child_id == queued.child_id, review_queue.c.candidate_child_id == known.child_id)
        ).scalar_one()
    return entry, needles + probe_needles


def marks(gateway, since_seq: int) -> list[str]:
    with gateway.engine.connect() as conn:
        return list(conn.execute(select(audit_log.c.detail).where(
            audit_log.c.seq > since_seq, audit_log.c.operation == "review.show")).scalars())


def test_the_review_page_withholds_a_shielded_pairs_location_and_marks_the_audit(browser, registry_home):
    entry, needles = shielded_pair(registry_home)
    seq = registry_home.audit_seq()
    page = browser("dora").get(f"/review/{entry}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert [n for n in needles if n in text] == []
    assert "withheld" in text
    assert marks(registry_home, seq) == [f"review {entry} shown shielded=yes location=withheld"]


def test_the_review_page_shows_the_location_to_an_officer_role_on_the_allow_list(registry_home, clock):
    entry, needles = shielded_pair(registry_home)
    settings = Settings.from_env({"CONTACTGATE_REVIEW_SHIELD_ROLES": "data_quality"},
                                 home=str(registry_home.home), database_url=registry_home.database_url)
    app = create_console(settings, clock=clock)
    try:
        seq = registry_home.audit_seq()
        text = Browser(app, registry_home, clock).sign_in("dora").get(f"/review/{entry}").get_data(as_text=True)
        assert needles[0] in text
        assert marks(registry_home, seq) == [f"review {entry} shown shielded=yes location=shown-to-role"]
    finally:
        app.extensions["contactgate"]["engine"].dispose()


NUMBER = re.compile(r"\d\.\d")  # a score, a probability or a weight as the pages write them


def test_the_review_page_of_a_withheld_pair_shows_agreement_levels_only_and_says_so(browser, registry_home):
    entry, _ = shielded_pair(registry_home)
    officer = browser("dora")
    text = officer.get(f"/review/{entry}").get_data(as_text=True)
    assert not NUMBER.search(text), NUMBER.search(text)
    assert '<th scope="col">Weight</th>' not in text and '<th scope="col">Agreement</th>' in text
    assert "weights" in text and "score" in text  # the page says what else is withheld, and why
    listing = officer.get("/review?status=all").get_data(as_text=True)
    [score] = re.findall(rf">Review {entry}</a></td><td>\w+</td>\s*<td>([^<]*)</td>", listing)
    assert score == "withheld"
