"""What a shielded child's location is, in one place: every view of a shielded child withholds it
from everyone but the permitted roles, and marks the read in the audit.

A child is shielded (SetShielding) when where they live must not be found: a refuge, witness
protection. Their location is the address, the educational setting and GP practice (each places
the child), and the contact details that reveal it: each carer's address, phone and email, and
each involvement's phone and email. Names, birth date, gender, identifiers, carers' names and
relationships, and which services are involved are not location: they stay visible, so that the
child can still be recognised and helped.

Two views, two allow-lists (they name different people, so they are never one list):

- GetContacts (gateway.pipeline.dispatch): the practitioner roles in ``CONTACTGATE_SHIELD_ROLES``
  (as sent in ``Requester/Role``) see it; ``withhold_location`` makes the answer for every other.
- The review queue (gateway.index.review, `review show`, the console's /review/N): the officer
  roles in ``CONTACTGATE_REVIEW_SHIELD_ROLES`` see it, by default none;
  ``record_without_location`` makes each stored record of the pair for every other.

The audit's mark is the same for both: ``shielded=yes location=withheld`` or
``location=shown-to-role`` (what the ``shielded`` rule of `audit review` finds).
"""

from __future__ import annotations

from dataclasses import replace

from gateway.index.model import ChildView

# A stored record's (ChildUpdate.record()) fields that place the child, and a carer's.
LOCATION_FIELDS = ("address", "educational_setting", "gp_practice")
CARER_LOCATION_FIELDS = ("address", "phone", "email")
# In the linkage comparison of two records: the level and weight of their addresses' agreement.
LOCATION_LEVEL = "location"
WITHHELD = "withheld"


def audit_mark(shown_to_role: bool) -> str:
    """The audit detail's mark of a read of a shielded child."""
    return f"shielded=yes location={'shown-to-role' if shown_to_role else WITHHELD}"


def withhold_location(child: ChildView) -> ChildView:
    """GetContacts' answer for a role that may not see a shielded child's location."""
    return replace(
        child, address=None, educational_setting=None, gp_practice=None,
        carers=tuple(replace(c, address=None, phone=None, email=None) for c in child.carers),
        contacts=tuple(replace(c, involvement=replace(c.involvement, phone=None, email=None))
                       for c in child.contacts),
    )


def record_without_location(record: dict) -> dict:
    """A stored record (or a source's) with its location fields absent, not emptied, and marked
    ``"location": "withheld"`` so that a reader is not led to think it has no address."""
    kept = {name: value for name, value in record.items() if name not in LOCATION_FIELDS}
    if record.get("carers"):
        kept["carers"] = [{name: value for name, value in carer.items() if name not in CARER_LOCATION_FIELDS}
                          for carer in record["carers"]]
    kept["location"] = WITHHELD
    return kept


def provenance_without_location(shown: dict) -> dict:
    """Who supplied each shown value, without the suppliers of the location fields (which
    organisation knows the address is itself a clue to where the child is)."""
    return {name: who for name, who in shown.items() if name not in LOCATION_FIELDS}


def comparison_without_location(comparison: dict) -> dict:
    """A linkage comparison (store.comparison_json) without the location's agreement level and
    weight: with both addresses withheld, whether they agree is still a clue to one of them."""
    if not comparison:
        return comparison
    return {**comparison,
            "levels": {k: v for k, v in (comparison.get("levels") or {}).items() if k != LOCATION_LEVEL},
            "weights": {k: v for k, v in (comparison.get("weights") or {}).items() if k != LOCATION_LEVEL}}
