"""The product's import graph, read from the source with `ast` (nothing is imported).

- No circles: no module of gateway, connectors, contactgate_wire (wire/), contactgate_schemas
  (schemas/) or contactgate_local (local/) reaches itself through imports. Every import statement
  counts, a lazy one inside a function too: it hides the same coupling, and only moves the failure
  from import time to the first call. A circle is broken by moving what both sides need to where it
  belongs, never by making an import lazy.
- The line between the two sides: the gateway (`gateway/`) and what a connecting organisation
  installs (`connectors/`: the SDK, mappings, push) import what they share (`contactgate_wire`,
  `contactgate_schemas`) and never each other; the shared packages import neither; and no product
  code reaches into a library's private names (zeep's `_sign_envelope_with_key` was one). Checked
  also by what importing each side really loads, in a fresh interpreter.
- docs/architecture.md stays true: its table of packages names exactly the packages in the
  repository, its table of the index's modules exactly the modules of gateway/index/, and its
  table of what may not import what is `FORBIDDEN` here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# directory -> the top-level packages its modules may not import
FORBIDDEN = {
    "gateway": {"connectors", "contactgate_local"},
    "connectors": {"gateway", "contactgate_local"},
    "wire": {"gateway", "connectors", "contactgate_local"},
    "schemas": {"gateway", "connectors", "contactgate_local", "contactgate_wire"},
}
OURS = {"gateway", "connectors", "contactgate_local", "contactgate_wire", "contactgate_schemas"}
# directory -> the import package it holds (pyproject.toml's package-dir)
PACKAGES = {"gateway": "gateway", "connectors": "connectors", "wire": "contactgate_wire",
            "schemas": "contactgate_schemas", "local": "contactgate_local"}
# What the gateway's server needs and a connecting organisation's SDK must not pull in.
SERVER_ONLY = ("gateway", "flask", "sqlalchemy", "alembic", "psycopg", "gunicorn", "redis", "argon2", "pyotp",
               "rapidfuzz", "jellyfish", "flask_wtf", "contactgate_local")


def imports_in(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for every import in the file, at any depth, relative ones resolved to
    their package; `importlib.import_module("...")` / `__import__("...")` with a literal count too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module, [alias.name for alias in node.names]))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None)
                   in ("import_module", "__import__"))):
            found.append((node.lineno, node.args[0].value, []))
    return found


def source_files(directory: str) -> list[Path]:
    return sorted(p for p in (ROOT / directory).rglob("*.py") if "node_modules" not in p.parts)


def crossings() -> list[str]:
    problems = []
    for directory, forbidden in FORBIDDEN.items():
        for path in source_files(directory):
            for line, module, names in imports_in(path):
                top = module.split(".")[0]
                where = f"{path.relative_to(ROOT)}:{line}"
                if top in forbidden:
                    problems.append(f"{where} imports {module} across the line")
                if top not in OURS and any(n.startswith("_") and not n.startswith("__") for n in names):
                    problems.append(f"{where} imports private {[n for n in names if n.startswith('_')]} "
                                    f"from {module}")
    return problems


def test_neither_side_imports_the_other_and_no_private_library_names():
    assert crossings() == []


def test_the_check_sees_a_lazy_import_a_relative_one_and_a_private_name(tmp_path, monkeypatch):
    """The scanner is not vacuous: each kind of crossing it must catch, planted in a copy."""
    planted = tmp_path / "connectors"
    planted.mkdir()
    (planted / "__init__.py").write_text("")
    (planted / "bad.py").write_text(
        "def later():\n    from gateway.trust import pki\n"
        "import importlib\nimportlib.import_module('gateway.app')\n"
        "from zeep.wsse.signature import _sign_envelope_with_key\n")
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "pipeline").mkdir()
    (tmp_path / "gateway" / "pipeline" / "x.py").write_text("from ...connectors import client\n")
    for directory in ("wire", "schemas"):
        (tmp_path / directory).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = crossings()
    assert any("bad.py:2 imports gateway.trust" in p for p in found), found
    assert any("bad.py:4 imports gateway.app" in p for p in found), found
    assert any("bad.py:5 imports private" in p for p in found), found
    assert any("x.py:1 imports connectors" in p for p in found), found


# ---- no circles ------------------------------------------------------------------------------------

def module_name(path: Path) -> str:
    directory, *parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGES[directory], *parts])


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}, over every product module.
    ``from package import name`` is an import of the submodule ``package.name`` when there is one,
    else of ``package``; imports of anything outside the product are left out."""
    files = {module_name(path): path for directory in PACKAGES for path in source_files(directory)}
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges = graph[module] = {}
        for line, imported, names in imports_in(path):
            top, _, rest = imported.partition(".")
            if top in PACKAGES and top not in OURS:  # a relative import, resolved to its directory's name
                imported = ".".join(filter(None, [PACKAGES[top], rest]))
            targets = [f"{imported}.{name}" for name in names if f"{imported}.{name}" in files]
            if not targets:
                while imported and imported not in files:
                    imported = imported.rpartition(".")[0]
                targets = [imported] if imported else []
            for target in targets:
                if target != module:
                    edges[target] = min(line, edges.get(target, line))
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[str]:
    """One shortest circle through each set of modules that reach each other (Tarjan's strongly
    connected components), as ``a:LINE -> b:LINE -> a``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(module: str) -> None:  # recursive: the graph is a few hundred modules
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    found = []
    for component in components:
        start, inside = component[0], set(component)
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:  # breadth first: the shortest way back to start
            module = queue.popleft()
            if start in graph[module]:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                path.reverse()
                found.append(" -> ".join(f"{m}:{graph[m][n]}" for m, n in zip(path, [*path[1:], start]))
                             + f" -> {start}")
                break
            for target in sorted(graph[module]):
                if target in inside and target not in came_from and target != start:
                    came_from[target] = module
                    queue.append(target)
    return found


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, ("import circles (move what both sides need to where it belongs, below both):\n"
                       + "\n".join(found))


def test_the_circle_check_finds_a_lazy_circle_and_names_it(tmp_path, monkeypatch):
    """Not vacuous: a circle closed by an import inside a function, planted in a copy, is found and
    named with its lines; ``from package import submodule`` and relative imports resolve to the
    module imported."""
    for directory in PACKAGES:
        (tmp_path / directory).mkdir()
    (tmp_path / "connectors" / "__init__.py").write_text("")
    (tmp_path / "connectors" / "a.py").write_text("import json\nfrom connectors.b import thing\n")
    (tmp_path / "connectors" / "b.py").write_text("def thing():\n    from connectors import c\n")
    (tmp_path / "connectors" / "c.py").write_text("\n\nimport connectors.a\n")
    (tmp_path / "gateway" / "__init__.py").write_text("")
    (tmp_path / "gateway" / "ok.py").write_text("from gateway import other\n")
    (tmp_path / "gateway" / "other.py").write_text("import gateway\n")
    (tmp_path / "wire" / "__init__.py").write_text("")
    (tmp_path / "wire" / "soap.py").write_text("from . import faults\nfrom .faults import CODES\n")
    (tmp_path / "wire" / "faults.py").write_text("CODES = ()\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = import_graph()
    assert graph["gateway.ok"] == {"gateway.other": 1} and graph["gateway.other"] == {"gateway": 1}
    assert graph["contactgate_wire.soap"] == {"contactgate_wire.faults": 1}
    assert circles(graph) == ["connectors.a:2 -> connectors.b:2 -> connectors.c:3 -> connectors.a"]


# ---- what each side loads ------------------------------------------------------------------------------

def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_connecting_side_loads_nothing_of_the_server():
    loaded = loaded_after("import connectors.client, connectors.push, connectors.cli, connectors.mapping, "
                          "connectors.sources, connectors.model\n"
                          "import click.testing\nclick.testing.CliRunner().invoke(connectors.cli.main, ['--help'])")
    assert loaded & set(SERVER_ONLY) == set()
    assert {"connectors", "contactgate_wire", "contactgate_schemas"} <= loaded


@pytest.mark.parametrize("module", ["gateway.app", "gateway.cli", "gateway.onboarding", "gateway.console.server"])
def test_the_gateway_loads_nothing_of_the_connecting_side(module):
    assert "connectors" not in loaded_after(f"import {module}")


# ---- docs/architecture.md says what is here ----------------------------------------------------------

def architecture_table(heading: str) -> dict[str, str]:
    """The rows of the table under ``## heading`` in docs/architecture.md: first cell (a `directory/`
    in backticks) -> second cell."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    _, found, section = text.partition(f"\n## {heading}\n")
    assert found, f"docs/architecture.md has no section '## {heading}'"
    section = section.split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            rows[cells[0].strip("`")] = cells[1]
    return rows


def package_directories() -> set[str]:
    """Every package in the product, as its directory (``gateway/cli/``)."""
    return {f"{init.parent.relative_to(ROOT).as_posix()}/" for directory in PACKAGES
            for init in (ROOT / directory).rglob("__init__.py") if "node_modules" not in init.parts}


def test_the_architecture_document_lists_every_package_and_no_other():
    documented, real = set(architecture_table("Packages")), package_directories()
    assert documented == real, (f"docs/architecture.md 'Packages' lacks {sorted(real - documented)} and lists "
                                f"{sorted(documented - real)}, which are not packages: make the table true")



def test_the_architecture_document_lists_every_module_of_the_index():
    """Where to find what in gateway/index/ (decisions, rows, batches, ...): the table names each
    module there, and no other."""
    documented = set(architecture_table("Inside the index"))
    real = {p.name for p in (ROOT / "gateway" / "index").glob("*.py") if p.name != "__init__.py"}
    assert documented == real, (f"docs/architecture.md 'Inside the index' lacks {sorted(real - documented)} and "
                                f"lists {sorted(documented - real)}, which are not modules of gateway/index/")

def test_the_architecture_document_states_the_import_rules_this_test_enforces():
    stated = {directory.rstrip("/"): {name.strip(" `") for name in cell.split(",")}
              for directory, cell in architecture_table("What may import what").items()}
    assert stated == FORBIDDEN


def test_the_architecture_checks_are_not_vacuous(tmp_path, monkeypatch):
    """A package the document does not list, and a rule it states differently, are both found."""
    for directory in PACKAGES:
        (tmp_path / directory).mkdir()
        (tmp_path / directory / "__init__.py").write_text("")
    (tmp_path / "gateway" / "newpart").mkdir()
    (tmp_path / "gateway" / "newpart" / "__init__.py").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text(
        "# A\n\n## Packages\n\n| directory | holds |\n|---|---|\n| `gateway/` | x |\n| `connectors/` | x |\n"
        "| `wire/` | x |\n| `schemas/` | x |\n| `local/` | x |\n\n## What may import what\n\n"
        "| directory | may not import |\n|---|---|\n| `gateway/` | `connectors` |\n\n## Next\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert package_directories() - set(architecture_table("Packages")) == {"gateway/newpart/"}
    assert architecture_table("What may import what") == {"gateway/": "`connectors`"}
