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
                as_nobody: bool = False, timeout: float = 120) -> Run:
    command = [CONTACTGATE, *args]
    if as_nobody:
        command = [SETPRIV, *UNPRIVILEGED, *command]
    proc = subprocess.run(
        command, env=clean_env() if env is None else env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


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
