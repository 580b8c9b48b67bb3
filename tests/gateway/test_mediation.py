"""gateway.mediation: the shipped example roles file has the mediator role; a mediated read discloses
only what both roles may see (their field groups' intersection; a shielded child's location only if
both are shield roles)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from gateway.index import disclosure
from gateway.index.model import ChildView
from gateway.mediation import MEDIATOR_ROLE, requester_roles
from gateway.pipeline.dispatch import disclosed

EXAMPLE = Path(__file__).parents[2] / "docs" / "roles.example.json"


def test_the_shipped_roles_file_has_a_mediator_who_may_see_every_group():
    rules = disclosure.load(EXAMPLE)
    assert rules.groups_for(MEDIATOR_ROLE) == frozenset(disclosure.GROUPS)
    assert MEDIATOR_ROLE not in requester_roles(rules) and "health visitor" in requester_roles(rules)


def test_a_mediated_read_shows_only_what_both_roles_may_see():
    rules = disclosure.RoleRules({"mediator": frozenset({"address", "carers", "settings"}),
                                  "teacher": frozenset({"settings", "practitioners"})}, "test")
    child = _child()
    _, mark = disclosed(child, "mediator", frozenset(), rules, "teacher")
    assert mark == "fields=settings"
    shown, _ = disclosed(child, "mediator", frozenset({"mediator"}), rules, None)
    assert shown.address is not None


def test_a_shielded_childs_location_is_shown_to_a_mediated_read_only_if_both_roles_may_see_it():
    rules = disclosure.UNCONFIGURED
    child = _child(shielded=True)
    assert disclosed(child, "mediator", frozenset({"mediator"}), rules, "teacher")[0].address is None
    assert disclosed(child, "mediator", frozenset({"mediator", "Teacher"}), rules, "teacher")[0].address is not None
    assert disclosed(child, "teacher", frozenset({"mediator"}), rules, "mediator")[0].address is None


def _child(shielded: bool = False) -> ChildView:
    from gateway.index.model import Address, Identity

    identity = Identity(family_name="Test", given_names=("Kid",), date_of_birth=dt.date(2016, 1, 1), gender="female")
    return ChildView(child_id="C001-0000-0000-0000", shielded=shielded, identity=identity,
                     address=Address(lines=("1 Road",), town="Leeds", postcode="LS1 1AA"), carers=(),
                     educational_setting=None, gp_practice=None)
