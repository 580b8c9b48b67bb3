"""A caller cannot put control, bidirectional-formatting or zero-width characters into the audit
trail: UserId, Role and the Reason text are refused by the schema (SchemaInvalid, audited, the index
untouched), however the message is otherwise valid and signed."""

from __future__ import annotations

import pytest

from tests.gateway.pipeline.attacks import REASON, REQUESTER, assert_post_refused, find_kwargs


@pytest.mark.parametrize("field,value", [
    ("UserId", "sw.\u202eevil"),            # right-to-left override
    ("UserId", "sw.jones\u200b"),           # zero-width space
    ("Role", "social\u2066worker"),         # left-to-right isolate
    ("Reason", "checking\nforged line"),    # a newline starting a false report line
    ("Reason", "checking\u2028who"),        # line separator
    ("Reason", "checking \x85 who"),        # NEL, a C1 control
])
def test_invisible_characters_are_refused_by_the_schema(gateway, clients, field, value):
    la = clients("la")
    if field == "Reason":
        kwargs = find_kwargs(Reason={**REASON, "_value_1": value})
    else:
        kwargs = find_kwargs(Requester={**REQUESTER, field: value})
    data = la.build_request("FindChild", **kwargs)
    assert_post_refused(gateway, la, "FindChild", data, "SchemaInvalid", org_code="LA")


def test_ordinary_text_in_any_script_is_accepted(gateway, clients):
    la = clients("la")
    found = la.find_child(user_id="sw.núñez-øre", role="travailleuse sociale", reason_code="safeguarding",
                          reason_text="vérification avant visite — 確認", family_name="Nobody",
                          date_of_birth="2012-01-01")
    assert isinstance(found, list)  # answered, not refused
