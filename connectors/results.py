"""What the gateway answers, as typed values: one frozen dataclass per XSD type of an answer, with
snake_case attributes, dates as `datetime.date`, the gateway's time as an aware `datetime`, booleans
as `bool`, repeated elements as lists.

    child = client.get_contacts(child_id, ...)
    child.identity.date_of_birth          # datetime.date(2016, 2, 11)
    [c.involvement.service for c in child.contacts if c.involvement.lead_professional]

Code written for the first SDK, which returned zeep's dicts, keeps working: every result can also
be read by the element names of the WSDL (``child["Identity"]["GivenName"]``, ``child.get("Address")``),
and `to_wire()` gives that dict.
"""

from __future__ import annotations

import datetime as dt
import functools
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any


def wire(name: str, **kwargs):
    """A field whose WSDL element name is not its attribute name in CamelCase."""
    return field(metadata={"wire": name}, **kwargs)


class Result:
    """Base of every answer type: reading by WSDL element name, and building from zeep's dicts."""

    @classmethod
    @functools.cache
    def _wire_names(cls) -> dict[str, str]:
        return {f.metadata.get("wire") or "".join(p.capitalize() for p in f.name.split("_")): f.name
                for f in fields(cls)}

    @classmethod
    @functools.cache
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    def __getitem__(self, wire_name: str):
        try:
            value = getattr(self, self._wire_names()[wire_name])
        except KeyError:
            raise KeyError(wire_name) from None
        return value

    def get(self, wire_name: str, default=None):
        value = self[wire_name] if wire_name in self else None
        return default if value is None else value

    def __contains__(self, wire_name: object) -> bool:
        return wire_name in self._wire_names()

    def to_wire(self) -> dict:
        """The answer as the WSDL names it (the first SDK's dicts)."""
        def plain(value):
            if isinstance(value, Result):
                return value.to_wire()
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value
        return {wire_name: plain(getattr(self, attribute)) for wire_name, attribute in self._wire_names().items()}

    @classmethod
    def from_wire(cls, data) -> "Result":
        values = {}
        hints = cls._hints()
        for wire_name, attribute in cls._wire_names().items():
            values[attribute] = _convert(hints[attribute], data.get(wire_name) if data is not None else None)
        return cls(**values)


def _convert(hint, value):
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in (value or [])]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if isinstance(hint, type) and issubclass(hint, Result):
        return hint.from_wire(value)
    if hint is dt.datetime and isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


@dataclass(frozen=True)
class Involvement(Result):
    """A service's involvement with a child, with its practitioner's contact details (those the
    reader's role may see)."""

    service: str
    start: dt.date
    caf_assessment: bool
    lead_professional: bool
    practitioner_name: str | None = None
    role: str | None = None
    phone: str | None = None
    email: str | None = None
    end: dt.date | None = None


@dataclass(frozen=True)
class Identity(Result):
    family_name: str
    given_names: list[str] = wire("GivenName")
    date_of_birth: dt.date | None = None
    gender: str | None = None
    preferred_name: str | None = None
    previous_names: list[str] = wire("PreviousName", default_factory=list)
    nhs_number: str | None = None
    pupil_number: str | None = None
    date_of_death: dt.date | None = None


@dataclass(frozen=True)
class Address(Result):
    line1: str
    postcode: str
    line2: str | None = None
    line3: str | None = None
    line4: str | None = None
    line5: str | None = None
    town: str | None = None


@dataclass(frozen=True)
class Carer(Result):
    name: str
    relationship: str
    phone: str | None = None
    email: str | None = None
    address: Address | None = None


@dataclass(frozen=True)
class Setting(Result):
    """An educational setting or a GP practice."""

    name: str
    code: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Contact(Result):
    organisation: str
    involvement: Involvement


@dataclass(frozen=True)
class Supplier(Result):
    """Who supplied a value the gateway shows (an organisation's code) and when it received it."""

    organisation: str
    received: dt.datetime | None = None


@dataclass(frozen=True)
class Child(Result):
    """GetContacts: the child's identity and current involvements, as far as the role may see;
    ``address_source``: who supplied the address and when (asked for with ``include_provenance``)."""

    child_id: str
    shielded: bool
    identity: Identity
    address: Address | None = None
    carers: list[Carer] = wire("Carer", default_factory=list)
    educational_setting: Setting | None = None
    gp_practice: Setting | None = None
    contacts: list[Contact] = wire("Contact", default_factory=list)
    address_source: Supplier | None = None


@dataclass(frozen=True)
class Candidate(Result):
    """FindChild: one possible match, with the match score when asked for."""

    child_id: str
    family_name: str
    given_names: list[str] = wire("GivenName")
    date_of_birth: dt.date | None = None
    gender: str | None = None
    locality: str | None = None
    score: int | None = None  # 0-100, when IncludeScore


@dataclass(frozen=True)
class UpdateResult(Result):
    """SubmitUpdates: what became of one record (outcome created, updated, matched or rejected, with
    the reason in ``detail``; ``review`` only from gateways before issue 22, which answered it for a
    record held for review: it is answered ``created`` now)."""

    source_record_id: str
    outcome: str
    child_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Shielding(Result):
    """SetShielding: the child's shielding as it now stands."""

    child_id: str
    shielded: bool


@dataclass(frozen=True)
class PingAnswer(Result):
    """Ping: the organisation the gateway sees, its accreditation and the gateway's clock."""

    organisation: str
    accreditation_expires: dt.date
    scopes: list[str] = wire("Scope")
    gateway_time: dt.datetime | None = None
    request_digest: bytes | None = None  # SHA-256 of the request as the gateway received it
