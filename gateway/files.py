"""Files only the gateway can read (DESIGN.md "Files are closed").

Everything the gateway writes into its home — the SQLite database, keys, certificates, the audit
checkpoints, the client CA bundle, trusted CAs — is created 0600 in directories created 0700, with
the mode set explicitly: the process umask (0022 on most systems, 0000 under some service managers)
never decides it.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PUBLIC_FILE = 0o644  # certificates handed to an organisation, outside the home


def private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents 0700 (existing directories are left as they are)."""
    missing = []
    for directory in (path, *path.parents):
        if directory.exists():
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is filtered by the umask


def _write(path: Path, data: bytes, mode: int, flags: int) -> None:
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, mode)
    try:
        os.fchmod(fd, mode)  # an existing file keeps its mode through O_TRUNC; set it anyway
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
    finally:
        if fd != -1:
            os.close(fd)


def loose_mode(path: Path) -> int | None:
    """The mode of the file ``path`` if its group or others may use it (a secret that is not the
    owner's alone), else None; FileNotFoundError if there is none."""
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode if mode & 0o077 else None


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, mode 0600, replacing what was there."""
    _write(path, data, PRIVATE_FILE, os.O_TRUNC)


def append_private(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path``, created 0600 if missing."""
    _write(path, data, PRIVATE_FILE, os.O_APPEND)


def replace_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (0600) durably: a reader, a crash or a power cut at any moment
    finds the old file or the new one, whole. The bytes go to a new file beside it, which is flushed
    to the disk before it is renamed over ``path``; the directory is flushed after, so the rename
    itself is on the disk too (a rename without both can come back from a power cut as an empty or
    a missing file on common file systems)."""
    publish(stage_private(path, data), path)


def stage_private(path: Path, data: bytes) -> Path:
    """Write ``data`` (0600) to a new file beside ``path``, flushed to the disk, and return its name:
    nothing that reads ``path`` (or a pattern such as ``*.pem`` in its directory) sees it until
    `publish` renames it into place."""
    private_dir(path.parent)
    staged = path.with_name(f".{path.name}.{os.urandom(4).hex()}.new")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        if fd != -1:
            os.close(fd)
        staged.unlink(missing_ok=True)
        raise
    return staged


def publish(staged: Path, path: Path) -> None:
    """Rename a `stage_private` file over ``path`` (atomic) and flush the directory (durable); on a
    failure the staged file is removed and ``path`` is as it was."""
    try:
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a file created, renamed or removed in it) to the disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_public(path: Path, data: bytes) -> None:
    """Write ``data`` (a certificate, never a key) to ``path``, mode 0644."""
    _write(path, data, PUBLIC_FILE, os.O_TRUNC)


def create_private(path: Path) -> None:
    """Create an empty ``path`` 0600 if it does not exist yet (e.g. a SQLite database, so that SQLite,
    which creates the file 0644 less the umask and gives -wal/-shm the database's mode, keeps all
    three private)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    os.fchmod(fd, PRIVATE_FILE)
    os.close(fd)


@dataclass(frozen=True)
class LoosePath:
    """A file or directory that someone other than its owner may use."""

    path: Path
    mode: int

    @property
    def wanted(self) -> int:
        return PRIVATE_DIR if stat.S_ISDIR(self.mode) else PRIVATE_FILE

    @property
    def fix(self) -> str:
        return f"chmod {self.wanted:o} {self.path}"

    def __str__(self) -> str:
        return f"{self.path} is mode {stat.S_IMODE(self.mode):04o}"


def loose_paths(root: Path, *extra: Path) -> list[LoosePath]:
    """``root``, everything under it and each existing ``extra`` path whose group or other bits are
    set. Symbolic links are not followed (their own mode means nothing)."""
    found: list[LoosePath] = []

    def check(path: Path) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            found.append(LoosePath(path, st.st_mode))

    if root.exists():
        check(root)
        for directory, dirs, files in os.walk(root):
            for name in sorted(dirs) + sorted(files):
                check(Path(directory) / name)
    for path in extra:
        if path.exists() and not is_under(path, root):
            check(path)
    return found


def tighten(loose: list[LoosePath]) -> None:
    for item in loose:
        os.chmod(item.path, item.wanted)


def is_under(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or lies inside it."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


class ChangeWatch:
    """Whether files have changed since the last look, looking at most once every ``interval_s``:
    what the running gateway reloads without a restart (the TLS bundle, the trust anchors) uses it.
    ``paths`` is called at each look, so files added to a folder are seen too; a missing file
    counts as a state of its own."""

    def __init__(self, paths: Callable[[], Iterable], interval_s: float = 1.0):
        self._paths = paths
        self._interval_s = interval_s
        self._stamp = self._stamps()
        self._checked = time.monotonic()

    def _stamps(self) -> tuple:
        stamps = []
        for path in self._paths():
            try:
                st = os.stat(path)
                stamps.append((str(path), st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((str(path), None))
        return tuple(stamps)

    def changed(self) -> bool:
        now = time.monotonic()
        if now - self._checked < self._interval_s:
            return False
        self._checked = now
        stamp = self._stamps()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True
