"""`contactgate demo`: the whole product end to end on the embedded default, in a temporary home:
the gateway's operators and officers on one side, connecting organisations calling it through the
SDK on the other.

Each step says what should happen and checks that it did; the exit status is 0 only if every step
behaved as expected.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from connectors.client import GatewayFault, GatewayUnreachable
from contactgate_local import LocalGateway
from contactgate_wire.certificates import fingerprint, load_cert_pem

REASON = {"reason_code": "care_coordination", "reason_text": "arranging a multi-agency meeting"}


class Demo:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def step(self, title: str) -> None:
        print(f"\n== {title}")

    def expect(self, ok: bool, what: str) -> None:
        print(f"   [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            self.failures.append(what)

    def refused(self, call, code: str, what: str) -> None:
        try:
            call()
        except GatewayFault as fault:
            self.expect(fault.code == code, f"{what}: refused with {fault.code}")
            return
        self.expect(False, f"{what}: was NOT refused")


def _children() -> list[dict]:
    def child(srid, family, given, dob, gender, nhs, postcode, town, school, involvements):
        return {
            "SourceRecordId": srid,
            "Identity": {"FamilyName": family, "GivenName": [given], "DateOfBirth": dob, "Gender": gender,
                         "NhsNumber": nhs},
            "Address": {"Line1": "12 Acacia Avenue", "Town": town, "Postcode": postcode},
            "Carer": [{"Name": f"Alex {family}", "Relationship": "parent", "Phone": "0113 496 0100"}],
            "EducationalSetting": {"Name": school, "Code": "URN123456", "Phone": "0113 496 0200"},
            "GpPractice": {"Name": "Riverside Medical Centre", "Code": "B86002"},
            "Involvement": involvements,
        }

    social_care = {"Service": "Children's social care", "PractitionerName": "Sam Patel", "Role": "social worker",
                   "Phone": "0113 496 0300", "Email": "sam.patel@la.example", "Start": "2025-09-01",
                   "CafAssessment": True, "LeadProfessional": True}
    early_help = {"Service": "Early help", "PractitionerName": "Jo Evans", "Role": "family support worker",
                  "Phone": "0113 496 0301", "Start": "2026-01-15", "CafAssessment": False,
                  "LeadProfessional": False}
    return [
        child("LA-0001", "Okonkwo", "Chidi", "2016-02-11", "male", "9434765919", "LS6 2AB", "Leeds",
              "Hillside Primary", [social_care, early_help]),
        child("LA-0002", "Kowalski", "Maja", "2012-10-30", "female", "9434765870", "LS7 3CD", "Leeds",
              "Northern Academy", [early_help]),
        child("LA-0003", "Hughes", "Ffion", "2019-06-05", "female", "9434765862", "LS8 4EF", "Leeds",
              "Little Acorns Nursery", []),
    ]


def run_demo(keep: bool = False, home: Path | None = None) -> int:
    """``home``: run in this (new) home and keep it (tests read what the demo left at rest)."""
    if home is not None:
        keep = True
    home = home or Path(tempfile.mkdtemp(prefix="contactgate-demo-"))
    gateway = LocalGateway(home=home, echo=True)
    demo = Demo()
    try:
        demo.step("An operator creates the gateway's home (CA, server certificate, signing key, database)")
        gateway.cli("init")

        demo.step("Accreditation officers (accounts with a password and an authenticator code) onboard "
                  "three organisations; the third is never approved")
        la_dir = gateway.add_org("LEEDS_LA", "local_authority", ["push", "query"])
        gateway.add_org("LTHT", "health", ["query"])
        gateway.add_org("ST_MARYS", "education", ["query"], approve=False)
        proposal = gateway.pending_proposal("ST_MARYS")
        result = gateway.cli("org", "approve", "ST_MARYS", "--proposal", proposal, officer="officer-a", expect_ok=False)
        demo.expect(result.exit_code != 0 and "second officer" in result.output,
                    "an officer cannot approve what they proposed themselves")
        gateway.cli("org", "list")

        demo.step("The gateway is served with mutual TLS on a free loopback port")
        gateway.start(workers=2)
        print(f"   serving {gateway.url}/soap/v1")
        la = gateway.client("leeds_la")
        health = gateway.client("ltht")

        demo.step("The local authority pushes three children with their involvements (SubmitUpdates)")
        results = la.submit_updates(_children())
        for r in results:
            print(f"   {r['SourceRecordId']}: {r['Outcome']} {r['ChildId']}")
        demo.expect([r["Outcome"] for r in results] == ["created"] * 3, "three children created")

        demo.step("The same record pushed again updates the same child; a network retry is not re-applied")
        again = la.submit_updates(_children()[:1])
        demo.expect(again[0]["Outcome"] == "updated" and again[0]["ChildId"] == results[0]["ChildId"],
                    "a later push of LA-0001 updates the same child (no duplicate)")
        message = la.build_request("SubmitUpdates", ChildUpdate=[dict(_children()[2], SourceRecordId="LA-0004")])
        _, first = la.post_raw("SubmitUpdates", message)
        _, retry = la.post_raw("SubmitUpdates", message)  # the very same signed bytes, as after a timeout
        outcomes = [e.text for answer in (first, retry) for e in answer.iter("{urn:contactgate:v1}Outcome")]
        print(f"   first answer: {outcomes[0]}; answer to the retry: {outcomes[1]}")
        demo.expect(outcomes == ["matched", "matched"],
                    "LA-0004 (a new record id with LA-0003's NHS number) matched the existing child; "
                    "the retry got the first answer, not 'updated'")

        demo.step("The health provider finds a child, with a reason (FindChild)")
        candidates = health.find_child(user_id="dr.ahmed", role="paediatrician", family_name="okonkwo",
                                       date_of_birth="2016-02-11", **REASON)
        for c in candidates:
            print(f"   candidate {c['ChildId']} {c['GivenName'][0]} {c['FamilyName']} {c['DateOfBirth']} "
                  f"({c['Locality']})")
        demo.expect(len(candidates) == 1 and candidates[0]["ChildId"] == results[0]["ChildId"],
                    "exactly the right child found, with a locality but no address")
        child_id = candidates[0]["ChildId"]

        demo.step("... and asks who else is working with the child (GetContacts)")
        child = health.get_contacts(child_id, user_id="dr.ahmed", role="paediatrician", **REASON)
        for contact in child["Contact"]:
            inv = contact["Involvement"]
            print(f"   {contact['Organisation']}: {inv['Service']} - {inv['PractitionerName']} "
                  f"({inv['Role']}) {inv['Phone'] or ''} lead={inv['LeadProfessional']} "
                  f"CAF={inv['CafAssessment']}")
        demo.expect(len(child["Contact"]) == 2, "both current involvements returned")

        demo.step("Linkage: another system's record of Chidi, with no NHS number, a typo and a nickname")
        typo = dict(_children()[0], SourceRecordId="LA-0101", Identity={
            "FamilyName": "Okonkow", "GivenName": ["Chid"], "DateOfBirth": "2016-11-02", "Gender": "male"},
                    Involvement=[])
        [linked] = la.submit_updates([typo])
        print(f"   LA-0101 (Chid Okonkow, born 2016-11-02 - day and month swapped): {linked['Outcome']} "
              f"{linked['ChildId']}")
        demo.expect(linked["Outcome"] == "matched" and linked["ChildId"] == results[0]["ChildId"],
                    "linked to the same child, not a duplicate")
        fuzzy = health.find_child(user_id="dr.ahmed", role="paediatrician", family_name="Okonkow",
                                  given_name="Chidi", date_of_birth="2016-02-11", **REASON)
        for c in fuzzy:
            print(f"   FindChild 'Okonkow': {c['ChildId']} {c['GivenName'][0]} {c['FamilyName']} score {c['Score']}")
        demo.expect(bool(fuzzy) and fuzzy[0]["ChildId"] == results[0]["ChildId"],
                    "a misspelt family name still finds the child, with a score")

        demo.step("A record that meets Maja's NHS number but not her identity: answered as a new child "
                  "(the answer never says a number is known), and held for review")
        clash = dict(_children()[2], SourceRecordId="LA-0102", Identity={
            "FamilyName": "Novak", "GivenName": ["Tomas"], "DateOfBirth": "2010-01-20", "Gender": "male",
            "NhsNumber": "9434765870"}, Involvement=[])
        [held] = la.submit_updates([clash])
        print(f"   LA-0102: {held['Outcome']} {held['ChildId']} - {held['Detail']}")
        demo.expect(held["Outcome"] == "created" and held["ChildId"] not in (None, results[1]["ChildId"]),
                    "stored as its own child (visible at once), answered as any new child")
        queued = gateway.cli("review", "list").output
        demo.expect(held["ChildId"] in queued, "the pair queued for a person")
        gateway.cli("review", "show", "1", "--officer", "dq-officer")
        gateway.cli("review", "distinct", "1", "--officer", "dq-officer")

        demo.step("What the gateway refuses")
        demo.refused(lambda: health.get_contacts(child_id, user_id="dr.ahmed", role="paediatrician",
                                                 reason_code=None, reason_text=None),
                     "ReasonRequired", "a read without a reason")
        demo.refused(lambda: health.submit_updates(_children()[:1]), "ScopeDenied",
                     "a health provider pushing records")
        demo.refused(lambda: gateway.client("st_marys").find_child(
            user_id="head", role="teacher", family_name="Hughes", date_of_birth="2019-06-05", **REASON),
            "NotAccredited", "an organisation whose accreditation was never approved")
        gateway.cli("cert", "revoke", fingerprint(load_cert_pem((la_dir / "cert.pem").read_bytes())),
                    "--reason", "demo: key compromised")
        time.sleep(1.2)  # the gateway picks the new CRL up within a second, without a restart
        try:
            gateway.client("leeds_la").find_child(user_id="sw1", role="social worker", family_name="Hughes",
                                                  date_of_birth="2019-06-05", **REASON)
            demo.expect(False, "the local authority's revoked certificate was NOT refused at the TLS handshake")
        except GatewayUnreachable:
            demo.expect(True, "the local authority's revoked certificate, on a new connection: refused at "
                              "the TLS handshake (the gateway's CRL)")

        demo.step("The auditor reviews who accessed the child, and verifies the chain")
        gateway.cli("audit", "report", "--child", child_id)
        gateway.cli("audit", "report", "--user", "LTHT:dr.ahmed")
        verify = gateway.cli("audit", "verify", expect_ok=False)
        demo.expect(verify.exit_code == 0, "audit chain intact")
    except Exception as exc:  # report, don't hide: the demo fails
        demo.failures.append(f"{type(exc).__name__}: {exc}")
        print(f"\n   [FAILED] {type(exc).__name__}: {exc}")
    finally:
        gateway.stop()
        if keep:
            print(f"\nhome kept at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    print()
    if demo.failures:
        print(f"DEMO FAILED ({len(demo.failures)} step(s) did not behave as expected)")
        return 1
    print("DEMO OK: every step behaved as expected")
    return 0


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the temporary home afterwards and print where it is.")
def command(keep: bool) -> None:
    """Run the end-to-end demonstration and print what happened."""
    sys.exit(run_demo(keep=keep))
