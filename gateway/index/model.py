"""The canonical model: exactly the fields the contract allows, nothing else (no case information)."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field, fields

from stdnum.gb import nhs


@dataclass(frozen=True)
class Address:
    lines: tuple[str, ...]
    postcode: str
    town: str | None = None


@dataclass(frozen=True)
class Identity:
    family_name: str
    given_names: tuple[str, ...]
    date_of_birth: dt.date
    gender: str
    preferred_name: str | None = None
    previous_names: tuple[str, ...] = ()
    nhs_number: str | None = None
    pupil_number: str | None = None
    date_of_death: dt.date | None = None  # a recorded death archives the child (gateway.index.retention)


@dataclass(frozen=True)
class Carer:
    name: str
    relationship: str
    phone: str | None = None
    email: str | None = None
    address: Address | None = None


@dataclass(frozen=True)
class Setting:
    name: str
    code: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Involvement:
    service: str
    start: dt.date
    caf_assessment: bool
    lead_professional: bool
    practitioner_name: str | None = None
    role: str | None = None
    phone: str | None = None
    email: str | None = None
    end: dt.date | None = None

    def is_current(self, today: dt.date) -> bool:
        return self.start <= today and (self.end is None or self.end >= today)


@dataclass(frozen=True)
class ChildUpdate:
    source_record_id: str
    identity: Identity
    address: Address | None = None
    carers: tuple[Carer, ...] = ()
    educational_setting: Setting | None = None
    gp_practice: Setting | None = None
    involvements: tuple[Involvement, ...] = ()

    def record(self) -> dict:
        """The stored canonical record (JSON-ready): identity and location, not involvements."""
        data = {name: _plain(getattr(self, name)) for name in _RECORD_FIELDS}
        if data["identity"].get("date_of_death") is None:  # records without a death stay as they were
            data["identity"].pop("date_of_death", None)
        return data


@dataclass(frozen=True)
class UnreadableUpdate:
    """A ChildUpdate the schema accepts but the canonical model cannot hold (a date in the year
    10000, say): rejected on its own with ``reason``, while the rest of its batch is applied."""

    source_record_id: str
    reason: str


@dataclass(frozen=True)
class UpdateResult:
    """What became of one record of a SubmitUpdates. ``outcome``, ``child_id`` and ``detail`` are the
    answer the organisation gets; the rest is for the audit and is never answered."""

    source_record_id: str
    outcome: str  # created | updated | matched | rejected (what is answered: never "review")
    child_id: str | None = None
    detail: str | None = None
    withheld_child_id: str | None = None  # a child this record archived (a recorded death): audited, never answered
    # The record's child was paired with another child in the review queue. Answered as `created`
    # (a new record) or `updated` (a record the organisation sent before), exactly as when it is
    # not, so that no answer says whether the index already knew the child.
    held_for_review: bool = False
    # The record carries a valid NHS or pupil number a child already holds, and was not linked to
    # that child (the rest of its identity disagrees): what `audit review` counts as identifier
    # probing, per organisation.
    identifier_conflict: bool = False
    # The record's values disagree with those shown from a source of a higher precedence: a value
    # conflict is open for a data-quality officer (gateway.index.conflicts). Never answered.
    value_conflict: bool = False

    @property
    def recorded_outcome(self) -> str:
        """The outcome as the audit records it: ``review`` for a record held for review."""
        return "review" if self.held_for_review else self.outcome


@dataclass(frozen=True)
class FindQuery:
    family_name: str | None = None
    given_name: str | None = None
    date_of_birth: dt.date | None = None
    gender: str | None = None
    postcode: str | None = None
    nhs_number: str | None = None
    pupil_number: str | None = None
    include_score: bool = False  # answer each candidate's Score (clients that know the element ask)


@dataclass(frozen=True)
class Candidate:
    child_id: str
    family_name: str
    given_names: tuple[str, ...]
    date_of_birth: dt.date
    gender: str
    locality: str | None
    score: int | None = None  # 0-100: how well the child matches the query
    shielded: bool = False  # not answered: for the audit's mark
    probability: float | None = None  # not answered: the match probability FindChild's floor is on


@dataclass(frozen=True)
class Contact:
    org_code: str
    involvement: Involvement


@dataclass(frozen=True)
class Supplier:
    """Who supplied a shown value and when the gateway received it (gateway.index.precedence)."""

    org_code: str
    received_at: dt.datetime


@dataclass(frozen=True)
class ChildView:
    child_id: str
    shielded: bool
    identity: Identity
    address: Address | None
    carers: tuple[Carer, ...]
    educational_setting: Setting | None
    gp_practice: Setting | None
    contacts: tuple[Contact, ...] = field(default_factory=tuple)
    # Who supplied the address, when the caller asked (IncludeProvenance); answered only with the address.
    address_source: Supplier | None = None


_RECORD_FIELDS = ("identity", "address", "carers", "educational_setting", "gp_practice")


def _plain(value):
    """``value`` as JSON-ready data: dataclasses as dicts, tuples as lists, dates as ISO text
    (``dataclasses.asdict`` and then a conversion did the same with deep copies of everything, for
    every record of every batch)."""
    if isinstance(value, (Identity, Address, Carer, Setting)):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def address_from_json(data: dict | None) -> Address | None:
    if not data:
        return None
    return Address(lines=tuple(data["lines"]), postcode=data["postcode"], town=data.get("town"))


def setting_from_json(data: dict | None) -> Setting | None:
    return Setting(**data) if data else None


def identity_from_json(data: dict) -> Identity:
    return Identity(
        family_name=data["family_name"], given_names=tuple(data["given_names"]),
        date_of_birth=dt.date.fromisoformat(data["date_of_birth"]), gender=data["gender"],
        preferred_name=data.get("preferred_name"), previous_names=tuple(data.get("previous_names") or ()),
        nhs_number=data.get("nhs_number"), pupil_number=data.get("pupil_number"),
        date_of_death=dt.date.fromisoformat(data["date_of_death"]) if data.get("date_of_death") else None,
    )


def carer_from_json(data: dict) -> Carer:
    return Carer(name=data["name"], relationship=data["relationship"], phone=data.get("phone"),
                 email=data.get("email"), address=address_from_json(data.get("address")))


def normalise_name(name: str) -> str:
    """Case-, accent-, space- and punctuation-insensitive form for exact matching, in every script:
    the letters are kept (Latin, Cyrillic, Greek, Arabic, CJK, …: a child's name is not always
    written in a-z), marks, digits, spaces and punctuation are dropped. Compatibility forms fold
    (NFKD: "ﬃ" -> "ffi"), and case folds fully ("ß" -> "ss")."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in decomposed if c.isalpha() and not unicodedata.combining(c))


FAMILY_NAME_KEY_LENGTH = 100


def family_name_key(name: str) -> str:
    """The indexed matching key: normalised, and bounded (normalising can lengthen: "ß" -> "ss")."""
    return normalise_name(name)[:FAMILY_NAME_KEY_LENGTH]


def normalise_postcode(postcode: str) -> str:
    return re.sub(r"\s+", "", postcode).upper()


def locality(address: Address | None) -> str | None:
    """Town, or else the postcode's outward code: enough to tell candidates apart, never an address."""
    if address is None:
        return None
    if address.town:
        return address.town
    compact = normalise_postcode(address.postcode)
    return compact[:-3] if len(compact) > 3 else None


def nhs_number_is_valid(number: str) -> bool:
    """Ten digits with a valid modulus 11 check digit (python-stdnum's gb.nhs)."""
    return re.fullmatch(r"\d{10}", number) is not None and nhs.is_valid(number)
