"""The backup archive: one file, encrypted and authenticated under a backup key the operator holds.

Layout (every integer big-endian)::

    MAGIC (12 bytes)  header length (4)  header (JSON, at most MAX_HEADER bytes)
    chunk*            each: length (4)  nonce (12)  AES-256-GCM ciphertext and tag

The header, in clear, says only what is needed to open the rest: the format, the backup's id and
time, how the key-encryption key is derived from the backup key (HKDF-SHA256 of a key file, or
scrypt of a passphrase, with a random salt) and the archive's content key wrapped (AES-GCM) under
it. Each chunk is sealed under the content key with associated data = SHA-256(header) | chunk
index | a last-chunk flag, so a changed header, a changed, reordered, dropped or added chunk, and a
cut tail are all refused. Nothing is believed before it has been authenticated: `open_archive`
decrypts every chunk (bounded sizes) before the members are parsed.

The plaintext is a sequence of members, each ``name length (2) | name | size (8) | bytes``; the
first is ``manifest.json``. Member names are checked by the caller against what it expects; none
is ever used as a path as it stands.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway import files

MAGIC = b"CONTACTGATE\x01"
FORMAT = 1
MAX_HEADER = 16 * 1024
CHUNK = 1024 * 1024
MAX_CHUNK = CHUNK + 16
MAX_MEMBERS = 512
MAX_NAME = 255
MAX_MANIFEST = 1024 * 1024
KEY_FILE_MIN, KEY_FILE_MAX = 32, 4096
PASSPHRASE_MIN = 12
SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
_WRAP_AAD = b"contactgate backup content key v1"


class ArchiveError(Exception):
    """The archive cannot be used; ``kind`` says why: not-an-archive, wrong-key, altered, malformed."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class BackupKeyError(Exception):
    """The backup key given cannot be used (missing, too short, readable by others)."""


@dataclass(frozen=True)
class BackupKey:
    """What the operator holds: the bytes of a key file, or a passphrase."""

    secret: bytes
    kind: str  # "file" or "passphrase"

    @classmethod
    def from_file(cls, path: Path) -> "BackupKey":
        try:
            loose = files.loose_mode(path)
        except FileNotFoundError:
            raise BackupKeyError(f"no backup key file at {path}") from None
        if loose is not None:
            raise BackupKeyError(f"the backup key file {path} is readable by others (mode {loose:o}): "
                                 f"run `chmod 600 {path}`")
        data = path.read_bytes()
        if not KEY_FILE_MIN <= len(data) <= KEY_FILE_MAX:
            raise BackupKeyError(f"the backup key file {path} must hold {KEY_FILE_MIN} to {KEY_FILE_MAX} bytes "
                                 f"(make one with `head -c 32 /dev/urandom > FILE`)")
        return cls(data, "file")

    @classmethod
    def from_passphrase(cls, text: str) -> "BackupKey":
        text = text.rstrip("\r\n")
        if len(text) < PASSPHRASE_MIN:
            raise BackupKeyError(f"a backup passphrase has at least {PASSPHRASE_MIN} characters")
        return cls(text.encode("utf-8"), "passphrase")

    def kek(self, kdf: dict) -> bytes:
        """The key-encryption key for the header's ``kdf`` description."""
        salt = _unb64(kdf["salt"])
        if kdf["kind"] != self.kind:
            raise ArchiveError("wrong-key", f"this archive was made with a backup {kdf['kind'].replace('file', 'key file')}, "
                                            f"not a {self.kind.replace('file', 'key file')}")
        if self.kind == "file":
            return HKDF(hashes.SHA256(), 32, salt, b"contactgate backup kek").derive(self.secret)
        return Scrypt(salt, 32, n=SCRYPT["n"], r=SCRYPT["r"], p=SCRYPT["p"]).derive(self.secret)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


# ---- writing ---------------------------------------------------------------------------------------

class ArchiveWriter:
    """Writes members into an encrypted archive, a CHUNK of plaintext at a time."""

    def __init__(self, out: BinaryIO, key: BackupKey, backup_id: str, created: str):
        salt = secrets.token_bytes(16)
        kdf = {"kind": key.kind, "salt": _b64(salt), **(SCRYPT if key.kind == "passphrase" else {})}
        content_key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(12)
        wrapped = AESGCM(key.kek(kdf)).encrypt(nonce, content_key, _WRAP_AAD)
        header = json.dumps({"format": FORMAT, "id": backup_id, "created": created, "kdf": kdf,
                             "content_key": _b64(nonce + wrapped), "chunk": CHUNK},
                            sort_keys=True, separators=(",", ":")).encode("ascii")
        out.write(MAGIC + struct.pack(">I", len(header)) + header)
        self._out = out
        self._aead = AESGCM(content_key)
        self._header_digest = hashlib.sha256(header).digest()
        self._buffer = bytearray()
        self._index = 0
        self._names: set[str] = set()

    def add(self, name: str, data: bytes) -> None:
        self.add_stream(name, len(data), iter([data]))

    def add_file(self, name: str, path: Path) -> None:
        size = path.stat().st_size
        with path.open("rb") as f:
            self.add_stream(name, size, iter(lambda: f.read(CHUNK), b""))

    def add_stream(self, name: str, size: int, parts: Iterator[bytes]) -> None:
        raw = name.encode("utf-8")
        if not raw or len(raw) > MAX_NAME or name in self._names or len(self._names) >= MAX_MEMBERS:
            raise ValueError(f"bad or repeated member name {name!r}")
        self._names.add(name)
        self._write(struct.pack(">H", len(raw)) + raw + struct.pack(">Q", size))
        written = 0
        for part in parts:
            written += len(part)
            if written > size:
                raise ValueError(f"{name} grew while it was archived")
            self._write(part)
        if written != size:
            raise ValueError(f"{name} shrank while it was archived")

    def _write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep one chunk back: the last one is sealed as the last
            self._seal(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]

    def _seal(self, plaintext: bytes, last: bool) -> None:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext, self._aad(self._index, last))
        self._out.write(struct.pack(">I", len(sealed)) + nonce + sealed)
        self._index += 1

    def _aad(self, index: int, last: bool) -> bytes:
        return self._header_digest + struct.pack(">QB", index, 1 if last else 0)

    def close(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()


# ---- reading ---------------------------------------------------------------------------------------

def read_header(f: BinaryIO) -> tuple[dict, bytes]:
    """The archive's clear header (bounded), or ArchiveError("not-an-archive")."""
    start = f.read(len(MAGIC) + 4)
    if len(start) < len(MAGIC) + 4 or not start.startswith(MAGIC):
        raise ArchiveError("not-an-archive", "not a ContactGate backup archive")
    (length,) = struct.unpack(">I", start[len(MAGIC):])
    if length > MAX_HEADER:
        raise ArchiveError("not-an-archive", "not a ContactGate backup archive (its header is too long)")
    raw = f.read(length)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("format")
        kdf = header["kdf"]
        if not isinstance(kdf, dict) or kdf.get("kind") not in ("file", "passphrase") or (
                kdf["kind"] == "passphrase" and {k: kdf.get(k) for k in SCRYPT} != SCRYPT):
            raise ValueError("kdf")
        for name in ("id", "created", "content_key"):
            if not isinstance(header.get(name), str) or len(header[name]) > 200:
                raise ValueError(name)
    except (ValueError, KeyError, TypeError):
        raise ArchiveError("not-an-archive", "not a ContactGate backup archive this version can read "
                                             "(its header is malformed)") from None
    return header, raw


def decrypt_to(source: Path, key: BackupKey, out: BinaryIO) -> dict:
    """Authenticate and decrypt the whole archive into ``out`` (a private file); returns the header.
    Nothing of the plaintext may be believed unless this returns."""
    with source.open("rb") as f:
        header, raw = read_header(f)
        try:
            blob = _unb64(header["content_key"])
            content_key = AESGCM(key.kek(header["kdf"])).decrypt(blob[:12], blob[12:], _WRAP_AAD)
        except (InvalidTag, ValueError):
            raise ArchiveError("wrong-key", "this archive was not made with this backup key (a foreign "
                                            "archive, or the wrong key file or passphrase)") from None
        aead = AESGCM(content_key)
        digest = hashlib.sha256(raw).digest()
        index = 0
        while True:
            prefix = f.read(4)
            if len(prefix) < 4:
                raise ArchiveError("altered", "the archive is cut short (its last part is missing)")
            (length,) = struct.unpack(">I", prefix)
            if not 16 <= length <= MAX_CHUNK:
                raise ArchiveError("altered", f"the archive is altered (part {index} has an impossible length)")
            body = f.read(12 + length)
            if len(body) < 12 + length:
                raise ArchiveError("altered", "the archive is cut short")
            plain = last = None
            for flag in (False, True):
                try:
                    plain = aead.decrypt(body[:12], body[12:], digest + struct.pack(">QB", index, int(flag)))
                    last = flag
                    break
                except InvalidTag:
                    continue
            if plain is None:
                raise ArchiveError("altered", f"the archive is altered (part {index} does not authenticate)")
            out.write(plain)
            index += 1
            if last:
                if f.read(1):
                    raise ArchiveError("altered", "the archive is altered (data after its last part)")
                return header


def members(plain: BinaryIO) -> Iterator[tuple[str, int, BinaryIO]]:
    """The members of a decrypted archive: (name, size, the file positioned at its bytes). The
    caller reads at most ``size`` bytes before taking the next."""
    end = plain.seek(0, os.SEEK_END)
    plain.seek(0)
    for _ in range(MAX_MEMBERS + 1):
        head = plain.read(2)
        if not head:
            return
        if len(head) < 2:
            raise ArchiveError("malformed", "the archive's contents are malformed")
        (length,) = struct.unpack(">H", head)
        raw = plain.read(length)
        size_raw = plain.read(8)
        if not 0 < length <= MAX_NAME or len(raw) < length or len(size_raw) < 8:
            raise ArchiveError("malformed", "the archive's contents are malformed")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError("malformed", "the archive's contents are malformed (a member name)") from None
        (size,) = struct.unpack(">Q", size_raw)
        body_at = plain.tell()
        if body_at + size > end:
            raise ArchiveError("malformed", f"the archive's member {name[:60]!r} is cut short")
        yield name, size, plain
        plain.seek(body_at + size)
    raise ArchiveError("malformed", "the archive holds too many members")


def read_manifest(plain: BinaryIO) -> tuple[dict, dict[str, tuple[int, int]]]:
    """The manifest (bounded JSON) and where every member's bytes are: name -> (offset, size)."""
    found: dict[str, tuple[int, int]] = {}
    manifest = None
    for name, size, f in members(plain):
        if name in found:
            raise ArchiveError("malformed", f"the archive holds {name[:60]!r} twice")
        found[name] = (f.tell(), size)
        if manifest is None:
            if name != "manifest.json" or size > MAX_MANIFEST:
                raise ArchiveError("malformed", "the archive does not start with its manifest")
            try:
                manifest = json.loads(f.read(size))
            except ValueError:
                raise ArchiveError("malformed", "the archive's manifest is not JSON") from None
            if not isinstance(manifest, dict):
                raise ArchiveError("malformed", "the archive's manifest is malformed")
    if manifest is None:
        raise ArchiveError("malformed", "the archive is empty")
    return manifest, found


def sha256_of(plain: BinaryIO, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    plain.seek(offset)
    left = size
    while left:
        part = plain.read(min(CHUNK, left))
        if not part:
            break
        digest.update(part)
        left -= len(part)
    return digest.hexdigest()
