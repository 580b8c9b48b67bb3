"""Child ids: opaque, non-sequential, with a check character.

Format ``XXXX-XXXX-XXXX-XXXC``: 15 random Crockford base-32 characters (75 bits from `secrets`)
and a Luhn mod 32 check character, which catches every single-character error and every
transposition of adjacent characters except 0<->Z (Luhn's own blind spot, like 09<->90 in mod 10). Input is normalised (case, hyphens, Crockford's I/L -> 1 and
O -> 0) before checking.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_N = len(ALPHABET)
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})


def check_character(payload: str) -> str:
    """Luhn mod N over ``payload`` (characters of ALPHABET)."""
    factor = 2
    total = 0
    for char in reversed(payload):
        addend = factor * _VALUE[char]
        factor = 1 if factor == 2 else 2
        total += addend // _N + addend % _N
    return ALPHABET[(_N - total % _N) % _N]


def _group(raw: str) -> str:
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


_UNBIASED = 256 - 256 % _N  # a random byte below this picks each character equally often


def new_child_id() -> str:
    """15 random characters (one draw of random bytes, not one per character) and a check character."""
    chars: list[str] = []
    while len(chars) < 15:
        chars.extend(ALPHABET[b % _N] for b in secrets.token_bytes(20) if b < _UNBIASED)
    payload = "".join(chars[:15])
    return _group(payload + check_character(payload))


def normalise(candidate: str) -> str | None:
    """The canonical form of ``candidate``, or None if it is not a well-formed id with a valid check."""
    raw = candidate.strip().upper().replace("-", "").replace(" ", "").translate(_CONFUSABLE)
    if len(raw) != 16 or any(c not in _VALUE for c in raw):
        return None
    if check_character(raw[:15]) != raw[15]:
        return None
    return _group(raw)


def is_valid(candidate: str) -> bool:
    return normalise(candidate) == candidate
