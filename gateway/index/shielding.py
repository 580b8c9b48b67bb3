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
- The review queue (gateway.index.review, `review list`, `review show`, the console's /review and
  /review/N) and an archived record (gateway.index.retention, `retention show`): the officer roles
  in ``CONTACTGATE_REVIEW_SHIELD_ROLES`` see it, by default none; ``record_without_location`` and
  ``involvement_without_location`` make each stored record for every other, and
  ``comparison_without_location`` a pair's comparison (its agreement levels only: no weight,
  probability or score, each of which would say whether the withheld addresses agree).

The audit's mark is the same for both: ``shielded=yes location=withheld`` or
``location=shown-to-role`` (what the ``shielded`` rule of `audit review` finds).
"""

from __future__ import annotations

from dataclasses import replace

from gateway.index.model import ChildView

# A stored record's (ChildUpdate.record()) fields that place the child, and a carer's.
LOCATION_FIELDS = ("address", "educational_setting", "gp_practice")
CARER_LOCATION_FIELDS = ("address", "phone", "email")
INVOLVEMENT_LOCATION_FIELDS = ("phone", "email")
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


def involvement_without_location(involvement: dict) -> dict:
    """A stored involvement's contact details (gateway.index.sealed.open_involvement, as `retention
    show` lists them) without its phone and email: the service and practitioner stay, as in
    `withhold_location`."""
    return {name: value for name, value in involvement.items() if name not in INVOLVEMENT_LOCATION_FIELDS}


def provenance_without_location(shown: dict) -> dict:
    """Who supplied each shown value, without the suppliers of the location fields (which
    organisation knows the address is itself a clue to where the child is)."""
    return {name: who for name, who in shown.items() if name not in LOCATION_FIELDS}


SUPPLIER_KEYS = ("org", "kind", "source_record_id")


def anonymous(entry: dict) -> dict:
    """A supplier (a provenance entry, a source) with who it is withheld: which organisation holds a
    shielded child's record (a school's, a GP's code), and its own id for it, place the child
    whatever the field it supplied."""
    return {**entry, **{key: WITHHELD for key in SUPPLIER_KEYS if key in entry}}


# What of a comparison says nothing of the addresses: each other field's agreement level (the levels
# are judged field by field), whether the pair look like twins (names and birth date), and how their
# NHS / pupil numbers compare.
COMPARISON_KEPT = ("twins", "identifiers")


def comparison_without_location(comparison: dict) -> dict:
    """A linkage comparison (store.comparison_json) with the agreement levels of every field but the
    location, and no number at all: with both addresses withheld, whether they agree is still a clue
    to one of them, and every number gives it away. The total weight (and the probability, which
    follows from it) less the other fields' weights is the location's weight; and where the
    addresses agree, the other fields are weighed as within one household (linkage.scoring's
    household table), so even their own weights tell. Only the levels stay."""
    if not comparison:
        return comparison
    kept = {name: comparison[name] for name in COMPARISON_KEPT if name in comparison}
    kept["levels"] = {k: v for k, v in (comparison.get("levels") or {}).items() if k != LOCATION_LEVEL}
    return kept
