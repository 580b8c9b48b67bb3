"""The gateway's own wire dialect (urn:contactgate:v1) mapped to and from the canonical model.

Inputs are schema-valid signed payloads, so the mapping can rely on the XSD's shape.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from lxml import etree

from contactgate_wire.faults import SchemaInvalid
from gateway.index.model import (
    Address, Candidate, Carer, ChildUpdate, ChildView, FindQuery, Identity, Involvement, Setting,
    UnreadableUpdate, UpdateResult,
)
from contactgate_wire.soap import CG

_NS = {"cg": CG}


_CG_PREFIX = f"{{{CG}}}"


def _t(element: etree._Element | None, name: str) -> str | None:
    """The text of ``element``'s first cg:``name`` child ("" if empty), None if it has none."""
    child = None if element is None else _one(element, name)
    return None if child is None else child.text or ""


def _one(element: etree._Element, name: str) -> etree._Element | None:
    """``element``'s first cg:``name`` child, or None. (iterchildren with a tag is lxml's C loop:
    find() goes through ElementPath, twice the cost.)"""
    return next(element.iterchildren(_CG_PREFIX + name), None)


def _all(element: etree._Element, name: str) -> list[etree._Element]:
    return list(element.iterchildren(_CG_PREFIX + name))


class ValueOutOfRange(ValueError):
    """A schema-valid value the canonical model cannot hold. xs:date allows any number of year
    digits and negative years ("10000-01-01", "-0001-01-01"); a Python date holds 0001 to 9999.
    ``what`` names the value for the caller ("date of birth")."""

    def __init__(self, what: str):
        super().__init__(f"{what} is outside the years the index holds (0001 to 9999)")
        self.what = what


# xs:date's lexical form, as the schema step has already accepted it: year, month, day, and an
# optional time zone, which a calendar date ignores.
_XS_DATE = re.compile(r"(-?[0-9]{4,})-([0-9]{2})-([0-9]{2})(?:Z|[+-][0-9]{2}:[0-9]{2})?")


def _date(text: str | None, what: str) -> dt.date | None:
    if not text:
        return None
    match = _XS_DATE.fullmatch(text.strip())
    if match is None:  # the schema step lets only xs:date through; refuse rather than guess
        raise ValueOutOfRange(what)
    year, month, day = (int(part) for part in match.groups())
    if not dt.MINYEAR <= year <= dt.MAXYEAR:
        raise ValueOutOfRange(what)
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise ValueOutOfRange(what) from None


def _bool(text: str | None) -> bool:
    return (text or "").strip() in ("true", "1")


def _opt(text: str | None) -> str | None:
    return text if text else None


@dataclass(frozen=True)
class Requester:
    user_id: str
    role: str
    on_behalf_of: dict | None = None  # Requester/OnBehalfOf's fields as sent (gateway.mediation checks them)


@dataclass(frozen=True)
class Reason:
    code: str
    text: str


def token(text: str | None) -> str:
    """The value of an xs:token as the schema sees it: whitespace collapsed. Identifiers are used in
    this form everywhere (audit, rate limits, links), so "dr  who" and "dr who" are one user.
    Only XML's whitespace (space, tab, CR, LF) collapses, as in the schema: a value the schema
    accepts (say, an ideographic space alone) is never emptied here, nor answered empty."""
    return _XML_SPACE.sub(" ", text or "").strip(" ")


_XML_SPACE = re.compile(r"[ \t\r\n]+")


def read_requester(payload: etree._Element) -> Requester | None:
    element = _one(payload, "Requester")
    if element is None:
        return None
    behalf = _one(element, "OnBehalfOf")
    on_behalf_of = None
    if behalf is not None:
        check = _one(behalf, "IdentityCheck")
        on_behalf_of = {"name": _t(behalf, "Name"), "organisation": _t(behalf, "Organisation"),
                        "role": _t(behalf, "Role"), "phone": _t(behalf, "Phone"),
                        "identity_check": check.get("code") if check is not None else None,
                        "identity_note": check.text if check is not None else None}
    return Requester(user_id=token(_t(element, "UserId")), role=token(_t(element, "Role")), on_behalf_of=on_behalf_of)


def read_reason(payload: etree._Element) -> Reason | None:
    element = _one(payload, "Reason")
    if element is None:
        return None
    return Reason(code=token(element.get("code")), text=(element.text or "").strip())


def _texts(element: etree._Element) -> dict[str, str]:
    """The text of each cg: child of ``element`` by local name ("" if empty; the first of a name),
    read in one pass: a record's fields are looked up here rather than searched for one by one."""
    texts: dict[str, str] = {}
    for child in element:
        tag = child.tag
        if isinstance(tag, str) and tag.startswith(_CG_PREFIX):
            texts.setdefault(tag[len(_CG_PREFIX):], child.text or "")
    return texts


_ADDRESS_LINES = tuple(f"Line{i}" for i in range(1, 6))


def _address(element: etree._Element | None) -> Address | None:
    if element is None:
        return None
    f = _texts(element)
    lines = tuple(t for t in (f.get(name) for name in _ADDRESS_LINES) if t)
    return Address(lines=lines, postcode=f.get("Postcode") or "", town=_opt(f.get("Town")))


def _setting(element: etree._Element | None) -> Setting | None:
    if element is None:
        return None
    f = _texts(element)
    return Setting(name=f.get("Name") or "", code=_opt(f.get("Code")), phone=_opt(f.get("Phone")))


def _identity(element: etree._Element) -> Identity:
    f = _texts(element)
    return Identity(
        family_name=f.get("FamilyName") or "",
        given_names=tuple(g.text or "" for g in _all(element, "GivenName")),
        preferred_name=_opt(f.get("PreferredName")),
        previous_names=tuple(p.text or "" for p in _all(element, "PreviousName")),
        date_of_birth=_date(f.get("DateOfBirth"), "date of birth"),
        gender=f.get("Gender") or "unknown",
        nhs_number=_opt(f.get("NhsNumber")),
        pupil_number=_opt(f.get("PupilNumber")),
        date_of_death=_date(f.get("DateOfDeath"), "date of death"),
    )


def _involvement(element: etree._Element) -> Involvement:
    f = _texts(element)
    return Involvement(
        service=f.get("Service") or "",
        practitioner_name=_opt(f.get("PractitionerName")),
        role=_opt(f.get("Role")),
        phone=_opt(f.get("Phone")),
        email=_opt(f.get("Email")),
        start=_date(f.get("Start"), "an involvement's Start date"),
        end=_date(f.get("End"), "an involvement's End date"),
        caf_assessment=_bool(f.get("CafAssessment")),
        lead_professional=_bool(f.get("LeadProfessional")),
    )


def _carer(element: etree._Element) -> Carer:
    f = _texts(element)
    return Carer(name=f.get("Name") or "", relationship=f.get("Relationship") or "",
                 phone=_opt(f.get("Phone")), email=_opt(f.get("Email")),
                 address=_address(_one(element, "Address")))


def read_submit_updates(payload: etree._Element) -> list[ChildUpdate | UnreadableUpdate]:
    """One entry per ChildUpdate, in order. A record holding a value the model cannot hold comes
    back as an UnreadableUpdate: it is rejected alone, and the rest of the batch is applied."""
    return [_child_update(element) for element in _all(payload, "ChildUpdate")]


def _child_update(element: etree._Element) -> ChildUpdate | UnreadableUpdate:
    source_record_id = token(_t(element, "SourceRecordId"))
    try:
        return ChildUpdate(
            source_record_id=source_record_id,
            identity=_identity(_one(element, "Identity")),
            address=_address(_one(element, "Address")),
            carers=tuple(_carer(c) for c in _all(element, "Carer")),
            educational_setting=_setting(_one(element, "EducationalSetting")),
            gp_practice=_setting(_one(element, "GpPractice")),
            involvements=tuple(_involvement(i) for i in _all(element, "Involvement")),
        )
    except ValueOutOfRange as exc:
        return UnreadableUpdate(source_record_id, reason=str(exc))


def read_find_child(payload: etree._Element) -> FindQuery:
    """The search criteria; a criterion the index cannot hold is SchemaInvalid (it could match
    nothing, and the caller should learn that its value was the problem)."""
    try:
        date_of_birth = _date(_t(payload, "DateOfBirth"), "DateOfBirth")
    except ValueOutOfRange as exc:
        raise SchemaInvalid(f"FindChild: {exc}", public_message=(
            f"{exc.what} is outside the years the gateway holds (0001 to 9999)")) from None
    return FindQuery(
        family_name=_opt(_t(payload, "FamilyName")),
        given_name=_opt(_t(payload, "GivenName")),
        date_of_birth=date_of_birth,
        gender=_opt(_t(payload, "Gender")),
        postcode=_opt(_t(payload, "Postcode")),
        nhs_number=_opt(_t(payload, "NhsNumber")),
        pupil_number=_opt(_t(payload, "PupilNumber")),
        include_score=(_t(payload, "IncludeScore") or "").strip() in ("true", "1"),
    )


def read_get_contacts(payload: etree._Element) -> str:
    return token(_t(payload, "ChildId"))


def read_include_provenance(payload: etree._Element) -> bool:
    """GetContacts' IncludeProvenance: answer who supplied the address and when (AddressSource)."""
    return (_t(payload, "IncludeProvenance") or "").strip() in ("true", "1")


def read_set_shielding(payload: etree._Element) -> tuple[str, bool]:
    """(the child id asked for, whether it is to be shielded)."""
    return token(_t(payload, "ChildId")), token(_t(payload, "Shielded")) in ("true", "1")


# ---- responses -------------------------------------------------------------------------------

def _el(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CG}}}{name}")
    if text is not None:
        element.text = text
    return element


def _opt_el(parent: etree._Element, name: str, text: str | None) -> None:
    if text:
        _el(parent, name, text)


def _response(operation: str, request_digest: str) -> etree._Element:
    root = etree.Element(f"{{{CG}}}{operation}Response", nsmap={"cg": CG})
    _el(root, "RequestDigest", request_digest)
    return root


def _write_bool(value: bool) -> str:
    return "true" if value else "false"


def write_submit_updates_response(results: list[UpdateResult], request_digest: str) -> etree._Element:
    root = _response("SubmitUpdates", request_digest)
    for result in results:
        element = _el(root, "Result")
        _el(element, "SourceRecordId", result.source_record_id)
        _opt_el(element, "ChildId", result.child_id)
        _el(element, "Outcome", result.outcome)
        _opt_el(element, "Detail", result.detail)
    return root


def write_find_child_response(candidates: list[Candidate], request_digest: str,
                              include_score: bool = False) -> etree._Element:
    root = _response("FindChild", request_digest)
    for candidate in candidates:
        element = _el(root, "Candidate")
        _el(element, "ChildId", candidate.child_id)
        _el(element, "FamilyName", candidate.family_name)
        for given in candidate.given_names:
            _el(element, "GivenName", given)
        _el(element, "DateOfBirth", candidate.date_of_birth.isoformat())
        _el(element, "Gender", candidate.gender)
        _opt_el(element, "Locality", candidate.locality)
        if include_score and candidate.score is not None:
            _el(element, "Score", str(candidate.score))
    return root


def _write_identity(parent: etree._Element, identity: Identity) -> None:
    element = _el(parent, "Identity")
    _el(element, "FamilyName", identity.family_name)
    for given in identity.given_names:
        _el(element, "GivenName", given)
    _opt_el(element, "PreferredName", identity.preferred_name)
    for previous in identity.previous_names:
        _el(element, "PreviousName", previous)
    _el(element, "DateOfBirth", identity.date_of_birth.isoformat())
    _el(element, "Gender", identity.gender)
    _opt_el(element, "NhsNumber", identity.nhs_number)
    _opt_el(element, "PupilNumber", identity.pupil_number)


def _write_address(parent: etree._Element, address: Address | None) -> None:
    if address is None:
        return
    element = _el(parent, "Address")
    for index, line in enumerate(address.lines[:5], start=1):
        _el(element, f"Line{index}", line)
    _opt_el(element, "Town", address.town)
    _el(element, "Postcode", address.postcode)


def _write_setting(parent: etree._Element, name: str, setting: Setting | None) -> None:
    if setting is None:
        return
    element = _el(parent, name)
    _el(element, "Name", setting.name)
    _opt_el(element, "Code", setting.code)
    _opt_el(element, "Phone", setting.phone)


def _write_involvement(parent: etree._Element, involvement: Involvement) -> None:
    element = _el(parent, "Involvement")
    _el(element, "Service", involvement.service)
    _opt_el(element, "PractitionerName", involvement.practitioner_name)
    _opt_el(element, "Role", involvement.role)
    _opt_el(element, "Phone", involvement.phone)
    _opt_el(element, "Email", involvement.email)
    _el(element, "Start", involvement.start.isoformat())
    _opt_el(element, "End", involvement.end.isoformat() if involvement.end else None)
    _el(element, "CafAssessment", _write_bool(involvement.caf_assessment))
    _el(element, "LeadProfessional", _write_bool(involvement.lead_professional))


def write_set_shielding_response(child_id: str, shielded: bool, request_digest: str) -> etree._Element:
    root = _response("SetShielding", request_digest)
    _el(root, "ChildId", child_id)
    _el(root, "Shielded", _write_bool(shielded))
    return root


def write_ping_response(org_code: str, expires, scopes, now, request_digest: str) -> etree._Element:
    root = _response("Ping", request_digest)
    _el(root, "Organisation", org_code)
    _el(root, "AccreditationExpires", expires.isoformat())
    for scope in sorted(scopes):
        _el(root, "Scope", scope)
    _el(root, "GatewayTime", now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return root


def write_get_contacts_response(child: ChildView, request_digest: str) -> etree._Element:
    root = _response("GetContacts", request_digest)
    element = _el(root, "Child")
    _el(element, "ChildId", child.child_id)
    _el(element, "Shielded", _write_bool(child.shielded))
    _write_identity(element, child.identity)
    _write_address(element, child.address)
    for carer in child.carers:
        carer_el = _el(element, "Carer")
        _el(carer_el, "Name", carer.name)
        _el(carer_el, "Relationship", carer.relationship)
        _opt_el(carer_el, "Phone", carer.phone)
        _opt_el(carer_el, "Email", carer.email)
        _write_address(carer_el, carer.address)
    _write_setting(element, "EducationalSetting", child.educational_setting)
    _write_setting(element, "GpPractice", child.gp_practice)
    for contact in child.contacts:
        contact_el = _el(element, "Contact")
        _el(contact_el, "Organisation", contact.org_code)
        _write_involvement(contact_el, contact.involvement)
    if child.address is not None and child.address_source is not None:  # never without the address itself
        source = _el(element, "AddressSource")
        _el(source, "Organisation", child.address_source.org_code)
        _el(source, "Received", child.address_source.received_at.astimezone(dt.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"))
    return root
