"""Run the real `contactgate` console script the way an operator does: a subprocess with a clean
environment (no CONTACTGATE_* variables leaking in from the test run), an optional umask, and
optionally as an unprivileged user (tests run as root, where file modes do not stop writes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CONTACTGATE = str(Path(sys.executable).parent / "contactgate")
SETPRIV = shutil.which("setpriv")
UNPRIVILEGED = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@dataclass
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return (f"$ contactgate {' '.join(self.args)}\nexit {self.code}\n--- stdout\n{self.out}"
                f"--- stderr\n{self.err}")

    def assert_clean_failure(self, code: int, *needles: str) -> None:
        """Exit ``code``, one line on stderr that says what to do, and no traceback."""
        assert self.code == code, self
        assert "Traceback" not in self.err + self.out, self
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, self
        for needle in needles:
            assert needle in lines[0], self


def clean_env(**settings: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTGATE_")}
    env.update({k: v for k, v in settings.items() if v is not None})
    return env


def contactgate(*args: str, env: dict | None = None, cwd: Path | None = None, umask: int | None = None,
                as_nobody: bool = False, timeout: float = 120, input: str | None = None) -> Run:
    command = [CONTACTGATE, *args]
    if as_nobody:
        command = [SETPRIV, *UNPRIVILEGED, *command]
    proc = subprocess.run(
        command, env=clean_env() if env is None else env, cwd=cwd, capture_output=True, text=True, input=input,
        timeout=timeout, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def invoke(*args: str, env: dict | None = None, cwd: Path | None = None, umask: int | None = None,
           input: str | None = None) -> Run:
    """The same command through click in this process (gateway.cli.main, which the script runs, with
    its entry-point commands), as ``contactgate`` would run it with ``env``'s CONTACTGATE_* settings
    and no others: without a new interpreter's 1-2 s of start-up. For a test whose point is not the
    process boundary; what only the script shows (its exit codes as a shell sees them, signals,
    another user) stays with ``contactgate``."""
    import gc
    import traceback

    from click.testing import CliRunner

    from gateway.cli import main

    settings = {k: v for k, v in (clean_env() if env is None else env).items() if k.startswith("CONTACTGATE_")}
    runner_env = {k: None for k in os.environ if k.startswith("CONTACTGATE_")} | settings
    previous_dir, previous_umask = os.getcwd(), None
    try:
        if cwd is not None:
            os.chdir(cwd)
        if umask is not None:
            previous_umask = os.umask(umask)
        result = CliRunner().invoke(main, list(args), env=runner_env, input=input, prog_name="contactgate")
        err = result.stderr
        if result.exc_info is not None and not isinstance(result.exception, SystemExit):
            err += "".join(traceback.format_exception(*result.exc_info))  # shown by Run's failure message
        run = Run(tuple(args), result.exit_code, result.stdout, err)
        del result  # its exc_info (even a SystemExit's) holds the command's frames, and their engines
    finally:
        if previous_umask is not None:
            os.umask(previous_umask)
        os.chdir(previous_dir)
    gc.collect()  # the command's engines and their connections closed now, as at a process's end: no
    #               SQLite database is left open (with its -wal and -shm) by this process after a command
    return run


def tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` (relative) with its mode bits: to show that nothing was created."""
    if not root.exists():
        return {}
    found = {".": root.stat().st_mode & 0o7777}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = path.lstat().st_mode & 0o7777
    return found


# ---- an officer, signed in (officer commands refuse without a session) ---------------------------------

OFFICER = "operator-1"
SECOND = "operator-2"  # for what needs a second officer
_USED_STEPS: dict[str, int] = {}


def officers_file(directory: Path) -> Path:
    """A throwaway first officer for `init --officers` (every role), made at test time."""
    import json
    import secrets

    import pyotp

    path = directory / "officers.json"
    if not path.exists():
        path.write_text(json.dumps([{"id": officer_id, "name": f"Operator {officer_id[-1]}",
                                     "password": secrets.token_urlsafe(16),
                                     "roles": ["senior_officer", "officer", "data_quality", "auditor"],
                                     "totp_secret": pyotp.random_base32(32)} for officer_id in (OFFICER, SECOND)]))
        path.chmod(0o600)
    return path


def init_and_sign_in(env: dict, directory: Path, umask: int | None = None, *, in_process: bool = False) -> dict:
    """`contactgate init --officers ...` then `login`: the environment, with CONTACTGATE_SESSION, of a
    signed-in officer holding every role. ``in_process``: both through click in this process (invoke),
    for a test that needs a home, not these two commands' process."""
    officers = officers_file(directory)
    run = (invoke if in_process else contactgate)("init", "--officers", str(officers), env=env, umask=umask)
    assert run.code == 0, run
    return sign_in(env, directory, umask=umask, in_process=in_process)


def sign_in(env: dict, directory: Path, umask: int | None = None, officer: str = OFFICER, *,
            in_process: bool = False) -> dict:
    import json
    import time

    import pyotp

    entry = next(e for e in json.loads(officers_file(directory).read_text()) if e["id"] == officer)
    step = max(int(time.time()) // 30, _USED_STEPS.get(entry["totp_secret"], -1) + 1)
    while step > int(time.time()) // 30 + 1:
        time.sleep(0.5)
    _USED_STEPS[entry["totp_secret"]] = step
    signed = {**env, "CONTACTGATE_SESSION": str(directory / f"session-{officer}.json")}
    run = (invoke if in_process else contactgate)(
        "login", "--officer", entry["id"], "--password-stdin", "--code", pyotp.TOTP(entry["totp_secret"]).at(step * 30),
        env=signed, umask=umask, input=entry["password"] + "\n")
    assert run.code == 0, run
    return signed
