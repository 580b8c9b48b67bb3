"""Scheduled, unattended pushes (`contactgate push --folder`, `--sftp`; the systemd timer in deploy/).

- **One run at a time** per state directory: `run_lock` takes ``STATE_DIR/push.lock`` (fcntl.flock,
  released by the kernel when the process ends, however it ends); a second run is refused
  (`Locked`), saying which process holds it.
- **A drop** is where extracts arrive: a local folder (`FolderDrop`) or an SFTP server's folder
  (`SftpDrop`). Its new files are taken in name order: regular files, not hidden (``.name``) and not
  still being written (``*.part``, ``*.tmp``, ``*.filepart``: write under such a name, then rename),
  matching the pattern. Each is pushed alone and, only when its push has finished, moved into
  ``done/`` (exit 0 or 1: sent, some rows perhaps rejected) or ``failed/`` (2: the file cannot be
  used), its rejects file beside it. A push that could not run (3) leaves the file where it is and
  stops the run: the next run takes it first (a later file is a later delta). ``done/`` and
  ``failed/`` are never read again; a name already in them gets the time of the move added.
- **SFTP**: paramiko, key-based sign-in only (no password, no agent), and the server's host key
  must be in the operator's known_hosts file (never accepted on first use). A file is downloaded
  to a private temporary folder, pushed, deleted here, and moved on the server.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import fnmatch
import os
import stat
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

IN_PROGRESS = ("*.part", "*.tmp", "*.filepart")
LOCK_NAME = "push.lock"


class Locked(Exception):
    """Another run holds the state directory's lock."""


class DropError(Exception):
    """The drop cannot be read (an SFTP server refused, a folder missing): the run could not run."""


class RunLock:
    """``STATE_DIR/push.lock``, held (flock) for the whole run."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / LOCK_NAME
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip()
            self._file.close()
            raise Locked(f"another run holds {self.path}" + (f" ({holder})" if holder else "")
                         + ": this run stops, changing nothing") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}, since {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.seek(0)
            self._file.truncate()
            self._file.close()  # closing releases the lock


def _wanted(name: str, pattern: str) -> bool:
    return (not name.startswith(".") and not any(fnmatch.fnmatch(name, p) for p in IN_PROGRESS)
            and fnmatch.fnmatch(name, pattern))


def outcome_folder(code: int) -> str | None:
    """Where a file goes after its push's exit code: done/, failed/, or nowhere (could not run)."""
    return {0: "done", 1: "done", 2: "failed"}.get(code)


def _free_name(taken, name: str) -> str:
    if name not in taken:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}.{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%fZ}{dot}{suffix}"


class FolderDrop:
    def __init__(self, folder: Path, pattern: str = "*"):
        self.folder, self.pattern = Path(folder).resolve(), pattern
        self.description = str(self.folder)

    def __enter__(self):
        if not self.folder.is_dir():
            raise DropError(f"{self.folder}: no such folder")
        return self

    def __exit__(self, *exc) -> None:
        pass

    def new_files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.is_file() and not p.is_symlink()
                      and _wanted(p.name, self.pattern))

    def source_path(self, name: str) -> Path:
        """Where the file is named for its state (the source: digits as #)."""
        return self.folder / name

    def fetch(self, name: str, work: Path) -> Path:
        return self.folder / name

    def finish(self, name: str, code: int, rejects: Path | None) -> str | None:
        where = outcome_folder(code)
        if where is None:
            return None
        target = self.folder / where
        target.mkdir(exist_ok=True)
        moved = _free_name({p.name for p in target.iterdir()}, name)
        os.replace(self.folder / name, target / moved)
        if rejects is not None and rejects.exists():
            os.replace(rejects, target / f"{moved}.rejects.csv")
        return str(target / moved)


def parse_sftp_url(url: str) -> tuple[str, int, str, str]:
    """(host, port, user, folder) of ``sftp://user@host[:port]/folder``."""
    parts = urlsplit(url)
    if parts.scheme != "sftp" or not parts.hostname or not parts.username or parts.password is not None:
        raise ValueError(f"{url!r}: give sftp://USER@HOST[:PORT]/FOLDER (no password: the key signs in)")
    return parts.hostname, parts.port or 22, unquote(parts.username), unquote(parts.path) or "."


class SftpDrop:
    def __init__(self, url: str, known_hosts: Path, key: Path, pattern: str = "*", timeout: float = 30):
        self.host, self.port, self.user, self.folder = parse_sftp_url(url)
        self.known_hosts, self.key, self.pattern, self.timeout = Path(known_hosts), Path(key), pattern, timeout
        self.description = f"sftp://{self.user}@{self.host}:{self.port}{self.folder}"
        self._ssh = self._sftp = None

    def __enter__(self):
        import paramiko

        ssh = paramiko.SSHClient()
        try:
            ssh.load_host_keys(str(self.known_hosts))  # the operator's file only, not ~/.ssh/known_hosts
        except OSError as exc:
            raise DropError(f"{self.known_hosts}: cannot be read ({exc.strerror})") from None
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())  # never accepted on first use
        try:
            ssh.connect(self.host, port=self.port, username=self.user, key_filename=str(self.key),
                        look_for_keys=False, allow_agent=False, timeout=self.timeout,
                        banner_timeout=self.timeout, auth_timeout=self.timeout)
            self._sftp = ssh.open_sftp()
        except paramiko.BadHostKeyException:
            ssh.close()
            raise DropError(f"{self.description}: the server's host key is not the one in {self.known_hosts}: "
                            f"refused (if the server's key was changed on purpose, put the new one there)") from None
        except paramiko.SSHException as exc:
            ssh.close()
            if "known_hosts" in str(exc) or "not found in" in str(exc):
                raise DropError(f"{self.description}: the server's host key is not in {self.known_hosts}: refused "
                                f"(host keys are never accepted on first use)") from None
            raise DropError(f"{self.description}: {exc}") from None
        except OSError as exc:
            ssh.close()
            raise DropError(f"{self.description}: cannot connect ({exc})") from None
        self._ssh = ssh
        return self

    def __exit__(self, *exc) -> None:
        if self._ssh is not None:
            self._ssh.close()

    def _path(self, *names: str) -> str:
        return "/".join([self.folder.rstrip("/") or "", *names]) if self.folder != "." else "/".join(names)

    def new_files(self) -> list[str]:
        try:
            entries = self._sftp.listdir_attr(self.folder)
        except OSError as exc:
            raise DropError(f"{self.description}: cannot be listed ({exc})") from None
        return sorted(e.filename for e in entries if stat.S_ISREG(e.st_mode or 0) and _wanted(e.filename, self.pattern))

    def source_path(self, name: str) -> str:
        return f"{self.description}/{name}"

    def fetch(self, name: str, work: Path) -> Path:
        local = work / name
        size = self._sftp.stat(self._path(name)).st_size
        self._sftp.get(self._path(name), str(local))
        if local.stat().st_size != size:
            raise DropError(f"{self.description}/{name}: downloaded {local.stat().st_size} bytes of {size}")
        return local

    def finish(self, name: str, code: int, rejects: Path | None) -> str | None:
        where = outcome_folder(code)
        if where is None:
            return None
        target = self._path(where)
        try:
            self._sftp.mkdir(target, mode=0o700)
        except OSError:
            pass  # already there
        moved = _free_name(set(self._sftp.listdir(target)), name)
        self._sftp.posix_rename(self._path(name), f"{target}/{moved}")
        if rejects is not None and rejects.exists():
            self._sftp.put(str(rejects), f"{target}/{moved}.rejects.csv")
        return f"{self.description}/{where}/{moved}"


def work_folder(state_dir: Path) -> tempfile.TemporaryDirectory:
    """A private folder (0700) for downloaded extracts and rejects being written, under the state
    directory (the organisation's, not /tmp)."""
    return tempfile.TemporaryDirectory(prefix="run-", dir=state_dir)

