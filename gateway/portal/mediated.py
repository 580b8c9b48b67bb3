"""A mediator's reads in the portal (gateway.mediation): the requester's details, posted with every
search, the opening of a result and the child's page (hidden fields after the first), checked each
time. A mediator's read without them is refused; a practitioner who is not a mediator posting them is
refused (the route's refusal, audited); a mediator of an organisation not accredited for mediation is
refused likewise."""

from __future__ import annotations

from contactgate_wire.faults import SchemaInvalid
from gateway.mediation import IDENTITY_CHECKS, SCOPE, MediationRefused, OnBehalfOf, is_mediator, requester_roles
from gateway.portal.access import ReadRefused

FIELDS = {"behalf_name": "name", "behalf_organisation": "organisation", "behalf_role": "role",
          "behalf_phone": "phone", "behalf_check": "identity_check", "behalf_note": "identity_note"}
MAX_FIELD = 1000  # anything longer is refused before it is looked at


def posted(form) -> bool:
    """Whether the form carries any of the requester's fields (even blank)."""
    return any(name in form for name in FIELDS)


def checked(form, roles) -> OnBehalfOf:
    """The requester as the form gives them, or ReadRefused (SchemaInvalid) saying what is wrong."""
    values = {}
    for name, field in FIELDS.items():
        value = form.get(name) or ""
        if len(value) > MAX_FIELD:
            raise ReadRefused(f"the requester's details are too long ({name.removeprefix('behalf_')})",
                              SchemaInvalid.code)
        values[field] = value
    try:
        return OnBehalfOf.checked(**values, roles=roles)
    except MediationRefused as exc:
        raise ReadRefused(str(exc), SchemaInvalid.code) from None


def refusal(practitioner, org, form) -> str | None:
    """Why this practitioner may not read with (or without) these requester fields, as a route
    refusal (403, audited), or None."""
    if is_mediator(practitioner.role):
        if org is None or SCOPE not in org.scopes:
            return (f"{practitioner.org_code} is not accredited for mediation (scope {SCOPE}): a mediator of it "
                    f"cannot search or view")
        return None
    if posted(form):
        return "searching on behalf of another person needs the mediator role"
    return None


def template_context(roles) -> dict:
    return {"identity_checks": IDENTITY_CHECKS, "requester_roles": requester_roles(roles)}
