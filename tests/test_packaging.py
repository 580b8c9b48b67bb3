"""The distribution is described once, in pyproject.toml: setup.py is a shim for tools that look
for it, the version the code reports is that one, and every package of the product is listed (a
package left out of the list is missing from the wheel, with no error until it is imported)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import gateway

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_setup_py_is_a_shim_that_reports_what_pyproject_says():
    before = sorted(p.name for p in ROOT.iterdir())
    run = subprocess.run([sys.executable, "setup.py", "--name", "--version"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [PYPROJECT["project"]["name"], PYPROJECT["project"]["version"]], run.stdout
    assert sorted(p.name for p in ROOT.iterdir()) == before  # nothing built or left behind


def test_the_code_reports_the_version_pyproject_gives():
    assert gateway.__version__ == PYPROJECT["project"]["version"]


def test_every_package_of_the_product_is_listed():
    setuptools = PYPROJECT["tool"]["setuptools"]
    directories = {package: ROOT / directory for package, directory in setuptools["package-dir"].items()}
    found = set()
    for package in ("gateway", "connectors", *directories):
        top = directories.get(package, ROOT / package)
        for init in top.rglob("__init__.py"):
            found.add(".".join([package, *init.parent.relative_to(top).parts]))
    missing = sorted(found - set(setuptools["packages"]))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
