"""Why a record links to a child, goes to review, or is a new child, and why it is rejected. The
rules are here; the comparison of two records is gateway.index.linkage's, writing what is decided
gateway.index.writing's, and applying a batch gateway.index.batches'.

Who is who (gateway.index.linkage): every incoming record is matched on every push.

1. The same organisation's source record id: an update of what it sent before.
2. A valid NHS number or unique pupil number already in the index: the same child, unless the rest
   of the identity disagrees (the match probability without the identifier is below the review
   band, the other identifier differs, or the pair looks like twins): then it is held for review
   like any other uncertain record (and counted as an ``identifier_conflict`` for `audit review`).
3. Otherwise the candidates filed under the record's blocking keys (never a scan) are compared
   field by field (Fellegi–Sunter, gateway/index/linkage) and the best decides: at or above the
   upper threshold, linked (``matched``); below the lower, a new child (``created``); between, a
   new child **and** the pair in the review queue, so that nothing sent is invisible while a
   person decides. A pair that looks like twins is never linked automatically.

A record held for review is answered exactly as one that is not: ``created`` with its new child's
id (``updated`` for a record the organisation sent before), no detail. Any other answer would tell
the sender that the index already holds a child like it (a push-only organisation sending a known
NHS number with other demographics would learn that the number is known). The truth is in the
result's ``held_for_review`` (the audit entry's ``review=N``) and in the queue.

``batch``, where a function takes one: the batch the record is part of (gateway.index.batches'
``_Batch``), which holds the model and the candidates' source records as the batch sees them. This
module does not import batches: batches imports it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, replace
from typing import Callable, TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from stdnum.gb import upn

from gateway.config import Settings
from gateway.db import blocking_keys, children, distinct_pairs, review_queue, source_records
from gateway.index import linkage, retention
from gateway.index.linkage import versions as linkage_versions
from gateway.index.model import ChildUpdate, nhs_number_is_valid, normalise_name
from gateway.index.writing import _Keys, _most_recent_first, _person_of, _sources, _sources_of


COMPARED_PER_RECORD = 50  # children compared with one incoming record or query, most keys shared first
COMPARED_SOURCES_PER_CHILD = 20  # a child's most recent source records an incoming record is compared with


@dataclass(frozen=True)
class LinkPolicy:
    """Thresholds on the match probability; the defaults are the settings' (README "Linkage" for
    how they were chosen)."""

    upper: float = Settings.link_upper  # at or above: linked automatically
    lower: float = Settings.link_lower  # below: a new child; between: a new child and a pair for review
    find_floor: int = Settings.find_floor  # FindChild answers only candidates scoring at least this (0-100)
    # ... and whose match probability, with the prior for the index's size, is at least this: the
    # evidence must single the child out among all the index holds (README "FindChild").
    find_min_probability: float = Settings.find_min_probability


DEFAULT_POLICY = LinkPolicy()
_Child = TypeVar("_Child")  # a child id, or what stands for one (the local check's held record)


def _rejection(update_: ChildUpdate, today: dt.date) -> str | None:
    identity = update_.identity
    if identity.nhs_number and not nhs_number_is_valid(identity.nhs_number):
        return "NHS number fails its check digit"
    if identity.pupil_number and not upn.is_valid(identity.pupil_number):
        return "pupil number fails its check letter"
    if identity.date_of_birth > today:
        return "date of birth is in the future"
    # ---- retention (gateway.index.retention): decided by the record alone, never by the index ----
    if identity.date_of_death is not None and identity.date_of_death > today:
        return "date of death is in the future"
    if identity.date_of_death is not None and identity.date_of_death < identity.date_of_birth:
        return "date of death is before the date of birth"
    if retention.is_adult(identity.date_of_birth, today):
        return retention.NOT_HELD
    # ---- end retention ----
    if not normalise_name(identity.family_name):
        return "family name has no letters"
    if not any(normalise_name(name) for name in identity.given_names):
        return "given name has no letters"
    for involvement in update_.involvements:
        if involvement.end is not None and involvement.end < involvement.start:
            return "an involvement ends before it starts"
    return None


@dataclass(frozen=True)
class _Hits:
    by_identifier: set[str]  # children holding one of the record's valid NHS / pupil numbers
    ranked: list[str]  # every child under any key, most keys shared first, at most COMPARED_PER_RECORD


def _key_hits(conn: Connection, keys: _Keys) -> _Hits:
    """One lookup of every key: who holds the identifiers, and the candidates."""
    if not keys:
        return _Hits(set(), [])
    shared: dict[str, int] = {}
    by_identifier = set()
    for row in conn.execute(select(blocking_keys.c.key, blocking_keys.c.child_id)
                            .join(children, children.c.child_id == blocking_keys.c.child_id)  # retention:
                            .where(blocking_keys.c.key.in_(sorted(keys)), children.c.archived_at.is_(None))):
        shared[row.child_id] = shared.get(row.child_id, 0) + 1
        if row.key in keys.identifiers:
            by_identifier.add(row.child_id)
    ranked = sorted(shared, key=lambda child: (-shared[child], child))[:COMPARED_PER_RECORD]
    return _Hits(by_identifier, ranked)


def _decide(conn: Connection, person: linkage.Person, hits: _Hits, policy: LinkPolicy,
            batch: _Batch | None = None, *, org_code: str | None = None,
            ) -> tuple[str, str | None, linkage.Comparison | None]:
    """("link" | "review" | "create", the candidate, its comparison). A link's comparison may carry
    ``split_from``: another child the record links to as strongly (``_reconcile_split``)."""
    if hits.by_identifier:
        children_ = sorted(hits.by_identifier)
        compared = sorted(((c, child) for child, c in zip(children_, _compare_with(
            conn, person, children_, demographic=True, batch=batch)) if c is not None),
            key=lambda pair: (-pair[0].weight, pair[1]))
        return decide_by_number(compared, policy)

    compared = sorted(((comparison, child) for child, comparison in zip(
        hits.ranked, _compare_with(conn, person, hits.ranked, batch=batch))
        if comparison is not None and not numbers_differ(comparison)),
        key=lambda pair: (pair[0].weight, pair[1]), reverse=True)
    if not compared:
        return "create", None, None
    comparison, child = compared[0]
    decision, _why = decide_on_best(comparison, policy, lambda: (
        _held_under_another_first_name(conn, batch, child, org_code, person) if org_code is not None else None))
    if decision == "create":
        return "create", None, None
    if decision == "review":
        return "review", child, comparison
    for other, other_child in compared[1:]:
        if not _linkable(other, policy):
            break
        if not _one_organisation_holds_both(conn, batch, child, other_child):
            return "link", child, replace(comparison, split_from=(other_child, other))
    return "link", child, comparison


# ---- the rules for one record and its candidates: `_decide`'s, and the local check's -------------
# (gateway.index.within_extract.classify judges the pairs inside one extract by these same functions)

def numbers_differ(comparison: linkage.Comparison) -> bool:
    """Two valid, different NHS or pupil numbers: two children, never compared further."""
    return comparison.identifiers == "disagree"


def decide_by_number(compared: list[tuple[linkage.Comparison, _Child]], policy: LinkPolicy,
                     ) -> tuple[str, _Child | None, linkage.Comparison | None]:
    """Rule 2: ("link" | "review" | "create", the child, its comparison) for a record whose valid NHS
    or pupil number ``compared``'s children hold, each with its `demographic_comparison`, the
    strongest first."""
    if not compared:
        return "create", None, None
    agreeing = [(c, child) for c, child in compared if _agrees_beside_the_number(c, policy)]
    if len(agreeing) == 1:
        # One holder of the number is this child by the rest too; any other holder disagrees, and
        # was paired with one of them for review when it came. Linked as it would be had the
        # others not held the number: else a second record with a number another child holds
        # would be answered unlike the second of a number no one held, telling the sender so.
        comparison, child = agreeing[0]
        return "link", child, comparison
    comparison, child = compared[0]
    return "review", child, comparison  # one number, two children alike, or a number the rest denies


def _agrees_beside_the_number(comparison: linkage.Comparison, policy: LinkPolicy) -> bool:
    """A holder of the record's number that is this child by the rest of the identity too."""
    return (not numbers_differ(comparison) and not comparison.twins
            and comparison.probability >= policy.lower and not _looks_like_a_sibling(comparison))


def decide_on_best(comparison: linkage.Comparison, policy: LinkPolicy,
                   held_as: Callable[[], str | None]) -> tuple[str, str]:
    """Rule 3: ("link" | "review" | "create", why) for the best candidate by ``comparison``.
    ``held_as`` is asked only of a pair the model would link: what the sending organisation's own
    records of the candidate say (`own_record_says`: "another name", "a slip of the name on the
    same birth date", or None). A "link" is the caller's to split (``_reconcile_split``)."""
    if numbers_differ(comparison):
        return "create", "two valid, different NHS or pupil numbers"
    if _linkable(comparison, policy):
        held = held_as()
        if held == "another name":
            # The sending organisation already holds this child under another record with another first
            # name: it says they are two children (twins named alike), which the demographics cannot tell.
            return "create", "another first name the organisation holds: twins named so"
        if held is not None:
            return "review", "a slip of the first name on the same birth date: twins, or one child"
        return "link", "the same child by the linkage model"
    if _only_the_given_name_differs(comparison):
        # Twins look exactly like this, and so does a record whose first name was entered as another
        # name: never linked automatically, and a question for a person. Even when the sending
        # organisation already holds the other as a record of its own: organisations hold duplicates
        # (FEBRL's within-organisation duplicates with a replaced first name), and twins are asked
        # about once (an officer's "distinct" stands; the other organisations' records of each twin
        # then join their own child). Positive evidence of two children (different NHS or pupil
        # numbers, stated and different genders) keeps the pair out of the queue.
        return "review", "only the given names differ: twins, or one child under two first names"
    if comparison.probability >= policy.lower and not comparison.twins and not _looks_like_a_sibling(comparison):
        return "review", "the linkage model is unsure"
    return "create", "two children by the linkage model"


def own_record_says(incoming: linkage.Person, own: linkage.Person,
                    comparison: linkage.Comparison | None = None) -> str | None:
    """What a record of the sending organisation's own on a candidate (``own``) says of the incoming
    record (``comparison``: the two compared, else compared here; its levels are the same whatever
    the model): "another name" when its first given name is another name than the incoming one's (a
    nickname, a part of it, a name agreeing only as a middle name), "a slip of the name on the same
    birth date" between two names with the same family name and address, None otherwise (the same
    first name, a slip that makes no name, a slip with the birth date slipped too, or given and
    family names swapped: the organisation's own duplicate)."""
    if own.given_names[:1] == incoming.given_names[:1]:
        return None
    if comparison is None:
        comparison = linkage.compare(incoming, own)
    if comparison.swapped_names and comparison.levels.get("given") in ("exact", "typo"):
        return None  # its own duplicate with given and family swapped (crosswise a nickname is another name)
    levels = comparison.levels
    if levels.get("given") != "typo":
        return "another name"
    if comparison.given_misspelt:
        return None  # a slip that makes no name (Charlolte): its own misspelt duplicate
    if (levels.get("dob") == "exact" and levels.get("family") == "exact"
            and levels.get("location") in ("postcode_and_line", "missing")):
        return "a slip of the name on the same birth date"  # twins named alike (Matei, Mateo)
    return None


def _linkable(comparison: linkage.Comparison, policy: LinkPolicy) -> bool:
    return (comparison.probability >= policy.upper and not comparison.twins and not _given_names_differ(comparison)
            and not _opposite_sex_twins_named_alike(comparison) and not _twins_named_alike(comparison))


def _twins_named_alike(comparison: linkage.Comparison) -> bool:
    """Given names a slip apart that are both names (Mia and Mila, Mateo and Matei, Aria and Arya),
    or both on no list, the same birth date and family name: twins named alike look exactly like
    one child whose name was misspelt. Not linked automatically: held for review. A slip that
    makes no name (Charlotte and Charlolte: ``Comparison.given_misspelt``) is a misspelling. Whether
    a name is a name is read from the fixed, sourced list of gateway/index/linkage/names.py (the
    SSA's 96,174 names, the nicknames, a UK supplement), never from the name-frequency table (it is
    retrained, and lists only names seen often enough in one index: an uncommon or minority-culture
    name would be taken for a misspelling and its twin merged); a shared NHS or pupil number still
    links a misspelling of two names."""
    levels = comparison.levels
    return (levels.get("given") == "typo" and not comparison.given_misspelt and levels.get("dob") == "exact"
            and levels.get("family") in ("exact", "part", "typo"))


def _opposite_sex_twins_named_alike(comparison: linkage.Comparison) -> bool:
    """Given names a slip or nickname apart, genders stated and different, the same family name and
    birth date: Ishaan and Ishani more often than one child with two slips."""
    levels = comparison.levels
    return (levels.get("given") in ("typo", "nickname", "initial") and levels.get("gender") == "disagree"
            and levels.get("dob") == "exact" and levels.get("family") in ("exact", "part", "typo"))


#: The levels at which a field is "the same" for the twin rule (``_only_the_given_name_differs``).
_SAME_PLACE = frozenset(("postcode_and_line", "postcode", "line", "missing"))


def _only_the_given_name_differs(comparison: linkage.Comparison) -> bool:
    """Family name, birth date and address agree (or are missing), gender does not disagree, no
    identifiers disagree, and the given names are not the same name by any measure: twins, or one
    child with a first name recorded as another name."""
    levels = comparison.levels
    return (_given_names_differ(comparison) and levels.get("family") in ("exact", "part", "typo")
            and levels.get("dob") == "exact" and levels.get("location") in _SAME_PLACE
            and levels.get("gender") != "disagree" and comparison.identifiers != "disagree")


def _held_under_another_first_name(conn: Connection, batch: _Batch | None, child_id: str, org_code: str,
                                   person: linkage.Person) -> str | None:
    """Whether ``org_code`` holds a record of its own on the child whose first given name is another
    name than the incoming one's: "another name" (a nickname, a part of it, a name agreeing only as
    a middle name: how twins are often named, Harrison and Harry, Ivy and Ivy-Rose), or "a slip of
    the name on the same birth date" with the same family name and address between two names
    (twins named alike, Matei and Mateo: a question for a person); None otherwise (a slip that
    makes no name, Charlolte; a slip of the name with the birth date slipped too; given and family
    names swapped: the organisation's own duplicate). Whether a name is a name is read from the
    fixed list of gateway/index/linkage/names.py, never from the retrainable frequency table."""
    sources = batch.sources_of([child_id])[child_id] if batch is not None else _sources(conn, child_id)
    found = None
    for source in sources:
        if source.org_code != org_code:
            continue
        says = own_record_says(person, _person_of(source))
        if says == "another name":
            return says
        found = says or found
    return found


def _one_organisation_holds_both(conn: Connection, batch: _Batch | None, a: str, b: str) -> bool:
    """Positive evidence of two children: one organisation holds each as a record of its own."""
    found = batch.sources_of([a, b]) if batch is not None else _sources_of(conn, [a, b])
    return not {s.org_code for s in found.get(a, ())}.isdisjoint(s.org_code for s in found.get(b, ()))


def _reconcile_split(conn: Connection, org_code: str, stored_id: str, child_id: str,
                     comparison: linkage.Comparison, now: dt.datetime) -> None:
    """A record that links as strongly to a second child as to the one it joined says the two are
    one child split in two: the pair goes to the review queue as a merge candidate (``review
    link`` merges the other child into the one the record joined, every involvement with it)."""
    if comparison.split_from is None:
        return
    other, other_comparison = comparison.split_from
    _queue_for_review(conn, org_code, stored_id, other, child_id, other_comparison, now)


def _given_names_differ(comparison: linkage.Comparison) -> bool:
    """Given names that are not the same name by any measure (spelling, nickname, initial, order):
    siblings share everything else a record holds but their given names and birth dates, so such
    a pair is never linked automatically, however well the rest agrees; with birth dates that
    disagree too it is two children (siblings), not a question for a person."""
    return comparison.levels.get("given") == "disagree" or comparison.given_through_middle


#: Birth-date levels a sibling's date falls in (another date; the same year or the same birthday
#: happen between brothers and sisters), unlike the slips of one date (swap, transposition, digit).
_ANOTHER_DATE = frozenset(("year_off_by_one", "day_month", "year_only", "disagree"))


def _looks_like_a_sibling(comparison: linkage.Comparison) -> bool:
    """Neither the given names nor the birth date agree by any measure: another child of the
    household, whatever else (family name, address, carers) is shared."""
    return _given_names_differ(comparison) and comparison.levels.get("dob") in _ANOTHER_DATE


_MODEL_FOR_SIZE: dict = {"model": None, "base": None, "until": 0.0}
MODEL_REFRESH_S = 600.0  # how often a process re-counts the index to rescale the prior


def _model_due(at: float) -> bool:
    return _MODEL_FOR_SIZE["model"] is None or at >= _MODEL_FOR_SIZE["until"]


def scoring_model(conn: Connection, at: float | None = None) -> linkage.Model:
    """The model in use (``linkage.versions``: the one two officers approved, checked against its
    SHA-256, else the shipped one; ModelUnavailable when it cannot be loaded: nothing is linked)
    with its prior for this index's size: the chance that a held record is the incoming child
    falls as the index grows. Never rescaled below the size the model was trained at, so a small
    index is not made link-happy. Counted once per MODEL_REFRESH_S per process, and when the model
    in use changes (``at``: the time.monotonic() to judge that by)."""
    now = time.monotonic() if at is None else at
    base = linkage_versions.IN_USE.model(conn, now)
    if _model_due(now) or _MODEL_FOR_SIZE["base"] is not base:
        reference = int(base.raw.get("prior_reference_records") or 0)
        held = conn.execute(select(func.count()).select_from(source_records)).scalar_one()
        _MODEL_FOR_SIZE.update(model=base.for_index_size(max(held, reference)) if reference else base,
                               base=base, until=now + MODEL_REFRESH_S)
    return _MODEL_FOR_SIZE["model"]


def _compare_with(conn: Connection, person: linkage.Person, child_ids: list[str],
                  demographic: bool = False, batch: _Batch | None = None) -> list[linkage.Comparison | None]:
    """The incoming record compared with each child: with each of the child's source records, the
    strongest agreement standing (each source may know the child by another spelling or address),
    but looking like a twin of any one of them, or holding another NHS or pupil number than any one
    of them, counts against the child (so that a child holding one wrongly linked record does not
    draw in that record's siblings). ``demographic``: see ``demographic_comparison``. ``batch``:
    the model and the children's sources as the batch holds them."""
    if batch is not None:
        model, held_people = batch.model, batch.recent_people(child_ids)
    else:
        model, sources = scoring_model(conn), _sources_of(conn, child_ids)
        held_people = {child_id: _recent_people(sources.get(child_id, ())) for child_id in child_ids}
    results = []
    for child_id in child_ids:
        best, best_held, twins_of, disagree, two_names = None, None, [], False, False
        for held in held_people[child_id]:
            comparison = (demographic_comparison(person, held, model) if demographic
                          else linkage.compare(person, held, model))
            if comparison.twins:
                twins_of.append(held)
            disagree |= comparison.identifiers == "disagree"
            two_names |= comparison.levels.get("given") == "typo" and not comparison.given_misspelt
            if best is None or comparison.weight > best.weight:
                best, best_held = comparison, held
        twins = bool(twins_of) and not _slips_of_one_name(person, best, best_held, twins_of, model)
        if best is not None and (twins or disagree):
            best = replace(best, twins=twins, identifiers="disagree" if disagree else best.identifiers)
        if best is not None and best.given_misspelt and (two_names or twins_of):
            # A misspelling of one of the child's records, but a name of its own against another of
            # them (Mia against the child's Mila and its misspelt Mla), or taken off the twin guard
            # only because the child's records are slips of one name (Ellie against Millie and a
            # misspelt Mllie): which child is meant is a question, not a link.
            best = replace(best, given_misspelt=False)
        results.append(best)
    return results


def _slips_of_one_name(person: linkage.Person, best: linkage.Comparison | None, best_held: linkage.Person | None,
                       twins_of: list[linkage.Person], model: linkage.Model) -> bool:
    """The record looks like a twin of some of the child's records only because their names are
    each a slip of one name: the record agrees with the child's best-matching record by a slip,
    and that record agrees with every "twin" by its own slip (Imgoen against Imogen and a misspelt
    Imogenn: two slips apart, one name). Not by a nickname or initial: LA's Alexander and the GP's
    Alex are one child, the school's Alexandre stays his twin. The pair then goes to review
    (``_compare_with`` takes its ``given_misspelt`` away, and ``_twins_named_alike`` holds a slip on
    the same birth date), so a record with a name of its own (Ava against Ivy and a misspelt Iva)
    is asked about, not merged."""
    if best is None or best.twins or best.levels.get("given") != "typo" or not person.given_names:
        return False
    return all(linkage.compare(best_held, other, model).levels.get("given") == "typo" for other in twins_of)


def _recent_people(sources) -> list[linkage.Person]:
    """The comparable form of a child's most recent sources, most recent first."""
    return [_person_of(s) for s in sorted(sources, key=_most_recent_first)[:COMPARED_SOURCES_PER_CHILD]]


def demographic_comparison(incoming: linkage.Person, held: linkage.Person, model: linkage.Model) -> linkage.Comparison:
    """The pair compared on everything but their identifiers (how a record that meets a known NHS or
    pupil number is judged), with ``identifiers`` saying whether the numbers agree."""
    comparison = linkage.compare(replace(incoming, nhs_number=None, pupil_number=None), held, model)
    return replace(comparison, identifiers=_identifier_verdict(incoming, held))


def _identifier_verdict(incoming: linkage.Person, held: linkage.Person) -> str | None:
    pairs = [(incoming.nhs_number, held.nhs_number), (incoming.pupil_number, held.pupil_number)]
    stated = [(a, b) for a, b in pairs if a and b]
    if not stated:
        return None
    return "agree" if all(a == b for a, b in stated) else "disagree"


def is_distinct(conn: Connection, a: str, b: str) -> bool:
    low, high = sorted((a, b))
    return conn.execute(select(distinct_pairs.c.child_a).where(
        distinct_pairs.c.child_a == low, distinct_pairs.c.child_b == high)).first() is not None


def _queue_for_review(conn: Connection, org_code: str, srid: str, child_id: str, candidate: str,
                      comparison: linkage.Comparison, now: dt.datetime) -> bool:
    """Pair ``child_id`` (where the record was stored) with ``candidate`` for a person to decide;
    False when a person already said they are different children."""
    if child_id == candidate or is_distinct(conn, child_id, candidate):
        return False
    already = conn.execute(select(review_queue.c.id).where(
        review_queue.c.status == "open", review_queue.c.child_id == child_id,
        review_queue.c.candidate_child_id == candidate)).first() or conn.execute(select(review_queue.c.id).where(
        review_queue.c.status == "open", review_queue.c.child_id == candidate,
        review_queue.c.candidate_child_id == child_id)).first()
    if already is None:
        conn.execute(review_queue.insert().values(
            org_code=org_code, source_record_id=srid, child_id=child_id, candidate_child_id=candidate,
            score=comparison.probability, comparison=json.dumps(comparison_json(comparison), sort_keys=True),
            model_version=scoring_model(conn).version, status="open", created_at=now))
    return True


def comparison_json(comparison: linkage.Comparison) -> dict:
    return {"levels": dict(comparison.levels), "weights": {k: round(v, 3) for k, v in comparison.weights.items()},
            "weight": round(comparison.weight, 3), "probability": comparison.probability,
            "twins": comparison.twins, "identifiers": comparison.identifiers}
