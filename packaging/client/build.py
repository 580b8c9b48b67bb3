"""Build the `contactgate-client` wheel: what a connecting organisation installs — the SDK, mappings
and `contactgate push` (connectors/), with the shared wire package (wire/) and the schemas
(schemas/) — and none of the gateway's server or its dependencies.

setuptools builds only from inside a project directory, so the three packages are staged beside a
generated pyproject.toml. Dependency versions come from the one place they are pinned, the
repository's pyproject.toml.

    python packaging/client/build.py --out dist/      # prints the wheel's path
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NAME = "contactgate-client"
# package -> its directory in this repository
PACKAGES = {"connectors": "connectors", "contactgate_wire": "wire", "contactgate_schemas": "schemas"}
PACKAGE_DATA = {"contactgate_schemas": ["*.xsd", "*.wsdl"], "connectors": ["samples/*"]}
# What the client needs at run time (names as pinned in the repository's pyproject.toml).
DEPENDENCIES = ("lxml", "zeep", "xmlsec", "cryptography", "requests", "click", "PyYAML", "rich",
                "fhir.resources", "python-stdnum", "ijson", "paramiko", "google-re2")
# Optional: `pip install 'contactgate-client[sql]'` for `push --sql` (the organisation adds its database's driver).
EXTRAS = {"sql": ("SQLAlchemy",)}


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0].lower()


def pinned(project: dict, names=DEPENDENCIES) -> list[str]:
    pins = {_name(r): r for r in project["dependencies"]}
    missing = [d for d in names if d.lower() not in pins]
    if missing:
        raise SystemExit(f"not pinned in pyproject.toml: {', '.join(missing)}")
    return [pins[d.lower()] for d in names]


def pyproject(project: dict) -> str:
    def toml_list(items) -> str:
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    return "\n".join([
        "[build-system]", 'requires = ["setuptools>=68", "wheel"]', 'build-backend = "setuptools.build_meta"', "",
        "[project]", f'name = "{NAME}"', f'version = "{project["version"]}"',
        'description = "Call a ContactGate gateway: signed SOAP over mutual TLS, typed answers, declarative '
        'mappings and resumable bulk push"',
        'readme = "README.md"', f'requires-python = "{project["requires-python"]}"',
        f"dependencies = {toml_list(pinned(project))}", "",
        "[project.optional-dependencies]",
        *(f"{extra} = {toml_list(pinned(project, names))}" for extra, names in EXTRAS.items()), "",
        "[project.scripts]", 'contactgate = "connectors.cli:main"', "",
        "[tool.setuptools]", f"packages = {toml_list(PACKAGES)}", "",
        "[tool.setuptools.package-data]",
        *(f"{package} = {toml_list(patterns)}" for package, patterns in PACKAGE_DATA.items()), "",
    ])


def stage(directory: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.state", "*.rejects.csv")
    for package, source in PACKAGES.items():
        shutil.copytree(ROOT / source, directory / package, ignore=ignore)
    shutil.copy(HERE / "README.md", directory / "README.md")
    (directory / "pyproject.toml").write_text(pyproject(project))


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="contactgate-client-") as staging:
        stage(Path(staging))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out), staging], check=True)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return out / f"contactgate_client-{project['version']}-py3-none-any.whl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
