"""What the index shows for a child when its sources disagree, and who supplied each shown value.

Every source record keeps its own values (``source_records.record``); nothing one organisation
sends overwrites what another supplied. What GetContacts shows is derived from them, field by field:

- the GP practice and the NHS number as a **health** organisation reports them;
- the educational setting and the unique pupil number as an **education** organisation reports them;
- every other field (names, birth date, gender, address, carers) as the **most recent** source
  states it;

and, for each of those, the most recent of the preferred kind, else the most recent of any kind.
"Most recent" is the time the gateway received the source's latest record; ties go to the later
(organisation code, source record id), so that the result is a pure function of the sources.
A value the source left out does not count as stating it, nor does gender ``unknown``. Previous
names are the union of every source's, in the order first reported, each with its first reporter.

The provenance of each shown value is ``{"org", "source_record_id", "at"}``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass, field

IDENTITY_FIELDS = ("family_name", "given_names", "preferred_name", "date_of_birth", "gender",
                   "nhs_number", "pupil_number")
RECORD_FIELDS = ("address", "carers", "educational_setting", "gp_practice")

# Field -> the kind of organisation whose report is preferred (gateway.trust.registry.KINDS).
PREFERRED_KIND = {
    "gp_practice": "health",
    "nhs_number": "health",
    "educational_setting": "education",
    "pupil_number": "education",
}


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


def _choose(field: str, stating: list[tuple[Source, object]]):
    preferred = PREFERRED_KIND.get(field)
    if preferred:
        of_kind = [(s, v) for s, v in stating if s.kind == preferred]
        stating = of_kind or stating
    return max(stating, key=lambda pair: _order(pair[0]))


def provenance_of(source: Source) -> dict:
    return {"org": source.org_code, "source_record_id": source.source_record_id,
            "at": _order(source)[0].isoformat()}


def derive(sources: list[Source]) -> tuple[dict, dict]:
    """The shown record and its provenance (field -> supplier), from a child's source records."""
    if not sources:
        raise ValueError("a child has at least one source record")
    ordered = sorted(sources, key=_order)
    identity: dict = {}
    record: dict = {}
    provenance: dict = {}
    for field in IDENTITY_FIELDS:
        stating = [(s, s.record.get("identity", {}).get(field)) for s in ordered]
        stating = [(s, v) for s, v in stating if _stated(field, v)]
        if stating:
            source, value = _choose(field, stating)
            identity[field] = value
            provenance[f"identity.{field}"] = provenance_of(source)
        else:
            identity[field] = "unknown" if field == "gender" else None
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
    for field in RECORD_FIELDS:
        stating = [(s, s.record.get(field)) for s in ordered if _stated(field, s.record.get(field))]
        if stating:
            source, value = _choose(field, stating)
            record[field] = value
            provenance[field] = provenance_of(source)
        else:
            record[field] = [] if field == "carers" else None
    return record, provenance
