import datetime as dt

from gateway.index.model import Address, Carer, ChildView, Contact, Identity, Involvement, Setting
from gateway.pipeline.dispatch import withhold_location


def test_shielded_child_location_is_withheld():
    child = ChildView(
        child_id="X", shielded=True,
        identity=Identity("Smith", ("Amy",), dt.date(2015, 1, 1), "female"),
        address=Address(("1 Secret Lane",), "LS1 1AA", "Leeds"),
        carers=(Carer("Pat", "mother", "0113", "p@example", Address(("1 Secret Lane",), "LS1 1AA")),),
        educational_setting=Setting("Hillside Primary"), gp_practice=Setting("Park Surgery"),
        contacts=(Contact("LA", Involvement("Social care", dt.date(2024, 1, 1), True, True,
                                            "Sam", "sw", "0113 000", "sam@la.example")),),
    )
    safe = withhold_location(child)
    assert safe.address is None and safe.educational_setting is None and safe.gp_practice is None
    assert safe.carers[0].address is None and safe.carers[0].phone is None
    assert safe.contacts[0].involvement.phone is None and safe.contacts[0].involvement.email is None
    assert safe.contacts[0].involvement.service == "Social care"
