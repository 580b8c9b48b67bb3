"""The systemd units in deploy/ are valid for systemd and call the CLI as it really is."""

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main as cli_main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted(DEPLOY.glob("*.service")) + sorted(DEPLOY.glob("*.timer"))
INSTALLED_CLI = "/opt/contactgate/bin/contactgate"


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def _contactgate_commands():
    for path in DEPLOY.glob("*.service"):
        service = _unit(path)["Service"]
        for key in ("ExecStartPre", "ExecStart"):
            if key in service and service[key].startswith(INSTALLED_CLI):
                yield pytest.param(shlex.split(service[key])[1:], id=f"{path.name}:{key}")


@pytest.mark.parametrize("args", list(_contactgate_commands()))
def test_unit_commands_are_real_cli_commands(args):
    """Each contactgate command line in a unit parses: click rejects an unknown command or option
    (exit 2) before it honours the trailing --help."""
    result = CliRunner().invoke(cli_main, [*args, "--help"])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    """`systemd-analyze verify`, with the install paths pointed at this checkout's CLI."""
    env_file = tmp_path / "contactgate.env"
    env_file.write_text("CONTACTGATE_HOME=/tmp\n")
    cli = Path(sys.executable).with_name("contactgate")
    for source in UNITS:
        text = (source.read_text().replace(INSTALLED_CLI, str(cli))
                .replace("/etc/contactgate/contactgate.env", str(env_file)))
        (tmp_path / source.name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit.name)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if unit.stem in line or "contactgate" in line]
    assert result.returncode == 0 and not problems, result.stderr


def _executables():
    for path in DEPLOY.glob("*.service"):
        service = _unit(path)["Service"]
        for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop"):
            if key in service:
                yield pytest.param(shlex.split(service[key])[0].lstrip("-@:+!"), id=f"{path.name}:{key}")


@pytest.mark.parametrize("executable", list(_executables()))
def test_unit_commands_name_programs_that_exist(executable):
    """Every command a unit runs is an absolute path to a program (the installed CLI, where this
    checkout's stands in for it)."""
    path = Path(executable)
    if executable == INSTALLED_CLI:
        path = Path(sys.executable).with_name("contactgate")
    assert path.is_absolute() and path.exists(), executable


def test_the_crl_timer_renews_the_crl_well_before_it_lapses():
    """contactgate-crl.timer runs `cert crl` daily; the CRL is valid CONTACTGATE_CRL_DAYS (default
    30), so a renewal or two can fail, or a copy be late, without a client being refused."""
    from gateway.config import Settings

    timer = _unit(DEPLOY / "contactgate-crl.timer")["Timer"]
    assert timer["OnCalendar"] == "daily" and timer["Persistent"] == "true"
    renewals_before_it_lapses = Settings.__dataclass_fields__["crl_days"].default / 1  # one a day
    assert renewals_before_it_lapses >= 7
    service = _unit(DEPLOY / "contactgate-crl.service")["Service"]
    assert shlex.split(service["ExecStart"])[1:] == ["cert", "crl", "--quiet"]
    assert service["ReadWritePaths"] == "/var/lib/contactgate"  # it rewrites ca/crl.pem and tls/client-cas.pem there


def _cg_in_a_sandbox(tmp_path, env_text: str, call: str, caller_env: dict | None = None):
    """deploy/cg run as root in a private mount namespace with /etc and /opt overlaid, so the
    `useradd` and the stand-in CLI (which prints its user, arguments and environment) vanish with it."""
    env_file = tmp_path / "contactgate.env"
    env_file.write_text(env_text)
    env_file.chmod(0o600)
    lines = ["set -e", "mount --make-rprivate /"]
    for i, where in enumerate(("/etc", "/opt")):
        (tmp_path / f"u{i}").mkdir()
        (tmp_path / f"w{i}").mkdir()
        lines.append(f"mount -t overlay overlay -o lowerdir={where},upperdir={tmp_path}/u{i},workdir={tmp_path}/w{i} {where}")
    lines += ["useradd --system --no-create-home --shell /usr/sbin/nologin contactgate",
              "mkdir -p /opt/contactgate/bin",
              "printf '#!/bin/sh\\nid -un\\necho \"$@\"\\nenv | sort\\n' > /opt/contactgate/bin/contactgate",
              "chmod 755 /opt/contactgate/bin/contactgate",
              f"export CONTACTGATE_ENV_FILE={env_file}", call.replace("cg ", f"bash {DEPLOY / 'cg'} ", 1)]
    return subprocess.run(["unshare", "--mount", "sh", "-c", "\n".join(lines)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(caller_env or {})})


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare (CI has both)")
def test_cg_reads_the_shipped_environment_file_as_systemd_does(tmp_path):
    """deploy/cg runs the CLI as the contactgate user with the environment file's settings, taken
    literally: the shipped example's comment lines are skipped (`env $(cat … | xargs)` broke on them),
    a `$` in a value is not expanded, spaces, a CR and quotes around a value are dropped as systemd
    drops them; nothing of the caller's environment reaches the CLI."""
    text = (DEPLOY / "contactgate.env.example").read_text().replace("CHANGE-ME", "pa$$word")
    text += '  # an indented comment\r\n  CONTACTGATE_NODES="1"  \r\n'
    result = _cg_in_a_sandbox(tmp_path, text, "cg audit verify", {"PYTHONPATH": "/tmp/x", "CONTACTGATE_SESSION": "/tmp/s"})
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[:2] == ["contactgate", "audit verify"], result.stdout
    assert sorted(line for line in out[2:] if line.startswith("CONTACTGATE_")) == [
        "CONTACTGATE_DATABASE_URL=postgresql+psycopg://contactgate:pa$$word@db.internal:5432/contactgate",
        "CONTACTGATE_HOME=/var/lib/contactgate", "CONTACTGATE_NODES=1",
        "CONTACTGATE_REDIS_URL=redis://redis.internal:6379/0",
        "CONTACTGATE_SESSION=/var/lib/contactgate/.config/contactgate/root.session.json"], result.stdout
    assert not [line for line in out[2:] if line.startswith(("PYTHONPATH=", "LD_", "PATH=/tmp"))], result.stdout


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare (CI has both)")
@pytest.mark.parametrize("line", ["PATH=/tmp/x:/usr/bin:/bin", "LD_PRELOAD=/tmp/x.so", "PYTHONPATH=/tmp/x",
                                  "CONTACTGATE_SESSION=/var/lib/contactgate/.config/contactgate/t.senior.session.json"])
def test_cg_refuses_an_environment_file_line_that_is_not_a_setting(tmp_path, line):
    """Only CONTACTGATE_* settings: a PATH, LD_PRELOAD or PYTHONPATH line would run code (as root,
    through the runuser found on PATH), a session line would borrow another officer's session."""
    result = _cg_in_a_sandbox(tmp_path, f"CONTACTGATE_HOME=/var/lib/contactgate\n{line}\n", "cg audit verify")
    assert result.returncode == 2 and "contactgate" not in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare (CI has both)")
def test_cg_ignores_the_callers_path_and_session_and_names_the_session_after_sudo_user(tmp_path):
    """A fake runuser first on the caller's PATH is not run; the session file is the sudo user's own,
    whatever CONTACTGATE_SESSION the caller passes (one officer cannot approve as another)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "runuser").write_text("#!/bin/sh\necho FAKE RUNUSER\n")
    (fake / "runuser").chmod(0o755)
    (fake / "id").write_text("#!/bin/sh\necho FAKE ID\n")
    (fake / "id").chmod(0o755)
    call = f"PATH={fake}:$PATH SUDO_USER=sam CONTACTGATE_SESSION=/var/lib/contactgate/.config/contactgate/tess.session.json cg org list"
    # under sudo, cg reads /etc/contactgate/contactgate.env whatever CONTACTGATE_ENV_FILE says
    install = "mkdir -p /etc/contactgate && install -m 0600 \"$CONTACTGATE_ENV_FILE\" /etc/contactgate/contactgate.env\n"
    result = _cg_in_a_sandbox(tmp_path, "CONTACTGATE_HOME=/var/lib/contactgate\n", install + call)
    assert result.returncode == 0 and "FAKE" not in result.stdout, result.stdout + result.stderr
    assert "CONTACTGATE_SESSION=/var/lib/contactgate/.config/contactgate/sam.session.json" in result.stdout.splitlines()
    assert f"PATH={fake}" not in result.stdout
