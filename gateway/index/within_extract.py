"""Likely duplicates inside one extract, judged by the index's own linkage: `contactgate mapping
check MAPPING --sample EXTRACT` and `push --dry-run` (connectors.check) before anything is sent.

In process, on the extract's mapped records (the SubmitUpdates ``ChildUpdate`` shape the mapping
makes), with no database and no gateway: each record is made a `linkage.Person` as a pushed record
is, filed under the same blocking keys, compared with the records before it that share the most keys
(at most ``deciding.COMPARED_PER_RECORD``, as a pushed record is with the index's children) by
`linkage.compare` with the model, and classed by the functions `deciding._decide` applies to one
candidate (`deciding.decide_by_number`, `decide_on_best`, `own_record_says`): ``link`` (the gateway
would answer ``matched``: one child) or ``review`` (a new child and the pair in the review queue),
with the engine's reason. Pairs it would create as two children are not reported. As in the index,
all rows of one extract are one organisation's records: a pair the model would link whose first
given names are another name (a nickname, a part of it) is two children (twins named alike), and a
slip of the name on the same birth date is a question for review.

The model is the shipped one (`linkage.default_model`, its version said in the output) with the
prior it was trained with: the model two officers approved for a gateway lives in that gateway's
database, and its prior is rescaled to the index's size there; the thresholds are the settings'
defaults (`deciding.DEFAULT_POLICY`). So the classes are what the engine says of the pair alone:
the index may hold a third record that changes the answer.

Found by the client through the entry point ``contactgate.linkage`` (``pyproject.toml``): the
connectors may not import the gateway, and a client installed without it (``contactgate-client``)
falls back to its simple scorer, saying so.

Memory and time are bounded: at most ``MAX_ROWS`` records are judged, and at most
``MAX_COMPARISONS`` comparisons made in all (an extract of one name, postcode and number would
otherwise compare every row with 50: 50,000 rows, minutes); the rows after either bound are counted,
not judged (the report says among how many rows pairs were looked for). A
blocking key remembers at most ``MAX_ROWS_PER_KEY`` records, and each record is compared with at
most ``COMPARED_PER_RECORD`` before it, of which at most ``MAX_SHARING_COMPARED`` holding its number
(a placeholder number on every row stays linear). Pairs sharing a valid NHS or pupil number are always
``link`` or ``review`` (rule 2 of `deciding`): those beyond the bounds are counted, not listed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from gateway.index import linkage
from gateway.index.deciding import (
    COMPARED_PER_RECORD, DEFAULT_POLICY, LinkPolicy, decide_by_number, decide_on_best, demographic_comparison,
    own_record_says,
)
from gateway.index.linkage.person import first_address_line, make_person

MAX_ROWS = 50_000  # records judged (a Person and its keys: about 2 KB each)
MAX_COMPARISONS = 250_000  # in all (linkage.compare: about 0.1 ms each on a quiet core)
MAX_ROWS_PER_KEY = 200  # records remembered under one blocking key
MAX_SHARING_COMPARED = 10  # records holding the same number a record is compared with (the rest counted)
MAX_LISTED = 100


def person_of(record: dict) -> linkage.Person | None:
    """A mapped record (the ``ChildUpdate`` dict shape) as the index compares it, or None when it
    has no usable date of birth (the gateway rejects it)."""
    identity = record.get("Identity") or {}
    address = record.get("Address") or {}
    try:
        born = dt.date.fromisoformat(str(identity.get("DateOfBirth") or ""))
    except ValueError:
        return None
    given = identity.get("GivenName") or []
    previous = identity.get("PreviousName") or []
    return make_person(
        family_names=(identity.get("FamilyName"), *([previous] if isinstance(previous, str) else previous)),
        given_names=tuple([given] if isinstance(given, str) else given),
        preferred_name=identity.get("PreferredName"), date_of_birth=born, gender=identity.get("Gender"),
        postcode=address.get("Postcode"),
        address_line=first_address_line([address.get(f"Line{n}") for n in range(1, 6) if address.get(f"Line{n}")]),
        nhs_number=identity.get("NhsNumber"), pupil_number=identity.get("PupilNumber"))


def _shared_number(a: linkage.Person, b: linkage.Person) -> str | None:
    if a.nhs_number and a.nhs_number == b.nhs_number:
        return a.nhs_number
    if a.pupil_number and a.pupil_number == b.pupil_number:
        return a.pupil_number
    return None


def classify(incoming: linkage.Person, held: linkage.Person, model: linkage.Model,
             policy: LinkPolicy = DEFAULT_POLICY) -> tuple[str, linkage.Comparison, str] | None:
    """("link" | "review", the comparison, why) as the index would decide ``incoming`` against a
    child known only by ``held``, both sent by one organisation; None for two children. Decided by
    the functions `deciding._decide` decides by (`decide_by_number`, `decide_on_best`,
    `own_record_says`), so that the two cannot part."""
    if _shared_number(incoming, held):
        comparison = demographic_comparison(incoming, held, model)
        decision, _held, _comparison = decide_by_number([(comparison, held)], policy)
        return (("link", comparison, "the same NHS or pupil number, the rest agreeing") if decision == "link" else
                ("review", comparison, "the same NHS or pupil number, the rest of the identity disagreeing"))
    comparison = linkage.compare(incoming, held, model)
    # one organisation's extract: ``held`` is the organisation's own record of the candidate
    decision, why = decide_on_best(comparison, policy, lambda: own_record_says(incoming, held, comparison))
    return None if decision == "create" else (decision, comparison, why)


class ExtractLinkage:
    """Feed each mapped record with `add`, in the extract's order; `result` says what was found."""

    def __init__(self, model: linkage.Model | None = None, policy: LinkPolicy = DEFAULT_POLICY):
        self.model = model or linkage.default_model()
        self.policy = policy
        self.people: list[tuple[int, str, linkage.Person]] = []  # line, source id, person
        self.by_key: dict[str, list[int]] = {}
        self.pairs: list[dict] = []
        self.decisions: Counter = Counter()
        self.numbers: Counter = Counter()  # valid NHS / pupil number -> records judged holding it
        self.judged_sharing: Counter = Counter()  # number -> pairs sharing it compared
        self.rows_seen = 0
        self.compared = 0

    @property
    def engine(self) -> str:
        return (f"the gateway's linkage engine (blocking, Fellegi-Sunter model {self.model.version}, the index's "
                f"rules for link and review; auto-link at {self.policy.upper}, review from {self.policy.lower})")

    def add(self, line: int, source_record_id: str, record: dict) -> None:
        self.rows_seen += 1
        if len(self.people) >= MAX_ROWS or self.compared >= MAX_COMPARISONS:
            return
        person = person_of(record)
        if person is None:
            return
        keys = linkage.blocking_keys(person)
        shared: Counter = Counter()
        for key in keys:
            for index in self.by_key.get(key, ()):
                shared[index] += 1
        numbers = {n for n in (person.nhs_number, person.pupil_number) if n}
        # holders of the same number first (the index's rule 2), then most keys shared
        sharing = sorted(i for i in shared if _shared_number(person, self.people[i][2]))[:MAX_SHARING_COMPARED]
        others = sorted((i for i in shared if not _shared_number(person, self.people[i][2])),
                        key=lambda i: (-shared[i], i))
        for index in [*sharing, *others][:min(COMPARED_PER_RECORD, MAX_COMPARISONS - self.compared)]:
            self.compared += 1
            held_line, held_srid, held = self.people[index]
            number = _shared_number(person, held)
            if number:
                self.judged_sharing[number] += 1
            found = classify(person, held, self.model, self.policy)
            if found is None:
                continue
            decision, comparison, why = found
            self.decisions[decision] += 1
            if len(self.pairs) < MAX_LISTED:
                self.pairs.append({"lines": [held_line, line], "source_record_ids": [held_srid, source_record_id],
                                   "decision": decision, "score": round(comparison.probability, 3), "why": why,
                                   "levels": dict(comparison.levels)})
        for number in numbers:
            self.numbers[number] += 1
        index = len(self.people)
        self.people.append((line, source_record_id, person))
        for key in keys:
            held = self.by_key.setdefault(key, [])
            if len(held) < MAX_ROWS_PER_KEY:
                held.append(index)

    def result(self) -> dict:
        """``pairs`` (at most MAX_LISTED, each with lines, source ids, decision, score: the match
        probability, why, the field levels), ``count`` (every pair found, and the pairs sharing a
        number beyond the bounds), ``decisions`` (link / review), ``rows_judged``, ``engine``."""
        beyond = sum(n * (n - 1) // 2 - self.judged_sharing[number] for number, n in self.numbers.items())
        return {"pairs": list(self.pairs), "count": sum(self.decisions.values()) + beyond,
                "decisions": dict(self.decisions), "sharing_a_number_not_compared": beyond,
                "rows_judged": len(self.people), "engine": self.engine, "model_version": self.model.version}
