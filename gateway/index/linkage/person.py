"""The comparable, normalised view of a child's record.

A ``Person`` is built once per record (normalisation is cached per distinct string) and holds,
besides the interface fields, the derived forms the comparators and blocking rules need, so that
``compare`` does no string work beyond the distance functions themselves.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources

from stdnum.gb import nhs as stdnum_nhs
from stdnum.gb import upn as stdnum_upn

from gateway.index.model import ChildUpdate, FindQuery, normalise_name

#: Particles of family names that say nothing on their own ("van" in Van Dijk and Van Berg): never
#: a part that agrees, nor a blocking key.
FAMILY_PARTICLES = frozenset("""van von der den de da di del della dos das du la le el al bin bint ibn ben
abu mc mac st saint ap ab""".split())
#: Longest normalised name kept: bounds keys and comparator time on hostile input.
MAX_NAME_LENGTH = 60
#: Entries in each per-string cache of normalised names, postcodes and address lines (here and in
#: blocking.py). The strings come from messages: a national index has millions, so a cache sized to
#: hold many of them only fills, for hours (65,536 entries a cache grew each worker ~1-5 MB a minute
#: under load, issue 24) and keeps children's names in every worker. What it is for is the reuse
#: within a record and a batch (a name normalised for its Person, its keys and each comparison),
#: and the commonest names: a few hundred entries hold them. ~0.2 MB a cache when full.
CACHED_STRINGS = 512


@dataclass(frozen=True)
class Person:
    family_names: tuple[str, ...]  # current first, then previous names; normalised (normalise_name)
    given_names: tuple[str, ...]  # given names in order, then the preferred name; normalised
    date_of_birth: dt.date | None
    gender: str | None  # female | male | other | unknown
    postcode: str | None  # compact upper, e.g. "SW1A1AA"
    address_line: str | None  # normalised first address line
    nhs_number: str | None = None  # only when valid (modulus 11)
    pupil_number: str | None = None  # only when valid (check letter)
    # Derived forms (not part of equality, built by ``make_person``):
    family_parts: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    given_first: tuple[str, ...] = field(default=(), compare=False, repr=False)  # first + preferred (+ parts)
    given_all: tuple[str, ...] = field(default=(), compare=False, repr=False)  # every given token
    address_numbers: frozenset[str] = field(default=frozenset(), compare=False, repr=False)


def make_person(*, family_names, given_names, date_of_birth, gender=None, postcode=None,
                address_line=None, nhs_number=None, pupil_number=None,
                preferred_name=None) -> Person:
    """Build a Person from raw strings (any may be empty or None)."""
    families: list[str] = []
    parts: set[str] = set()
    for raw in family_names:
        if not raw:
            continue
        norm = name_key(raw)
        if norm and norm not in families:
            families.append(norm)
        name_parts = name_parts_of(raw)
        if len(name_parts) > 1:
            parts.update(p for p in name_parts if p not in FAMILY_PARTICLES)
    givens: list[str] = []
    first: list[str] = []
    all_tokens: list[str] = []
    raw_givens = [g for g in given_names if g]
    for position, raw in enumerate(raw_givens + ([preferred_name] if preferred_name else [])):
        norm = name_key(raw)
        if not norm:
            continue
        if norm not in givens:
            givens.append(norm)
        tokens = (norm,) + tuple(p for p in name_parts_of(raw) if p != norm)
        is_first = position == 0 or position == len(raw_givens)  # first given or the preferred name
        for token in tokens:
            if is_first and token not in first:
                first.append(token)
            if token not in all_tokens:
                all_tokens.append(token)
    address = normalise_address_line(address_line) if address_line else None
    return Person(
        family_names=tuple(families), given_names=tuple(givens), date_of_birth=date_of_birth,
        gender=normalise_gender(gender), postcode=normalise_postcode(postcode),
        address_line=address, nhs_number=valid_nhs_number(nhs_number),
        pupil_number=valid_pupil_number(pupil_number),
        family_parts=frozenset(parts), given_first=tuple(first), given_all=tuple(all_tokens),
        address_numbers=frozenset(re.findall(r"\d+[a-z]?", address)) if address else frozenset(),
    )


def person_from_update(update: ChildUpdate) -> Person:
    identity = update.identity
    address = update.address
    return make_person(
        family_names=(identity.family_name, *identity.previous_names),
        given_names=identity.given_names, preferred_name=identity.preferred_name,
        date_of_birth=identity.date_of_birth, gender=identity.gender,
        postcode=address.postcode if address else None,
        address_line=first_address_line(address.lines) if address else None,
        nhs_number=identity.nhs_number, pupil_number=identity.pupil_number,
    )


def person_from_record(record: dict) -> Person:
    """A stored canonical record (``ChildUpdate.record()`` JSON shape); extra keys are ignored."""
    identity = record["identity"]
    address = record.get("address") or None
    dob = identity.get("date_of_birth")
    return make_person(
        family_names=(identity.get("family_name"), *(identity.get("previous_names") or ())),
        given_names=tuple(identity.get("given_names") or ()), preferred_name=identity.get("preferred_name"),
        date_of_birth=dt.date.fromisoformat(dob) if isinstance(dob, str) else dob,
        gender=identity.get("gender"),
        postcode=address.get("postcode") if address else None,
        address_line=first_address_line(address.get("lines") or ()) if address else None,
        nhs_number=identity.get("nhs_number"), pupil_number=identity.get("pupil_number"),
    )


def person_from_query(query: FindQuery) -> Person:
    """A FindChild query as a partial Person: absent fields are None/empty (neutral in scoring)."""
    return make_person(
        family_names=(query.family_name,) if query.family_name else (),
        given_names=(query.given_name,) if query.given_name else (),
        date_of_birth=query.date_of_birth, gender=query.gender, postcode=query.postcode,
        nhs_number=query.nhs_number, pupil_number=query.pupil_number,
    )


# --- normalisation (cached: names and postcodes recur heavily) ---------------------------------

@functools.lru_cache(maxsize=CACHED_STRINGS)
def name_key(raw: str) -> str:
    """normalise_name (case, diacritics, spaces, hyphens, apostrophes; every script kept), bounded."""
    return normalise_name(raw)[:MAX_NAME_LENGTH]


@functools.lru_cache(maxsize=CACHED_STRINGS)
def name_parts_of(raw: str) -> tuple[str, ...]:
    """The parts of a name split at spaces and hyphens (not apostrophes: O'Brien is one part)."""
    pieces = re.split(r"[\s\-\u2010-\u2015]+", raw)
    return tuple(p for p in (name_key(piece) for piece in pieces) if len(p) >= 2)


_GENDERS = {
    "female": "female", "f": "female", "girl": "female", "2": "female",
    "male": "male", "m": "male", "boy": "male", "1": "male",
    "other": "other", "indeterminate": "other", "i": "other", "x": "other",
}


def normalise_gender(raw: str | None) -> str | None:
    if raw is None:
        return None
    return _GENDERS.get(raw.strip().casefold(), "unknown")


@functools.lru_cache(maxsize=CACHED_STRINGS)
def normalise_postcode(raw: str | None) -> str | None:
    if not raw:
        return None
    compact = re.sub(r"[^0-9A-Za-z]", "", raw).upper()
    return compact or None


def first_address_line(lines) -> str | None:
    """The line that carries the house and street: the first, or first two when the first is only
    a flat or unit ("Flat 3", "12 High Street")."""
    lines = [line for line in lines if line and line.strip()]
    if not lines:
        return None
    if len(lines) > 1 and re.fullmatch(r"\s*(flat|apartment|apt|unit|room)\b.*", lines[0], re.I) \
            and len(lines[0]) < 20:
        return f"{lines[0]} {lines[1]}"
    return lines[0]


_STREET_ABBREVIATIONS = {
    "rd": "road", "st": "street", "ave": "avenue", "av": "avenue", "ln": "lane", "dr": "drive",
    "cl": "close", "cres": "crescent", "ct": "court", "pl": "place", "gdns": "gardens",
    "sq": "square", "tce": "terrace", "ter": "terrace", "gr": "grove", "pk": "park", "hse": "house",
    "apt": "flat", "apartment": "flat",
}


@functools.lru_cache(maxsize=CACHED_STRINGS)
def normalise_address_line(raw: str) -> str | None:
    decomposed = unicodedata.normalize("NFKD", raw.casefold())
    text = "".join(c for c in decomposed if not unicodedata.combining(c))
    tokens = re.findall(r"\w+", text)
    # "st" first is Saint ("St Mary's Road"); elsewhere Street.
    out = [tok if i == 0 and tok == "st" else _STREET_ABBREVIATIONS.get(tok, tok) for i, tok in enumerate(tokens)]
    return " ".join(out)[:120] or None


def valid_nhs_number(raw: str | None) -> str | None:
    if not raw:
        return None
    compact = stdnum_nhs.compact(raw)
    return compact if stdnum_nhs.is_valid(compact) else None


def valid_pupil_number(raw: str | None) -> str | None:
    if not raw:
        return None
    compact = stdnum_upn.compact(raw)
    return compact if stdnum_upn.is_valid(compact) else None


# --- nicknames ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _nickname_groups() -> dict[str, frozenset[str]]:
    """name -> the formal names whose group it belongs to (a formal name is in its own group)."""
    groups: dict[str, set[str]] = {}
    text = resources.files("gateway.index.linkage").joinpath("data/nicknames.csv").read_text("utf-8")
    for row in csv.reader(line for line in text.splitlines() if line and not line.startswith("#")):
        if len(row) != 2:
            continue
        formal, nickname = normalise_name(row[0]), normalise_name(row[1])
        if not formal or not nickname:
            continue
        groups.setdefault(formal, {formal}).add(formal)
        groups.setdefault(nickname, {nickname}).add(formal)
    return {name: frozenset(g) for name, g in groups.items()}


def nickname_names() -> frozenset[str]:
    """Every name of data/nicknames.csv, formal and nickname, normalised."""
    return frozenset(_nickname_groups())


@functools.lru_cache(maxsize=CACHED_STRINGS)
def nickname_groups(name: str) -> frozenset[str]:
    """The groups (named by their formal name) a normalised given name belongs to; itself if unknown."""
    return _nickname_groups().get(name, frozenset((name,)))


def are_nicknames(a: str, b: str) -> bool:
    return not nickname_groups(a).isdisjoint(nickname_groups(b))
