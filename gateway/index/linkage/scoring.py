"""Field comparisons and Fellegi–Sunter match weights.

Each field of a pair falls into one agreement level (checked best first, the first that holds
wins); a level contributes ``log2(m/u)`` bits, where ``m = P(level | same child)`` and
``u = P(level | different children)`` come from the versioned ``model.json`` (estimated by
``train.py``). A field missing on either side is "missing" and contributes 0 bits (neutral), as
does an ``unknown`` gender. The total weight adds ``log2`` of the prior odds that a blocked pair
is a match; the probability is ``2**w / (1 + 2**w)``.

Conditional independence is assumed between fields (the Fellegi–Sunter model); the levels are
chosen so that the strongest dependence (a nickname is also a typo, a swapped date is also one
character off) is absorbed by taking only the best level per field.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from importlib import resources

from rapidfuzz import fuzz
from rapidfuzz.distance import JaroWinkler, OSA

from gateway.index.linkage.names import is_a_name, other_names_a_slip_from, plain_letters
from gateway.index.linkage.person import Person, are_nicknames, person_from_query
from gateway.index.model import FindQuery

#: Agreement levels per field, best first. "missing" (either side absent) is implicit and neutral.
FIELDS: dict[str, tuple[str, ...]] = {
    "given": ("exact", "nickname", "typo", "initial", "disagree"),
    "family": ("exact", "part", "typo", "disagree"),
    # Graded birth dates (issue 23): a day/month swap, two adjacent digits transposed (2014-01-09 /
    # 2014-10-09), one digit wrong, the year one off, only the day and month agreeing (the year
    # replaced), only the year agreeing (the day and month replaced), nothing.
    "dob": ("exact", "swap_day_month", "transposed_digits", "one_digit", "year_off_by_one", "day_month",
            "year_only", "disagree"),
    "gender": ("agree", "disagree"),
    # Postcode and address line as one field: they are strongly dependent (the same line almost
    # always means the same postcode), and counting both would add the same evidence twice.
    "location": ("postcode_and_line", "postcode", "line", "sector", "district", "disagree"),
    "identifier": ("agree", "disagree"),
}
FIELD_NAMES: tuple[str, ...] = tuple(FIELDS)
LOCATION = FIELD_NAMES.index("location")
MISSING = -1

#: Jaro–Winkler similarity at or above which two names are a typo of each other. 0.92 is the
#: usual cut in record-linkage practice (splink's default name comparisons use 0.92 and 0.88;
#: Winkler's census work found ~0.9 to separate typos from different names).
NAME_TYPO_SIMILARITY = 0.92
#: rapidfuzz token_set_ratio (0-100) at or above which two address lines agree fuzzily.
ADDRESS_FUZZY_RATIO = 90.0
#: The same, when both lines carry the same house number: a slip in the street's name ("14 Larhc
#: Grove") is then the same address.
ADDRESS_FUZZY_RATIO_SAME_NUMBER = 80.0
#: Term-frequency adjustment (issue 23): an exact agreement on a name weighs log2(m / f), f the
#: name's share of records in ``model.json``'s ``term_frequencies`` (a common name counts for less
#: than a rare one), kept within this many bits of the field's average exact weight (the shipped
#: table approximates national shares; it is not a national count); a name not in the table weighs
#: the average (the table lists only names seen often enough to count).
TF_MAX_ADJUSTMENT_BITS = 2.0
#: Location levels that mean "the same address": there the alternative to "the same child" is
#: mostly a brother or sister, so the personal fields are weighed against the household's
#: u-probabilities (siblings share a family name and an address, not a birth date or a given
#: name) instead of a random pair's. Without this the address and family-name agreement of
#: siblings is counted as if independent and outweighs their different names and birth dates.
SAME_ADDRESS = frozenset((0,))  # postcode_and_line: a line alone ("12 High Street") recurs in every town
HOUSEHOLD_FIELDS = ("given", "family", "dob", "gender")
#: Twin/sibling guard: the family levels that count as "the same family name".
_SAME_FAMILY = frozenset(("exact", "part", "typo"))


# --- comparators ---------------------------------------------------------------------------------

def _given_level(incoming: Person, held: Person) -> int:
    """Best level over the first/preferred names of both sides; a middle name counts only when it
    is exactly the other side's first or preferred name (a child known by a middle name), never
    as a nickname or typo of it (twins are often named after each other: Amelia and "Olivia
    Millie"), and a middle name alone never makes two children agree (twins often share one)."""
    if not incoming.given_all or not held.given_all:
        return MISSING
    level = _name_pairs_level([(a, b) for a in incoming.given_first for b in held.given_first])
    if level == 0:
        return 0
    if not set(incoming.given_first).isdisjoint(held.given_all) or not set(incoming.given_all).isdisjoint(held.given_first):
        return 0
    return level


def given_only_through_a_middle_name(incoming: Person, held: Person) -> bool:
    """The given names agree only because one side's first name is the other's middle name: as
    likely twins named after each other as one child known by a middle name."""
    return set(incoming.given_first).isdisjoint(held.given_first) and (
        not set(incoming.given_first).isdisjoint(held.given_all) or not set(incoming.given_all).isdisjoint(held.given_first))


def _name_pairs_level(pairs) -> int:
    best = 4  # disagree
    for a, b in pairs:
        if a == b:
            return 0
        if best > 1 and are_nicknames(a, b):
            best = 1
        elif best > 2 and _is_typo(a, b):
            best = 2
        elif best > 3 and (len(a) == 1 or len(b) == 1) and a[0] == b[0]:
            best = 3
    return best


def _is_typo(a: str, b: str) -> bool:
    """One slip apart: Jaro–Winkler at or above the cut, or (for names of 3+ letters, where one
    wrong letter moves Jaro–Winkler a long way: "George"/"Gekrge" is 0.89) a single
    substitution, insertion, deletion or adjacent transposition (optimal string alignment)."""
    if min(len(a), len(b)) < 3:
        return False
    return JaroWinkler.similarity(a, b) >= NAME_TYPO_SIMILARITY or OSA.distance(a, b, score_cutoff=1) <= 1


def _family_level(incoming_names, incoming_parts, held_names, held_parts) -> int:
    if not incoming_names or not held_names:
        return MISSING
    if not set(incoming_names).isdisjoint(held_names):
        return 0
    a_parts = incoming_parts or frozenset(incoming_names)
    b_parts = held_parts or frozenset(held_names)
    if (incoming_parts or held_parts) and not a_parts.isdisjoint(b_parts):
        return 1
    for a in incoming_names:
        for b in held_names:
            if _is_typo(a, b):
                return 2
    return 3


def _dob_level(a, b) -> int:
    if a is None or b is None:
        return MISSING
    if a == b:
        return 0
    if a.year == b.year and a.day == b.month and a.month == b.day:
        return 1
    x, y = f"{a.year:04d}{a.month:02d}{a.day:02d}", f"{b.year:04d}{b.month:02d}{b.day:02d}"
    if a.month == b.month and a.day == b.day and abs(a.year - b.year) == 1:
        return 4  # the year one off (2015 / 2016 is also one digit: the year's own error first)
    differ = [i for i in range(8) if x[i] != y[i]]
    if len(differ) == 2 and differ[1] == differ[0] + 1 and x[differ[0]] == y[differ[1]] \
            and x[differ[1]] == y[differ[0]]:
        return 2  # two adjacent digits transposed
    if len(differ) == 1:
        return 3  # one digit wrong
    if a.month == b.month and a.day == b.day:
        return 5
    if a.year == b.year:
        return 6
    return 7


def _gender_level(a, b) -> int:
    if a in (None, "unknown") or b in (None, "unknown"):
        return MISSING
    return 0 if a == b else 1


def _location_level(incoming: Person, held: Person) -> int:
    """postcode_and_line: same postcode and same (or token-alike) first line; postcode: same
    postcode, line differs or absent; line: same line, postcode differs or absent (a postcode
    typo); sector / district: postcode shares the outward code and the inward digit / only the
    outward code; disagree."""
    a, b = incoming.postcode, held.postcode
    line = _line_agrees(incoming, held)
    if a and b and a == b:
        return 0 if line else 1
    if line:
        return 2
    if a and b:
        if len(a) >= 5 and len(b) >= 5 and a[:-3] == b[:-3]:
            return 3 if a[-3] == b[-3] else 4
        return 5
    if line is False:
        return 5
    return MISSING


def _line_agrees(incoming: Person, held: Person) -> bool | None:
    """True (exact or token-alike), False (differs), None (absent on either side)."""
    a, b = incoming.address_line, held.address_line
    if not a or not b or not _has_a_word(a) or not _has_a_word(b):
        return None  # a line without a street or house name ("1") says nothing on its own
    if a == b:
        return True
    if incoming.address_numbers and held.address_numbers:
        if incoming.address_numbers != held.address_numbers:
            return False  # another house number is another address, however alike the street
        return fuzz.token_set_ratio(a, b) >= ADDRESS_FUZZY_RATIO_SAME_NUMBER
    return fuzz.token_set_ratio(a, b) >= ADDRESS_FUZZY_RATIO


def _has_a_word(line: str) -> bool:
    return any(sum(c.isalpha() for c in token) >= 2 for token in line.split())


def _identifier_level(a: Person, b: Person) -> int:
    seen = False
    for x, y in ((a.nhs_number, b.nhs_number), (a.pupil_number, b.pupil_number)):
        if x and y:
            if x == y:
                return 0
            seen = True
    return 1 if seen else MISSING


def _swap_possible(incoming: Person, held: Person) -> bool:
    """Cheap guard before comparing names crosswise: the initials must cross-match (a slip rarely
    changes the first letter; an initial-only name still counts)."""
    held_family = {name[0] for name in held.family_names}
    held_given = {name[0] for name in held.given_first}
    return (any(name[0] in held_family for name in incoming.given_first)
            and any(name[0] in held_given for name in incoming.family_names))


def comparison_vector(incoming: Person, held: Person) -> tuple[tuple[int, ...], bool]:
    """The level index per field (FIELD_NAMES order, MISSING = -1) and whether given and family
    names were compared crosswise (recorded the other way round on one side)."""
    given = _given_level(incoming, held)
    family = _family_level(incoming.family_names, incoming.family_parts, held.family_names, held.family_parts)
    swapped = False
    if (given + family > 1 and incoming.given_all and held.given_all and incoming.family_names
            and held.family_names and _swap_possible(incoming, held)):
        # Try the names crosswise: incoming given vs held family and incoming family vs held given.
        # The better cross level is scored as the family name, the other as the given name, so the
        # result does not depend on which record is the incoming one.
        cross_a = _name_pairs_level([(a, b) for a in incoming.given_first for b in held.family_names])
        cross_b = _name_pairs_level([(a, b) for a in incoming.family_names for b in held.given_first])
        if cross_a <= 2 and cross_b <= 2:
            swapped_given = max(cross_a, cross_b)
            swapped_family = {0: 0, 1: 3, 2: 2}[min(cross_a, cross_b)]  # a nickname is no family level
            if swapped_given + swapped_family < given + family:
                given, family, swapped = swapped_given, swapped_family, True
    return (
        given, family, _dob_level(incoming.date_of_birth, held.date_of_birth),
        _gender_level(incoming.gender, held.gender), _location_level(incoming, held),
        _identifier_level(incoming, held),
    ), swapped


# --- the model -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    version: str
    prior_log2_odds: float  # log2(lambda / (1 - lambda)), lambda = P(two random records are one child)
    m: dict  # field -> tuple of m per level (FIELDS order)
    u: dict  # field -> tuple of u per level
    bits: dict  # field -> tuple of log2(m/u) per level
    household_bits: dict  # field -> log2(m/u_household) per level, for pairs at the same address
    suggested_thresholds: dict
    raw: dict  # the model.json document
    tf_bits: dict = dataclasses.field(default_factory=dict)  # "given"/"family" -> {name: bits of exact agreement}

    @classmethod
    def from_dict(cls, doc: dict) -> Model:
        m, u, bits = {}, {}, {}
        for name, levels in FIELDS.items():
            spec = doc["fields"][name]
            m[name] = tuple(float(spec[level]["m"]) for level in levels)
            u[name] = tuple(float(spec[level]["u"]) for level in levels)
            bits[name] = tuple(math.log2(mi / ui) for mi, ui in zip(m[name], u[name]))
        household_bits = dict(bits)
        for name, spec in (doc.get("household") or {}).get("fields", {}).items():
            household_bits[name] = tuple(math.log2(mi / float(spec[level]["u"]))
                                         for mi, level in zip(m[name], FIELDS[name]))
        lam = float(doc["prior_match_probability"])
        tf_bits = {}
        for name, spec in (doc.get("term_frequencies") or {}).items():
            if name not in FIELDS:
                continue  # e.g. "note"
            average = bits[name][0]
            tf_bits[name] = {value: max(average - TF_MAX_ADJUSTMENT_BITS,
                                        min(average + TF_MAX_ADJUSTMENT_BITS, math.log2(m[name][0] / float(share))))
                             for value, share in (spec.get("shares") or {}).items()}
        return cls(version=str(doc["version"]), prior_log2_odds=math.log2(lam / (1 - lam)), m=m, u=u,
                   bits=bits, household_bits=household_bits,
                   suggested_thresholds=dict(doc.get("suggested_thresholds") or {}), raw=doc, tf_bits=tf_bits)

    def for_index_size(self, records: int) -> Model:
        """The model with its prior rescaled to an index of ``records`` records: the chance that a
        held record is the incoming child falls as the index grows (the prior in model.json is for
        ``prior_reference_records``)."""
        reference = float(self.raw.get("prior_reference_records") or records)
        shift = math.log2(reference / max(1, records))
        return dataclasses.replace(self, prior_log2_odds=self.prior_log2_odds + shift)

    @classmethod
    def load(cls, path) -> Model:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))


@functools.lru_cache(maxsize=1)
def default_model() -> Model:
    """The shipped model (``model.json`` beside this module), loaded once per process."""
    text = resources.files("gateway.index.linkage").joinpath("model.json").read_text("utf-8")
    return Model.from_dict(json.loads(text))


@dataclass(frozen=True)
class Comparison:
    levels: dict  # field -> level name ("missing" when either side lacks it)
    weights: dict  # field -> bits contributed
    weight: float  # total incl. prior, bits
    probability: float
    twins: bool
    identifiers: str | None  # "agree" | "disagree" | None
    swapped_names: bool = False
    split_from: tuple | None = None  # (another child, its Comparison): the record links as strongly there
    given_through_middle: bool = False  # the given names agree only as one's first and the other's middle
    same_first_name: bool = False  # the first given names, whole and normalised, are the same
    given_misspelt: bool = False  # the given names are a slip apart and each slip makes no name (``misspelt``)

    @property
    def demographic_probability(self) -> float:
        """The match probability from everything but the identifiers: for the deterministic rule
        "an agreeing NHS or pupil number links, unless the rest of the identity strongly disagrees"
        (e.g. review when this is below the review threshold)."""
        return probability_from_weight(self.weight - self.weights.get("identifier", 0.0))


def probability_from_weight(weight: float) -> float:
    if weight > 60:
        return 1.0
    if weight < -60:
        return 0.0
    odds = 2.0 ** weight
    return odds / (1.0 + odds)


def compare(incoming: Person, held: Person, model: Model | None = None) -> Comparison:
    model = model or default_model()
    vector, swapped = comparison_vector(incoming, held)
    levels, weights = {}, {}
    total = model.prior_log2_odds
    table = model.household_bits if vector[LOCATION] in SAME_ADDRESS else model.bits
    household = vector[LOCATION] in SAME_ADDRESS
    for name, index in zip(FIELD_NAMES, vector):
        if index == MISSING:
            levels[name], weights[name] = "missing", 0.0
        else:
            levels[name] = FIELDS[name][index]
            bits = table[name][index]
            if index == 0 and not swapped and not household and name in model.tf_bits:
                bits = _tf_bits(model.tf_bits[name], bits, _agreeing_names(name, incoming, held))
            weights[name] = bits
            total += bits
    through_middle = levels["given"] == "exact" and not swapped and given_only_through_a_middle_name(incoming, held)
    twins = ((levels["given"] == "disagree" or through_middle) and levels["family"] in _SAME_FAMILY
             and levels["dob"] == "exact")
    identifiers = {"agree": "agree", "disagree": "disagree"}.get(levels["identifier"])
    return Comparison(levels=levels, weights=weights, weight=total, probability=probability_from_weight(total),
                      twins=twins, identifiers=identifiers, swapped_names=swapped, given_through_middle=through_middle,
                      same_first_name=bool(incoming.given_names) and incoming.given_names[:1] == held.given_names[:1],
                      given_misspelt=levels["given"] == "typo" and misspelt(
                          incoming, held, swapped, model.tf_bits.get("given", frozenset())))


def misspelt(incoming: Person, held: Person, swapped: bool = False, also: frozenset[str] | dict = frozenset()) -> bool:
    """The given names agree only by a slip, and every slip is between a name people are given and
    a string that is no name and a slip of no other name (Charlotte and Charlolte, either way
    round: gateway/index/linkage/names.py, a fixed, sourced list; ``also``, the model's name
    table, may only add names). Two names a slip apart (Mia and Mila, Mateo and Matei), two strings
    on no list, a string a slip from another established name that sounds otherwise (Mla: Mila or
    Mia? names.other_names_a_slip_from) or one with a letter of another script are not a
    misspelling: twins are named so, and no list can say which twin is meant.
    ``swapped``: the names were compared crosswise (``comparison_vector``), and so are the slips
    (Jack Nicoll against "Nicoll Jadk"); a slip of the family name there is on no list of given
    names, so stays a question."""
    if swapped:
        pairs = [(a, b) for a in incoming.given_first for b in held.family_names]
        pairs += [(a, b) for a in incoming.family_names for b in held.given_first]
    else:
        pairs = [(a, b) for a in incoming.given_first for b in held.given_first]
    slips = [(a, b) for a, b in pairs if a != b and _is_typo(a, b)]
    if not slips:
        return False
    for a, b in slips:
        a_named, b_named = is_a_name(a, also), is_a_name(b, also)
        if a_named == b_named:
            return False
        unlisted, listed = (b, a) if a_named else (a, b)
        if not plain_letters(unlisted) or other_names_a_slip_from(unlisted, listed, also):
            return False
    return True


def _agreeing_names(field: str, incoming: Person, held: Person):
    if field == "family":
        return set(incoming.family_names) & set(held.family_names)
    return (set(incoming.given_first) & set(held.given_all)) | (set(incoming.given_all) & set(held.given_first))


def _tf_bits(table: dict, average: float, names) -> float:
    """The weight of an exact agreement on ``names`` (the rarest one agreeing counts)."""
    known = [table[n] for n in names if n in table]
    return max(known) if known else average


def query_score(query: FindQuery, person: Person, model: Model | None = None) -> int:
    """FindChild's 0–100 score (``query_match``'s first part)."""
    return query_match(query, person, model)[0]


def query_match(query: FindQuery, person: Person, model: Model | None = None) -> tuple[int, float]:
    """FindChild's 0–100 score, and the match probability.

    The score is the evidence the candidate gives over the fields the query supplied, as a share
    of the most those fields could give:
    ``score = 100 * clamp(sum of field weights / sum of the best-level weights of the supplied
    fields, 0, 1)``, rounded. It is monotone in the Fellegi–Sunter weight for a given query, 100
    when every supplied field agrees exactly, and 0 when the evidence is against a match; unlike
    the probability it does not saturate, so it still ranks near-exact candidates apart. The
    prior is left out: it is the same for every candidate of a query.

    The probability is the Fellegi–Sunter match probability of the same evidence with the model's
    prior (``Model.for_index_size``: about one in the index's size; 1 when an NHS or pupil number
    agrees): how sure the evidence makes
    it that this candidate, of all the children held, is the one asked for. FindChild answers a
    candidate only above a floor on it (``LinkPolicy.find_min_probability``), so that in a large
    index a search for a child who is not there does not answer with another child who happens to
    share a common family name and birth date.
    """
    model = model or default_model()
    partial = person_from_query(query)
    comparison = compare(partial, person, model)
    levels, weights = comparison.levels, dict(comparison.weights)
    best = {name: max(model.bits[name]) for name in FIELD_NAMES}
    # A query has a postcode but no address line: "same postcode" is its best location level,
    # weighed as m/u of the postcode agreeing whatever the line.
    m, u = model.m["location"], model.u["location"]
    postcode_bits = math.log2((m[0] + m[1]) / (u[0] + u[1]))
    best["location"] = postcode_bits
    if levels["location"] == "postcode":
        weights["location"] = postcode_bits
    for name in ("given", "family"):  # the term-frequency weight of the name asked for is its best
        if levels[name] == "exact":
            best[name] = max(best[name], weights[name]) if weights[name] > model.bits[name][0] else weights[name]
    evidence = sum(weights[name] for name in FIELD_NAMES if levels[name] != "missing")
    # An NHS or pupil number the query gives and the child holds names the child (a mistyped one
    # fails its check digit and is no identifier); the score still weighs the rest.
    probability = 1.0 if comparison.identifiers == "agree" else probability_from_weight(model.prior_log2_odds + evidence)
    possible = sum(best[name] for name in FIELD_NAMES if levels[name] != "missing")
    if possible <= 0:
        return 0, probability
    return int(round(100 * min(1.0, max(0.0, evidence / possible)))), probability
