"""Encryption at rest: AES-GCM sealed values and HMAC blind indexes, under keys never in the database.

A *keyring* holds data keys (AES-256-GCM, each with a short id), which one is active (new values are
sealed under it), and one index key (HMAC-SHA-256) for blind indexes. It lives in the home,
``keys/data-keys.json`` (mode 0600, written by ``contactgate init``; ``contactgate keys rotate``
adds keys), or, for deployments that inject secrets, in the environment variable
``CONTACTGATE_DATA_KEYS`` (the same JSON; then rotation is the operator's: see docs/operations.md).

A sealed value is text: ``cg1:<key id>:<base64url(nonce 12 bytes | ciphertext | tag 16 bytes)>``.
The nonce is random per value, and the associated data is the row's identity (``context``: table,
column and primary key), so a value copied into another row, or another column, fails to open.

A blind index is ``base64url(HMAC-SHA-256(index key, purpose NUL value))[:22]`` (128 bits): equal
values give equal indexes, so exact lookups and linkage blocking still work by equality, but the
database holds nothing a reader can turn back into a name, birth date or number without the key.

Keys are read once per process; a process notices a rotation (the file changed) within
RELOAD_CHECK_S, and at once when it meets a value sealed under a key it has not loaded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENV_VAR = "CONTACTGATE_DATA_KEYS"
PREFIX = "cg1:"
NONCE_BYTES = 12
BLIND_CHARS = 22  # 128 bits of the HMAC, base64url
RELOAD_CHECK_S = 2.0


class KeyringError(Exception):
    """The keyring is missing, unreadable, too open, or malformed: nothing is sealed or opened."""


class SealError(Exception):
    """A value does not open: another row's value, a tampered value, or a key that is not held."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key_id() -> str:
    return "k" + secrets.token_hex(4)


@dataclass(frozen=True)
class Keyring:
    data_keys: dict[str, bytes]  # key id -> 32 bytes
    active: str
    index_key: bytes

    @classmethod
    def generate(cls) -> Keyring:
        kid = new_key_id()
        return cls({kid: AESGCM.generate_key(bit_length=256)}, kid, secrets.token_bytes(32))

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        try:
            doc = json.loads(text)
            keys = {str(k): base64.b64decode(v, validate=True) for k, v in doc["data_keys"].items()}
            ring = cls(keys, str(doc["active"]), base64.b64decode(doc["index_key"], validate=True))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyringError(f"the data keyring is malformed ({type(exc).__name__})") from None
        if ring.active not in ring.data_keys:
            raise KeyringError("the data keyring's active key is not among its keys")
        if any(len(k) != 32 for k in ring.data_keys.values()) or len(ring.index_key) != 32:
            raise KeyringError("the data keyring holds a key that is not 32 bytes")
        if any(":" in kid or not kid for kid in ring.data_keys):
            raise KeyringError("the data keyring holds a key id with ':' or no id")
        return ring

    def to_json(self) -> str:
        return json.dumps({
            "format": 1, "active": self.active, "index_key": base64.b64encode(self.index_key).decode(),
            "data_keys": {k: base64.b64encode(v).decode() for k, v in self.data_keys.items()},
        }, indent=2, sort_keys=True) + "\n"

    def with_new_active_key(self) -> Keyring:
        kid = new_key_id()
        return Keyring({**self.data_keys, kid: AESGCM.generate_key(bit_length=256)}, kid, self.index_key)

    def without(self, kid: str) -> Keyring:
        if kid == self.active:
            raise KeyringError("the active key cannot be retired")
        return Keyring({k: v for k, v in self.data_keys.items() if k != kid}, self.active, self.index_key)


class Vault:
    """Seals, opens and blinds with one keyring; reloads it from its file when that changes."""

    def __init__(self, ring: Keyring, path: Path | None = None, stamp=None):
        self._lock = threading.Lock()
        self._path = path
        self._set(ring, stamp)
        self._checked = time.monotonic()

    def _set(self, ring: Keyring, stamp) -> None:
        self.ring = ring
        self._stamp = stamp
        self._aead = {kid: AESGCM(key) for kid, key in ring.data_keys.items()}
        self._index = hmac.new(ring.index_key, digestmod=hashlib.sha256)

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def active(self) -> str:
        self._maybe_reload()
        return self.ring.active

    def _maybe_reload(self, force: bool = False) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_CHECK_S:
            return
        with self._lock:
            self._checked = now
            stamp = _stamp(self._path)
            if stamp != self._stamp:
                self._set(read_keyring(self._path), stamp)

    def seal(self, plaintext: str | bytes, context: str) -> str:
        self._maybe_reload()
        data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
        kid = self.ring.active
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead[kid].encrypt(nonce, data, context.encode("utf-8"))
        return f"{PREFIX}{kid}:{_b64(nonce + sealed)}"

    def open_bytes(self, token: str, context: str) -> bytes:
        if not isinstance(token, str) or not token.startswith(PREFIX):
            raise SealError("not a sealed value")
        try:
            kid, body = token[len(PREFIX):].split(":", 1)
            raw = _unb64(body)
        except ValueError:
            raise SealError("a sealed value is malformed") from None
        aead = self._aead.get(kid)
        if aead is None:
            self._maybe_reload(force=True)
            aead = self._aead.get(kid)
            if aead is None:
                raise SealError(f"a value is sealed under key {kid}, which this keyring does not hold")
        if len(raw) < NONCE_BYTES + 16:
            raise SealError("a sealed value is truncated")
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode("utf-8"))
        except InvalidTag:
            raise SealError("a sealed value does not open: tampered, or moved from another row") from None

    def open(self, token: str, context: str) -> str:
        return self.open_bytes(token, context).decode("utf-8")

    def blind(self, value: str, purpose: str) -> str:
        mac = self._index.copy()
        mac.update(purpose.encode("utf-8") + b"\0" + value.encode("utf-8"))
        return _b64(mac.digest())[:BLIND_CHARS]


def key_id_of(token: str | None) -> str | None:
    if not token or not token.startswith(PREFIX):
        return None
    return token[len(PREFIX):].split(":", 1)[0]


def is_sealed(value) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _stamp(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_keyring(path: Path) -> Keyring:
    from gateway import files

    try:
        loose = files.loose_mode(path)
    except FileNotFoundError:
        raise KeyringError(f"no data keys at {path}: run `contactgate init`") from None
    if loose is not None:
        raise KeyringError(f"{path} is readable by others (mode {loose:o}): run `chmod 600 {path}`")
    return keyring_from_text(path.read_text(encoding="utf-8"), where=str(path), ca=_home_ca(path))


def _home_ca(keyring_path: Path) -> str | None:
    """The fingerprint of the CA of the home whose keyring file is ``keyring_path`` (keys/data-keys.json),
    which a keyring sealed in a token is bound to; None before the home has a CA."""
    from gateway.config import HomeLayout
    from gateway.trust import pki

    ca_cert = HomeLayout(keyring_path.parent.parent).ca_cert
    try:
        return pki.fingerprint(pki.load_cert_pem(ca_cert.read_bytes()))
    except (OSError, ValueError):
        return None


def keyring_from_text(text: str, *, where: str = "the data keyring", ca: str | None = None) -> Keyring:
    """A keyring as its file holds it: in clear (format 1, the embedded default), or sealed under the
    key-encryption key of a PKCS#11 token (format 2, gateway.security.hsm), opened in the token. With
    a key-encryption key configured, a keyring in clear is refused: nothing falls back to a file."""
    from gateway.security import hsm

    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    try:
        if hsm.is_wrapped(doc):
            return Keyring.from_json(hsm.unwrap(doc, ca=ca).decode("utf-8"))
        if hsm.kek_config() is not None:
            raise KeyringError(f"{where} is in clear, but {hsm.ENV_KEK} names a key-encryption key in the token: "
                               f"run `contactgate hsm wrap-keyring` to seal it under that key")
    except hsm.HsmError as exc:
        raise KeyringError(str(exc)) from None
    return Keyring.from_json(text)


def keyring_to_text(ring: Keyring, *, ca: str | None = None) -> str:
    """What the keyring file holds: sealed under the token's key-encryption key when one is
    configured (gateway.security.hsm), bound to the gateway whose CA fingerprint is ``ca``; else the
    keyring in clear."""
    from gateway.security import hsm

    try:
        cfg = hsm.kek_config()
        if cfg is None:
            return ring.to_json()
        return json.dumps(hsm.wrap(cfg, ring.to_json().encode("utf-8"), ca=ca), indent=2, sort_keys=True) + "\n"
    except hsm.HsmError as exc:
        raise KeyringError(str(exc)) from None


def write_keyring(path: Path, ring: Keyring) -> None:
    """Replace the keyring file atomically and durably: a reader, a crash or a power cut finds the
    old keyring or the new one, never half of one, and never a new name whose bytes were not yet on
    the disk (values sealed under a new key that a power cut then lost could never be opened)."""
    from gateway import files

    files.replace_private(path, keyring_to_text(ring, ca=_home_ca(path)).encode("utf-8"))


def for_home(path: Path) -> Vault:
    """The vault for the keyring the environment variable holds, else the home's keyring file."""
    env = os.environ.get(ENV_VAR)
    return _from_env(env) if env else load(path)


def load(path: Path) -> Vault:
    """The vault for a keyring file, read once per process (and again when the file changes)."""
    with _LOCK:
        vault = _BY_PATH.get(path)
        if vault is None:
            stamp = _stamp(path)
            vault = _BY_PATH[path] = Vault(read_keyring(path), path, stamp)
        return vault


def keyring_from_env(text: str) -> Keyring:
    """The keyring CONTACTGATE_DATA_KEYS holds, read as its file is (``keyring_from_text``): with a
    key-encryption key configured, only sealed under it."""
    return keyring_from_text(text, where=ENV_VAR)


def _from_env(text: str) -> Vault:
    with _LOCK:
        vault = _BY_ENV.get(text)
        if vault is None:
            vault = _BY_ENV[text] = Vault(keyring_from_env(text))
        return vault


_LOCK = threading.Lock()
_BY_PATH: dict[Path, Vault] = {}
_BY_ENV: dict[str, Vault] = {}
_INSTALLED: list[Vault] = []


def current() -> Vault:
    """The process's vault: one installed with ``using``, else CONTACTGATE_DATA_KEYS, else the
    keyring in CONTACTGATE_HOME. Fails closed (KeyringError) when there is none."""
    if _INSTALLED:
        return _INSTALLED[-1]
    env = os.environ.get(ENV_VAR)
    if env:
        return _from_env(env)
    from gateway.config import Settings

    return load(Settings.from_env().layout.data_keys)


class Plain:
    """Seals nothing and blinds nothing: only for migration 0005, which reshapes the plaintext
    tables of before encryption (0007 then seals them). Never installed on a serving engine."""

    active = None

    def seal(self, plaintext, context: str):
        return plaintext.decode("utf-8") if isinstance(plaintext, bytes) else plaintext

    def open(self, token: str, context: str) -> str:
        return token

    def open_bytes(self, token, context: str) -> bytes:
        return token.encode("utf-8") if isinstance(token, str) else token

    def blind(self, value: str, purpose: str) -> str:
        return value


@contextlib.contextmanager
def using(vault: Vault):
    """Make ``vault`` the process's vault for the block (the command line, migrations, benchmarks)."""
    _INSTALLED.append(vault)
    try:
        yield vault
    finally:
        _INSTALLED.remove(vault)


def throwaway() -> Vault:
    """A vault with freshly generated keys held only in memory: benchmarks and tests."""
    return Vault(Keyring.generate())


# ---- the archive keyring: retired data keys, kept wrapped while a backup may need them ------------

ARCHIVE_AAD = "contactgate archived data key "


def read_archived(path: Path, ring: Keyring) -> dict[str, bytes]:
    """The retired data keys of ``keys/archived-keys.json`` (`keys retire`), unwrapped with the
    keyring's keys (each is wrapped under the key that was active when it was retired)."""
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries = doc["keys"]
        found = {}
        for kid, item in entries.items():
            wrapper = ring.data_keys.get(item["wrapped_by"])
            if wrapper is None:
                raise KeyringError(f"the archived data key {kid} is wrapped under {item['wrapped_by']}, "
                                   f"which the keyring does not hold")
            raw = base64.b64decode(item["key"], validate=True)
            found[str(kid)] = AESGCM(wrapper).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                                      (ARCHIVE_AAD + kid).encode())
    except (ValueError, KeyError, TypeError, AttributeError, InvalidTag) as exc:
        raise KeyringError(f"the archive keyring {path} is malformed or altered ({type(exc).__name__})") from None
    return found


def write_archived(path: Path, ring: Keyring, keys: dict[str, bytes]) -> None:
    """Replace the archive keyring: every key wrapped under the keyring's active key."""
    from gateway import files

    wrapper = AESGCM(ring.data_keys[ring.active])
    entries = {}
    for kid, key in sorted(keys.items()):
        nonce = secrets.token_bytes(NONCE_BYTES)
        entries[kid] = {"wrapped_by": ring.active,
                        "key": base64.b64encode(nonce + wrapper.encrypt(nonce, key, (ARCHIVE_AAD + kid).encode())).decode()}
    files.replace_private(path, (json.dumps({"format": 1, "keys": entries}, indent=2, sort_keys=True) + "\n").encode())
