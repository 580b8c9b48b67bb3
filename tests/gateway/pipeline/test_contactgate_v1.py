"""How the v1 dialect reads a ChildUpdate: each field from the first cg: child of its name, an empty
element as "", a missing one as absent, children of another namespace ignored — the reading the
schema-valid messages of every client rely on (and the one-pass reader must keep)."""

from __future__ import annotations

import datetime as dt

from lxml import etree

from gateway.pipeline import contactgate_v1 as dialect

CG = "urn:contactgate:v1"


def _read(child_update: str):
    payload = etree.fromstring(f'<SubmitUpdates xmlns="{CG}" xmlns:o="urn:other"><ChildUpdate>'
                               f'{child_update}</ChildUpdate></SubmitUpdates>')
    [update] = dialect.read_submit_updates(payload)
    return update


def test_fields_are_read_from_the_first_element_of_their_name_in_the_dialects_namespace():
    update = _read(
        "<SourceRecordId> s-1 </SourceRecordId>"
        "<Identity><o:FamilyName>Foreign</o:FamilyName><FamilyName>Okafor</FamilyName>"
        "<FamilyName>Second</FamilyName><GivenName>Ada</GivenName><GivenName/>"
        "<DateOfBirth>2015-01-02</DateOfBirth><!-- a note --><Gender>female</Gender><NhsNumber/></Identity>"
        "<Address><Line3>3 Row</Line3><Line1>1 Street</Line1><Line1>again</Line1><Postcode>LS1 1AA</Postcode>"
        "</Address>"
        "<Carer><Name>Pat</Name><Relationship>mother</Relationship><Address><Postcode>LS2 2BB</Postcode>"
        "</Address></Carer><Carer><Name/><Relationship>aunt</Relationship></Carer>"
        "<GpPractice><Name>Park</Name><Code/></GpPractice>"
        "<Involvement><Service>Early help</Service><Start>2024-01-01</Start><CafAssessment>true</CafAssessment>"
        "<LeadProfessional>1</LeadProfessional></Involvement>")
    assert update.source_record_id == "s-1"
    identity = update.identity
    assert identity.family_name == "Okafor" and identity.given_names == ("Ada", "")
    assert identity.date_of_birth == dt.date(2015, 1, 2) and identity.gender == "female"
    assert identity.nhs_number is None and identity.preferred_name is None and identity.date_of_death is None
    assert update.address.lines == ("1 Street", "3 Row") and update.address.postcode == "LS1 1AA"
    assert update.address.town is None
    assert [(c.name, c.relationship) for c in update.carers] == [("Pat", "mother"), ("", "aunt")]
    assert update.carers[0].address.postcode == "LS2 2BB" and update.carers[1].address is None
    assert update.gp_practice.name == "Park" and update.gp_practice.code is None
    assert update.educational_setting is None
    [involvement] = update.involvements
    assert involvement.service == "Early help" and involvement.start == dt.date(2024, 1, 1)
    assert involvement.caf_assessment and involvement.lead_professional and involvement.end is None


def test_a_missing_gender_reads_as_unknown():
    update = _read("<SourceRecordId>s-2</SourceRecordId><Identity><FamilyName>Lee</FamilyName>"
                   "<DateOfBirth>2016-05-06</DateOfBirth></Identity>")
    assert update.identity.gender == "unknown" and update.carers == () and update.involvements == ()
