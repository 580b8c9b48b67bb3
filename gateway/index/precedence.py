"""What the index shows for a child when its sources disagree, and who supplied each shown value.

Every source record keeps its own values (``source_records.record``); nothing one organisation
sends overwrites what another supplied. What GetContacts shows is derived from them, field by field,
by the **precedence** in force (``Rules``): for each field, tiers of kinds of organisation
(gateway.trust.registry.KINDS), best first; the value shown is the most recent of the best tier that
states the field. Kinds a field's tiers do not name come after them, as one tier (an organisation no
longer in the registry too). The default (``DEFAULT_TIERS``):

- address and carers: a **local authority** or **health** (GP registration) before **education**;
- the GP practice and the NHS number: **health** first;
- the educational setting and the unique pupil number: **education** first;
- names, birth date and gender: the most recent source (one tier).

The operator sets it in the home's ``precedence.json`` (or the file CONTACTGATE_PRECEDENCE_FILE
names; docs/data-engineers.md "Who supplied what"):

    {"fields": {"address": [["local_authority", "health"], ["education"]],
                "carers":  [["local_authority", "health"], ["education"]]}}

A field the file does not name keeps its default; ``[]`` is one tier (the most recent wins).

"Most recent" is the time the gateway received the source's latest record; ties go to the later
(organisation code, source record id), so that the result is a pure function of the sources.
A value the source left out does not count as stating it, nor does gender ``unknown``. Previous
names are the union of every source's, in the order first reported, each with its first reporter.

A source of a lower tier that states another value than the one shown is a **value conflict**
(gateway.index.conflicts): its value is kept as its own, readers see the owner's, and a data-quality
officer settles it. One settled for the lower source's value is a ``Choice``: that value is shown as
long as its source still states it and the owner still states the value it overruled. A lower value
in question (an open conflict, or one an officer kept the owner's value against) is **held back**:
when its owner stops stating the field it is not shown unasked; the field shows nothing from it
and a new question (the lower value against none) is asked, which a settlement answers.

The provenance of each shown value is ``{"org", "source_record_id", "at"}`` (and ``"settled"``:
the value conflict whose settlement chose it).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from gateway.trust.registry import KINDS

IDENTITY_FIELDS = ("family_name", "given_names", "preferred_name", "date_of_birth", "gender",
                   "nhs_number", "pupil_number")
RECORD_FIELDS = ("address", "carers", "educational_setting", "gp_practice")
FIELDS = IDENTITY_FIELDS + RECORD_FIELDS

# Field -> tiers of kinds of organisation, best first (kinds not named come after, as one tier).
DEFAULT_TIERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "address": (("local_authority", "health"), ("education",)),
    "carers": (("local_authority", "health"), ("education",)),
    "gp_practice": (("health",),),
    "nhs_number": (("health",),),
    "educational_setting": (("education",),),
    "pupil_number": (("education",),),
}
PRECEDENCE_INFO = "contactgate_precedence"  # Connection.info key: the Rules of the engine's home


class PrecedenceFileError(ValueError):
    """The precedence file cannot be used (the message says where and why)."""


@dataclass(frozen=True)
class Rules:
    """Precedence per field and kind of organisation."""

    tiers: dict  # field -> tuple of tuples of kinds, best first
    source: str = "built-in default"

    def tier(self, field_: str, kind: str | None) -> int:
        """0 for the best tier; kinds not named (and None) one past the last."""
        tiers = self.tiers.get(field_, ())
        for number, kinds in enumerate(tiers):
            if kind in kinds:
                return number
        return len(tiers)

    def table(self) -> list[str]:
        """`contactgate precedence show`."""
        lines = [f"source: {self.source}",
                 "per field, tiers of kinds of organisation, best first; within a tier the most recent "
                 "wins; kinds not named come last, together"]
        for name in FIELDS:
            tiers = self.tiers.get(name, ())
            shown = " > ".join(" = ".join(kinds) for kinds in tiers) if tiers else "(the most recent source)"
            if tiers and set(KINDS) - {k for kinds in tiers for k in kinds}:
                shown += " > any other"
            lines.append(f"{name:<20} {shown}")
        return lines


DEFAULT_RULES = Rules(dict(DEFAULT_TIERS))


def load(path: Path | None) -> Rules:
    """The rules in ``path`` over the defaults (DEFAULT_RULES without a file). A file that cannot
    be used raises PrecedenceFileError: the gateway does not start on a precedence it cannot read."""
    if path is None or not path.exists():
        return DEFAULT_RULES
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PrecedenceFileError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("fields"), dict) or set(doc) - {"fields"}:
        raise PrecedenceFileError(f'{path}: expected {{"fields": {{"<field>": [["<kind>", ...], ...]}}}}')
    tiers = dict(DEFAULT_TIERS)
    for name, given in doc["fields"].items():
        if name not in FIELDS:
            raise PrecedenceFileError(f"{path}: unknown field {name!r}; fields: {', '.join(FIELDS)}")
        if not isinstance(given, list) or not all(isinstance(t, list) and t for t in given):
            raise PrecedenceFileError(f"{path}: field {name!r} must be a list of tiers, each a non-empty "
                                      f"list of kinds of organisation")
        named = [k for t in given for k in t]
        unknown = sorted({str(k) for k in named} - set(KINDS))
        if unknown:
            raise PrecedenceFileError(f"{path}: field {name!r} names unknown kinds {unknown}; kinds: {', '.join(KINDS)}")
        if len(named) != len(set(named)):
            raise PrecedenceFileError(f"{path}: field {name!r} names a kind in two tiers")
        tiers[name] = tuple(tuple(t) for t in given)
    return Rules(tiers, str(path))


def attach(engine, rules: Rules):
    """Derive with ``rules`` on every connection of ``engine`` (the app's, the command line's, the
    console's: each loads its home's file). Connections of other engines derive with the defaults."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _attach_rules(_dbapi_conn, record):
        record.info[PRECEDENCE_INFO] = rules

    return engine


def rules_of(conn) -> Rules:
    return conn.info.get(PRECEDENCE_INFO) or DEFAULT_RULES


@dataclass(frozen=True)
class Choice:
    """A value conflict settled for the lower source's value: ``field`` shows ``chosen`` (canonical
    form) from that source while the value derived otherwise is still ``overruled``."""

    conflict_id: int
    field: str
    org_code: str
    source_record_id: str  # stored (blinded)
    chosen: str
    overruled: str


# ---- comparing values: what counts as the same value -------------------------------------------

def _text(value) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", str(value or "")).casefold().split())


def _address(value: dict | None):
    if not value:
        return None
    return {"lines": [_text(line) for line in value.get("lines") or () if _text(line)],
            "postcode": re.sub(r"\s+", "", value.get("postcode") or "").upper(),
            "town": _text(value.get("town")) or None}


def _phone(value) -> str | None:
    """A UK phone as its national digits: +44, 0044 and a bracketed (0) after them are one form."""
    text = re.sub(r"^\s*(\+|00)\s*44\s*(\(\s*0\s*\))?", "0", value or "")
    digits = re.sub(r"\D", "", text)
    if digits.startswith("44"):
        digits = "0" + digits[2:]
    return digits or None


def _carer(value: dict) -> dict:
    return {"name": _text(value.get("name")), "relationship": _text(value.get("relationship")),
            "phone": _phone(value.get("phone")), "email": (value.get("email") or "").strip().casefold() or None,
            "address": _address(value.get("address"))}


def _setting(value: dict | None):
    if not value:
        return None
    return {"name": _text(value.get("name")), "code": (value.get("code") or "").strip().upper() or None,
            "phone": _phone(value.get("phone"))}


def comparable(field_: str, value):
    """``value`` in the form two sources' values are compared in: case, spacing and punctuation
    aside, postcodes without spaces, phones as digits."""
    if field_ == "address":
        return _address(value)
    if field_ == "carers":
        return sorted((_carer(c) for c in value or ()), key=lambda c: json.dumps(c, sort_keys=True))
    if field_ in ("educational_setting", "gp_practice"):
        return _setting(value)
    if field_ == "given_names":
        return [_text(v) for v in value or ()]
    if field_ in ("nhs_number", "pupil_number"):
        return re.sub(r"\s+", "", str(value or "")).upper() or None
    return _text(value) if isinstance(value, str) else value


def canonical(field_: str, value) -> str:
    """The comparable form as text (what a Choice holds)."""
    return json.dumps(comparable(field_, value), sort_keys=True)


def _agrees_where_both_state(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return True
    return all(a[k] == b[k] or a[k] in (None, [], "") or b[k] in (None, [], "") for k in a)


def disagrees(field_: str, submitted, shown) -> bool:
    """Whether a lower source's ``submitted`` value says something else than the ``shown`` one. A
    detail only one of them gives is not a disagreement (a town, a carer's email, a carer the lower
    source does not list); a different value, or a carer the shown value does not have, is."""
    if field_ == "address":
        a, b = _address(submitted), _address(shown)
        if a is None or b is None:
            return a != b and a is not None
        return a["lines"] != b["lines"] or a["postcode"] != b["postcode"] or not _agrees_where_both_state(
            {"town": a["town"]}, {"town": b["town"]})
    if field_ == "carers":
        held = {}
        for carer in map(_carer, shown or ()):
            held.setdefault(carer["name"], []).append(carer)
        for carer in map(_carer, submitted or ()):
            if not any(carer["relationship"] == other["relationship"]
                       and _agrees_where_both_state({k: carer[k] for k in ("phone", "email")},
                                                    {k: other[k] for k in ("phone", "email")})
                       and (carer["address"] is None or other["address"] is None
                            or not disagrees("address", carer["address"], other["address"]))
                       for other in held.get(carer["name"], ())):
                return True
        return False
    if field_ in ("educational_setting", "gp_practice"):
        a, b = _setting(submitted), _setting(shown)
        if a is None or b is None:
            return a is not None and b is not None
        if a["code"] and b["code"]:
            return a["code"] != b["code"]
        return a["name"] != b["name"]
    return comparable(field_, submitted) != comparable(field_, shown)


@dataclass(frozen=True)
class Source:
    org_code: str
    source_record_id: str
    kind: str | None  # None: an organisation no longer in the registry
    received_at: dt.datetime
    text: str = field(compare=False, repr=False)  # the record as stored: ChildUpdate.record() as JSON
    sent_id: str | None = field(default=None, compare=False, repr=False)  # source_record_id as sent (it is stored blinded)

    @functools.cached_property
    def record(self) -> dict:
        """The record, decoded when first needed (a child's older sources often are not)."""
        return json.loads(self.text)


def _stated(field: str, value) -> bool:
    if value in (None, "", [], {}):
        return False
    return not (field == "gender" and value == "unknown")


def _order(source: Source):
    at = source.received_at
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=dt.timezone.utc)
    return at, source.org_code, source.source_record_id


def _choose(field_: str, stating: list[tuple[Source, object]], rules: Rules, choices=(), held_back=frozenset()):
    """The (source, value, choice) shown: the most recent of the best tier stating the field (a value
    ``held_back`` does not count: it is in question), unless a settled conflict chose another value
    that its source still states over the one derived; (None, None, None) when nothing is shown."""
    eligible = [(s, v) for s, v in stating
                if (field_, s.org_code, s.source_record_id, canonical(field_, v)) not in held_back]
    shown: tuple = (None, None)
    if eligible:
        best = min(rules.tier(field_, s.kind) for s, _ in eligible)
        shown = max(((s, v) for s, v in eligible if rules.tier(field_, s.kind) == best),
                    key=lambda pair: _order(pair[0]))
    for choice in choices:
        if choice.field != field_:
            continue
        if (shown[0] is not None and (shown[0].org_code, shown[0].source_record_id) == (choice.org_code, choice.source_record_id)
                and canonical(field_, shown[1]) == choice.chosen):
            return (*shown, choice)  # the settled value, shown now whatever it overruled
        if canonical(field_, shown[1]) != choice.overruled:
            continue
        for source, value in stating:
            if ((source.org_code, source.source_record_id) == (choice.org_code, choice.source_record_id)
                    and canonical(field_, value) == choice.chosen):
                return source, value, choice
    return (*shown, None)


def stating(sources: list[Source], field_: str) -> list[tuple[Source, object]]:
    """The sources that state ``field_``, with their values, oldest first."""
    ordered = sorted(sources, key=_order)
    if field_ in IDENTITY_FIELDS:
        found = [(s, s.record.get("identity", {}).get(field_)) for s in ordered]
    else:
        found = [(s, s.record.get(field_)) for s in ordered]
    return [(s, v) for s, v in found if _stated(field_, v)]


def provenance_of(source: Source) -> dict:
    return {"org": source.org_code, "source_record_id": source.source_record_id,
            "at": _order(source)[0].isoformat()}


def derive(sources: list[Source], rules: Rules = DEFAULT_RULES, choices: tuple[Choice, ...] = (),
           held_back: frozenset = frozenset()) -> tuple[dict, dict]:
    """The shown record and its provenance (field -> supplier), from a child's source records.
    ``held_back``: (field, organisation, stored source record id, canonical value) of lower values in
    question (gateway.index.conflicts.Held.held_back), never shown by default: only a settlement
    (a Choice) shows one."""
    if not sources:
        raise ValueError("a child has at least one source record")
    ordered = sorted(sources, key=_order)
    identity: dict = {}
    record: dict = {}
    provenance: dict = {}

    def shown(field_: str, key: str):
        found = stating(ordered, field_)
        if not found:
            return None
        source, value, choice = _choose(field_, found, rules, choices, held_back)
        if source is None:
            return None
        provenance[key] = provenance_of(source) if choice is None else {**provenance_of(source),
                                                                        "settled": choice.conflict_id}
        return value

    for field_ in IDENTITY_FIELDS:
        value = shown(field_, f"identity.{field_}")
        identity[field_] = ("unknown" if field_ == "gender" else None) if value is None else value
    previous: list[str] = []
    suppliers: list[dict] = []
    for source in ordered:
        for name in source.record.get("identity", {}).get("previous_names") or ():
            if name not in previous:
                previous.append(name)
                suppliers.append(provenance_of(source))
    # ---- retention: a death any source records is shown (and archives the child) ----
    deaths = [(s, s.record["identity"]["date_of_death"]) for s in ordered
              if s.record.get("identity", {}).get("date_of_death")]
    if deaths:
        source, identity["date_of_death"] = deaths[-1]
        provenance["identity.date_of_death"] = provenance_of(source)
    # ---- end retention ----
    identity["previous_names"] = previous
    if previous:  # one supplier per name, in the same order
        provenance["identity.previous_names"] = suppliers
    record["identity"] = identity
    for field_ in RECORD_FIELDS:
        value = shown(field_, field_)
        record[field_] = ([] if field_ == "carers" else None) if value is None else value
    return record, provenance
