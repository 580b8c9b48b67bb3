"""Blocking keys: the indexed (key, child) rows candidates are found by.

A true match must survive any single error in one field, so every field is left out of at least
one rule (errors: a family-name typo or change, a given-name typo or nickname, any date error, a
move, given and family swapped):

====  ==========================================================  ===========================
rule  key                                                          survives an error in
====  ==========================================================  ===========================
fd    phonetic family + year + day/month (unordered)               given, address, day/month swap
gd    nickname group of first/preferred given (phonetic) + same    family (typo or change)
ny    unordered {phonetic family, phonetic given} + year           day/month/digit, swap of names
nm    unordered {phonetic family, phonetic given} + day/month      year, swap of names
fgy   phonetic family + nickname group of given + year             nickname plus a date error
fim   phonetic family + given initial + day/month                  given typo plus year error
gim   phonetic given (and groups) + family initial + day/month     family typo plus year error
di    unordered {family initial, given initial} + date of birth    typos in both names
py    postcode + year of birth                                     both names
fp    phonetic family + postcode                                   date of birth, given
ap    postcode + house number (or the line's first word)           both names and the date
an    unordered {phonetic family, phonetic given} + district       the date and the address
      (postcode's outward code)                                    within the district, a swap
pd    district + date of birth                                     both names, a move nearby
nhs   valid NHS number; upn valid unique pupil number              everything else
====  ==========================================================  ===========================

The last three (issue 23) survive two errors at once: a transposed family name with a new birth
date (``ap``), given and family swapped with a new birth date (``an``, ``ap``), both names
recorded otherwise (``pd``, ``py``, ``ap``). Names without the date are qualified by the district
so that their buckets do not grow with the index (a national "Smith + Oliver" bucket would).

"day/month (unordered)" is the smaller then the larger of day and month, so a swap keeps the key.
The rules below ``fgy`` also catch many pairs with two errors (both copies of a record are
corrupted independently in real feeds).

Bucket sizes at 1 M children (about 55 k per birth year, 150 per date of birth): ``fd`` and
``gd`` hold a handful (a common name shares a date with ~1-5 others); ``ny``/``fgy`` a common
surname + common given name in one year ~5-10; ``nm`` the same over ~18 years ~10-30; ``fim``
and ``gim`` (name + initial + day/month over ~18 years) ~5-40 for the commonest names; ``di``
(150 children per date split by two initials) ~1-5; ``py`` the
children of one postcode born in one year (~1-3); ``fp`` one family's postcode (~1-5); ``ap``
one household (~1-4); ``an`` a name pair within a district (~3,000 districts: ~1); ``pd`` one
birth date within a district (~1). No rule is keyed on the date of birth or the year alone.

Phonetic codes are Metaphone (jellyfish) of the normalised name, which for non-Latin scripts
falls back to the normalised name itself. Keys are plain text, at most 80 characters, and depend
on nothing process-specific (no ``hash()``), so a later change can replace each by a keyed hash.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

import jellyfish

from gateway.index.linkage.person import CACHED_STRINGS, Person, nickname_groups, person_from_query
from gateway.index.model import FindQuery

MAX_KEY_LENGTH = 80
_CODE_LENGTH = 16  # phonetic code / name bound inside a key
_MAX_GROUPS = 4  # nickname groups per given name used in keys (a name like "al" belongs to many)


@functools.lru_cache(maxsize=CACHED_STRINGS)
def phonetic(name: str) -> str:
    if not name:
        return ""
    if name.isascii():
        code = jellyfish.metaphone(name).replace(" ", "")
        return (code or name)[:_CODE_LENGTH].upper()
    return name[:_CODE_LENGTH]


@functools.lru_cache(maxsize=CACHED_STRINGS)
def given_codes(name: str) -> tuple[str, ...]:
    """Phonetic codes of the nickname groups a given name belongs to (its own code first)."""
    codes = [phonetic(name)]
    for group in sorted(nickname_groups(name))[:_MAX_GROUPS]:
        code = phonetic(group)
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def _day_month(d: dt.date) -> str:
    low, high = sorted((d.day, d.month))
    return f"{low:02d}{high:02d}"


def _key(*parts: str) -> str:
    return ":".join(parts)[:MAX_KEY_LENGTH]


NHS_KEY, UPN_KEY = "nhs:", "upn:"
IDENTIFIER_KEY_PREFIXES = (NHS_KEY, UPN_KEY)  # the keys that hold a valid NHS / pupil number


def _identifier_keys(person: Person) -> set[str]:
    keys = set()
    if person.nhs_number:
        keys.add(f"{NHS_KEY}{person.nhs_number}")
    if person.pupil_number:
        keys.add(f"{UPN_KEY}{person.pupil_number}")
    return keys


def blocking_keys(person: Person) -> set[str]:
    """Every key a child is filed under."""
    keys = _identifier_keys(person)
    dob = person.date_of_birth
    families = [phonetic(name) for name in person.family_names] + [phonetic(p) for p in person.family_parts]
    families = list(dict.fromkeys(f for f in families if f))
    firsts = person.given_first
    postcode = person.postcode
    district = _district(postcode)
    if dob is not None:
        year = f"{dob.year:04d}"
        family_initials = {name[0] for name in person.family_names} | {part[0] for part in person.family_parts}
        for family in families:
            keys.add(_key("fd", family, year, _day_month(dob)))
        for given in firsts:
            for code in given_codes(given):
                keys.add(_key("gd", code, year, _day_month(dob)))
        for family in families:
            for given in firsts:
                pair = sorted((family, phonetic(given)))
                keys.add(_key("ny", *pair, year))
                keys.add(_key("nm", *pair, _day_month(dob)))
                for code in given_codes(given)[1:]:
                    keys.add(_key("fgy", family, code, year))
                keys.add(_key("fim", family, given[0], _day_month(dob)))
        for given in firsts:
            for code in given_codes(given):
                for initial in family_initials:
                    keys.add(_key("gim", code, initial, _day_month(dob)))
        for a in family_initials:
            for b in {g[0] for g in firsts}:
                keys.add(_key("di", *sorted((a, b)), year, _day_month(dob)))
        if postcode:
            keys.add(_key("py", postcode, year))
        if district:
            keys.add(_key("pd", district, dob.isoformat()))
    if postcode:
        for family in families:
            keys.add(_key("fp", family, postcode))
        house = _house(person.address_line)
        if house:
            keys.add(_key("ap", postcode, house))
    if district:
        for family in families:
            for given in firsts:
                keys.add(_key("an", *sorted((family, phonetic(given))), district))
    return keys


def _district(postcode: str | None) -> str | None:
    """The outward code of a compact UK postcode ("LS62AB" -> "LS6"); None when it has no such shape."""
    if not postcode or len(postcode) < 5 or not postcode[-3].isdigit():
        return None
    return postcode[:-3]


def _house(line: str | None) -> str | None:
    """What tells a household apart within its postcode: the house (and flat) numbers of the
    normalised first line, or else its first word ("rose cottage" -> "rose")."""
    if not line:
        return None
    numbers = re.findall(r"\d+[a-z]?", line)
    if numbers:
        return "#" + "/".join(numbers[:3])
    words = line.split()
    return words[0][:_CODE_LENGTH] if words else None


def query_keys(query: FindQuery) -> set[str]:
    """The keys a FindChild looks under: identifiers, and the name rules the query can fill (a
    family name and a birth date at least). A typo in the family name is tolerated by the phonetic
    code, a day/month swap by the unordered day-month, and with a given name a date error by the
    name + year / month-day rules."""
    person = person_from_query(query)
    keys = _identifier_keys(person)
    if person.family_names and person.date_of_birth is not None:
        full = blocking_keys(person)
        keys |= {k for k in full if not k.startswith(("py:", "fp:", "an:", "pd:", "ap:"))}
        if person.postcode:  # a query has no address line: not "ap"
            keys |= {k for k in full if k.startswith(("fp:", "an:", "pd:"))}
    return keys
