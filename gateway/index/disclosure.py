"""Which fields of a child's record each practitioner role may see (GetContacts).

A roles file (JSON; `<home>/roles.json`, or the file CONTACTGATE_ROLES_FILE names) maps the roles
practitioners state in the signed `Requester/Role` to the field groups they may see:

    {"roles": {"social worker": ["identifiers", "address", "carers", "carer_contact", "settings",
                                 "practitioners", "practitioner_contact", "lead_professional"],
               "school nurse":  ["settings", "practitioners"]}}

Every role sees the MINIMUM: the child's names, birth date and gender (to know it is the right
child) and which services are involved (service, dates, CAF assessment and lead-professional
flags). A role not in the file sees the minimum only. Groups:

- ``identifiers``: NHS number, pupil number
- ``address``: the child's address
- ``carers``: carers' names and relationships; ``carer_contact``: their phone, email, address
- ``settings``: educational setting and GP practice
- ``practitioners``: each involvement's practitioner name and role
- ``practitioner_contact``: each involvement's phone and email
- ``lead_professional``: who the lead professional is (without it, the practitioner, phone and
  email of an involvement flagged LeadProfessional are withheld: the role sees that a service
  leads, not who)

Without a roles file every role sees every field (as before roles existed): `contactgate roles
show` says which table is in force. docs/roles.example.json is the shipped example, with the role
``mediator`` (gateway.mediation: a mediated read sees what both its roles may). A file that cannot be read refuses the gateway's start.
Role names match exactly after trimming and case folding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.index.model import ChildView

GROUPS = ("identifiers", "address", "carers", "carer_contact", "settings", "practitioners",
          "practitioner_contact", "lead_professional")
MINIMUM = "names, birth date, gender; the services involved (service, dates, CAF and lead-professional flags)"


class RolesFileError(ValueError):
    """The roles file cannot be used (the message says where and why)."""


@dataclass(frozen=True)
class RoleRules:
    roles: dict[str, frozenset[str]]
    source: str  # where the table came from, for `roles show`
    configured: bool = True

    def groups_for(self, role: str | None) -> frozenset[str]:
        if not self.configured:
            return frozenset(GROUPS)
        return self.roles.get(_key(role), frozenset())


def _key(role: str | None) -> str:
    return (role or "").strip().casefold()


UNCONFIGURED = RoleRules({}, "no roles file: every role sees every field", configured=False)


def load(path: Path | None) -> RoleRules:
    if path is None or not path.exists():
        return UNCONFIGURED
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RolesFileError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("roles"), dict):
        raise RolesFileError(f'{path}: expected {{"roles": {{"<role>": ["<group>", ...]}}}}')
    roles: dict[str, frozenset[str]] = {}
    for role, groups in doc["roles"].items():
        if not isinstance(role, str) or not _key(role) or not isinstance(groups, list):
            raise RolesFileError(f"{path}: role {role!r} must be a name with a list of field groups")
        unknown = sorted(set(map(str, groups)) - set(GROUPS))
        if unknown:
            raise RolesFileError(f"{path}: role {role!r} names unknown field groups {unknown}; "
                                 f"known: {', '.join(GROUPS)}")
        if _key(role) in roles:
            raise RolesFileError(f"{path}: role {role!r} is listed twice")
        roles[_key(role)] = frozenset(groups)
    return RoleRules(roles, str(path))


def limit(child: ChildView, groups: frozenset[str]) -> ChildView:
    """The child as a role with ``groups`` may see it (absent optional elements are not sent)."""
    if groups >= set(GROUPS):
        return child
    identity = child.identity
    if "identifiers" not in groups:
        identity = replace(identity, nhs_number=None, pupil_number=None)
    carers = ()
    if "carers" in groups:
        carers = tuple(c if "carer_contact" in groups else replace(c, phone=None, email=None, address=None)
                       for c in child.carers)
    contacts = []
    for contact in child.contacts:
        inv = contact.involvement
        hidden_lead = inv.lead_professional and "lead_professional" not in groups
        if "practitioners" not in groups or hidden_lead:
            inv = replace(inv, practitioner_name=None, role=None)
        if "practitioner_contact" not in groups or hidden_lead:
            inv = replace(inv, phone=None, email=None)
        contacts.append(replace(contact, involvement=inv))
    return replace(
        child, identity=identity, carers=carers, contacts=tuple(contacts),
        address=child.address if "address" in groups else None,
        educational_setting=child.educational_setting if "settings" in groups else None,
        gp_practice=child.gp_practice if "settings" in groups else None)


def table(rules: RoleRules) -> list[str]:
    """`contactgate roles show`."""
    lines = [f"source: {rules.source}", f"every role sees at least: {MINIMUM}"]
    if not rules.configured:
        lines.append("(no table in force: write the roles file to limit fields by role)")
        return lines
    lines.append("a role not listed sees only that minimum")
    width = max([len(r) for r in rules.roles] + [4])
    for role in sorted(rules.roles):
        lines.append(f"{role:<{width}}  {', '.join(g for g in GROUPS if g in rules.roles[role]) or '(minimum only)'}")
    return lines
