"""Every relative link in the project's documents leads somewhere: the file (or directory) exists,
and a `#fragment` names a heading of that file, spelt as GitHub spells heading anchors. Links to
other sites are not followed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted({ROOT / "README.md", ROOT / "SECURITY.md", *(ROOT / "docs").glob("*.md"),
                    ROOT / "bench" / "README.md", ROOT / "certs" / "README.md",
                    ROOT / "packaging" / "client" / "README.md", ROOT / "gateway" / "index" / "linkage" / "README.md",
                    ROOT / "docs" / "clients" / "README.md", *(ROOT / "docs" / "clients").glob("*/README.md")})
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def outside_code(text: str) -> list[str]:
    """The lines of a Markdown text outside code blocks (fenced, or indented by four spaces)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and not line.startswith("    "):
            lines.append(line)
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in outside_code(path.read_text()):
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = anchor(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    for line in outside_code(path.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            file_part, _, fragment = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}: {target}"
            if not destination.exists():
                problems.append(f"{where}: no such file")
            elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
                problems.append(f"{where}: no heading with that anchor")
    return problems


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_check_sees_a_missing_file_and_a_missing_heading(tmp_path, monkeypatch):
    """Not vacuous: a link to a file that is not there and to a heading that is not there are found;
    a heading with code in it is spelt as GitHub spells it; a link inside a code block is not read."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\n## Two words: `here`\n\n[ok](#two-words-here) [no](#nowhere)\n"
                                   "[missing](b.md) [ok](a.md#title)\n```\n[in code](c.md)\n```\n")
    assert broken_links(tmp_path / "a.md") == ["a.md: #nowhere: no heading with that anchor",
                                               "a.md: b.md: no such file"]
