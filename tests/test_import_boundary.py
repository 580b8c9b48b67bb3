"""The line between the two sides: the gateway (`gateway/`) and what a connecting organisation installs
(`connectors/`: the SDK, mappings, push) import what they share (`contactgate_wire`,
`contactgate_schemas`) and never each other; the shared packages import neither; and no product code
reaches into a library's private names (zeep's `_sign_envelope_with_key` was one).

Checked two ways: every import statement in the source, lazy ones inside functions included; and
what importing each side really loads, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
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
