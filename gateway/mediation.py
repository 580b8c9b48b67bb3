"""Access through another authorised user (issue 26, item 5): a mediator searches and views on
behalf of a requester who has no access of their own (a health visitor, teacher or youth worker
whose organisation has no integrated system calls, say, the local authority's contact team).

Who may mediate (fail closed):

- In the portal: an account whose role is ``mediator`` (given by one user administrator, approved by
  a second), of an organisation whose accreditation holds the scope ``mediate`` (given by one
  officer, approved by a second: `org accredit CODE --scope query --scope mediate`).
- Over SOAP (an optional ``Requester/OnBehalfOf``): the organisation of the TLS client certificate
  holds the scope ``mediate``, and the message's ``Requester/Role`` is ``mediator``. The role alone
  is the calling system's own assertion, so it is never enough by itself; the scope is the officers'
  decision. Anything else carrying OnBehalfOf is refused ``ScopeDenied``, audited.

A mediated read records the requester: name, organisation, role (a role of the roles file, never
``mediator``), phone, how their identity was checked (`IDENTITY_CHECKS`, with a note saying what was
done) - and the read's own reason (code and text), as every read does.

What a mediated read discloses: the fields both the requester's role and the mediator's own role may
see (the intersection of their field groups in the roles file), and a shielded child's location only
if both roles are in CONTACTGATE_SHIELD_ROLES. So a mediator can never pass on more than the
requester would see with access of their own, nor more than the mediator's own role may see. A
mediated read needs a roles file in force (without one every role sees every field, and the
requester's role would limit nothing): without one, it is refused.

The audit entry names both people: the mediator as the user (``ORG:user``, role ``mediator``) and the
requester in ``on_behalf_of`` (the recorded details, as canonical JSON) and ``behalf_key``
(``organisation:name``, whitespace collapsed, case folded: what `audit report --user` matches), both
hashed into the entry's links.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass

from gateway.index import disclosure

MEDIATOR_ROLE = "mediator"
SCOPE = "mediate"

# How the mediator checked that the requester is who they say (the code; the note says what was done).
IDENTITY_CHECKS = {
    "callback_switchboard": "Called back on a number from the organisation's published switchboard",
    "callback_directory": "Called back on a number from a professional directory (not a number the caller gave)",
    "known_in_person": "Known to me in person (met face to face, recognised)",
    "secure_email": "Confirmed by email from the organisation's secure domain",
    "other": "Other (say what in the note)",
}

# Limits (the XSD's, schemas/contactgate.xsd OnBehalfOfType, and the portal's form).
LIMITS = {"name": 100, "organisation": 100, "role": 64, "phone": 32, "identity_check": 32, "identity_note": 500}
_PHONE = re.compile(r"\+?[0-9][0-9 ()-]{4,31}")
_SPACE = re.compile(r"\s+")
LABELS = {"name": "the requester's name", "organisation": "the requester's organisation",
          "role": "the requester's role", "phone": "the requester's phone number",
          "identity_check": "how the requester's identity was checked",
          "identity_note": "what was done to check the requester's identity"}


class MediationRefused(ValueError):
    """A mediated read that may not go ahead: the message says why, in the caller's terms."""


@dataclass(frozen=True)
class OnBehalfOf:
    name: str
    organisation: str
    role: str
    phone: str
    identity_check: str
    identity_note: str

    @classmethod
    def checked(cls, name: str | None, organisation: str | None, role: str | None, phone: str | None,
                identity_check: str | None, identity_note: str | None, *, roles: disclosure.RoleRules) -> "OnBehalfOf":
        """Every field present, not blank, within its limit; the phone a phone number; the check one of
        IDENTITY_CHECKS; the role one of the roles file's (not mediator). Else MediationRefused."""
        given = {"name": name, "organisation": organisation, "role": role, "phone": phone,
                 "identity_check": identity_check, "identity_note": identity_note}
        values = {}
        for field, value in given.items():
            text = _SPACE.sub(" ", unicodedata.normalize("NFC", value or "")).strip()
            if not text:
                raise MediationRefused(f"give {LABELS[field]}")
            if len(text) > LIMITS[field]:
                raise MediationRefused(f"{LABELS[field]} has at most {LIMITS[field]} characters")
            if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
                raise MediationRefused(f"{LABELS[field]} has characters that are not text")
            values[field] = text
        if not _PHONE.fullmatch(values["phone"]):
            raise MediationRefused("the requester's phone number must be digits (spaces, brackets, dashes and a "
                                   "leading + allowed)")
        if values["identity_check"] not in IDENTITY_CHECKS:
            raise MediationRefused(f"how the requester's identity was checked must be one of "
                                   f"{', '.join(IDENTITY_CHECKS)}")
        values["role"] = requester_role(values["role"], roles)
        return cls(**values)

    @property
    def key(self) -> str:
        """``organisation:name`` as `audit report --user` matches it (case folded)."""
        return behalf_key(self.organisation, self.name)

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=True, separators=(",", ":"))

    def summary(self) -> str:
        return (f"{self.name} ({self.role}, {self.organisation}, {self.phone}); identity: {self.identity_check}: "
                f"{self.identity_note}")


def behalf_key(organisation: str, name: str) -> str:
    """What `audit report --user ORG:USER` matches a requester by."""
    return _SPACE.sub(" ", f"{organisation.strip()}:{name.strip()}").casefold()


def requester_role(role: str, roles: disclosure.RoleRules) -> str:
    """The requester's role as the roles file names it; refused without a roles file, for a role not
    in it, and for ``mediator`` itself (a mediator does not mediate for a mediator)."""
    if not roles.configured:
        raise MediationRefused("access on behalf of another needs a roles file in force (the requester's role "
                               "limits what is shown); none is")
    key = role.strip().casefold()
    if key == MEDIATOR_ROLE:
        raise MediationRefused("the requester's role cannot be mediator")
    if key not in roles.roles:
        raise MediationRefused("the requester's role must be one of the roles file's: "
                               + ", ".join(sorted(r for r in roles.roles if r != MEDIATOR_ROLE)))
    return key


def is_mediator(role: str | None) -> bool:
    return (role or "").strip().casefold() == MEDIATOR_ROLE


def requester_roles(roles: disclosure.RoleRules) -> list[str]:
    """The roles a requester may have (the portal's choice list)."""
    return sorted(r for r in roles.roles if r != MEDIATOR_ROLE) if roles.configured else []


def from_json(text: str | None) -> OnBehalfOf | None:
    """An audit entry's ``on_behalf_of`` read back (None if absent or unreadable)."""
    if not text:
        return None
    try:
        return OnBehalfOf(**json.loads(text))
    except (ValueError, TypeError):
        return None
