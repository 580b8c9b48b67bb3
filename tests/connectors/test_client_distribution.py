"""The contactgate-client distribution (packaging/client/build.py): a wheel holding the SDK, mappings
and push with the shared wire and schema packages, needing none of the gateway's server, that works
installed on its own against a real gateway."""

from __future__ import annotations

import email
import importlib.util
import json
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_DEPENDENCIES = {"flask", "flask-wtf", "sqlalchemy", "alembic", "psycopg", "gunicorn", "redis", "h11",
                       "argon2-cffi", "pyotp", "qrcode", "rapidfuzz", "jellyfish"}
# (python-stdnum is the client's too since issue 28: a mapping's nhs_number and pupil_number transforms)
pytestmark = pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("client_build", ROOT / "packaging" / "client" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.build(tmp_path_factory.mktemp("dist"))


def _requirement_name(requirement: str) -> str:
    for stop in "[=<>!~ ;":
        requirement = requirement.split(stop)[0]
    return requirement.lower()


def test_the_wheel_holds_the_connecting_side_and_none_of_the_server(wheel, gateway):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(next(n for n in names if n.endswith("/METADATA"))))
        entry_points = archive.read(next(n for n in names if n.endswith("/entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names} == {"connectors", "contactgate_wire", "contactgate_schemas",
                                                 wheel.name.split("-py3")[0] + ".dist-info"}
    assert {"contactgate_schemas/contactgate.xsd", "contactgate_schemas/contactgate.wsdl",
            "connectors/client.py", "connectors/results.py", "contactgate_wire/wsse.py",
            "connectors/samples/la_case_management.yaml"} <= set(names)
    listed = metadata.get_all("Requires-Dist")
    required = [r for r in listed if "extra ==" not in r]
    assert {_requirement_name(r) for r in required} & SERVER_DEPENDENCIES == set()
    # SQLAlchemy only as the sql extra (push --sql), for an organisation that reads its own database
    assert {_requirement_name(r.split(";")[0]) for r in listed if "extra ==" in r} == {"sqlalchemy"}
    assert [r.split(";")[1].strip() for r in listed if "extra ==" in r] == ['extra == "sql"']
    pins = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert set(required) <= pins  # the same versions, pinned in one place
    assert "contactgate = connectors.cli:main" in entry_points


def test_installed_alone_it_calls_the_gateway_with_a_certificate_a_key_and_the_url(wheel, gateway, tmp_path):
    """Installed into an empty directory and run by an interpreter that sees only that directory and
    the third-party libraries (not this checkout, not the gateway's editable install)."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    directory = gateway.certs["la"]
    script = f"""
import json, sys
sys.path[:0] = [{str(target)!r}, {sysconfig.get_paths()["purelib"]!r}]
from connectors.client import GatewayClient
from connectors.results import PingAnswer
client = GatewayClient({gateway.url!r}, cert={str(directory / "cert.pem")!r}, key={str(directory / "key.pem")!r})
answer = client.ping(user_id="it", role="onboarding")
try:
    import gateway
    gateway_importable = True
except ModuleNotFoundError:
    gateway_importable = False
import connectors, contactgate_wire
from connectors import cli
print(json.dumps({{"organisation": answer.organisation, "typed": isinstance(answer, PingAnswer),
                  "gateway_importable": gateway_importable,
                  "from": [connectors.__file__, contactgate_wire.__file__],
                  "commands": sorted(cli.main.commands)}}))
"""
    # -S: no site-packages processing, so no .pth (the checkout's editable install) is seen; -I: no
    # current directory, no PYTHONPATH.
    run = subprocess.run([sys.executable, "-S", "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["organisation"] == "LA" and seen["typed"] and not seen["gateway_importable"]
    assert all(path.startswith(str(target)) for path in seen["from"])
    assert seen["commands"] == ["csr", "load-prepare", "mapping", "push", "unbundle", "wsdl"]  # the connecting side's commands (client README)
