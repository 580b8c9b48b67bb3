"""Keys in a hardware security module (PKCS#11, through python-pkcs11).

Two keys may live in a token instead of the home (docs/operations.md "Keys in a hardware security
module"); key files on disk stay the embedded default:

- the **key-encryption key** (KEK, ``CONTACTGATE_PKCS11_KEK``): an AES-256 secret key, sensitive
  and never extractable, made in the token (`contactgate hsm create-kek`). The data keyring
  (gateway.security.vault) is then kept on disk only sealed under it, AES-GCM computed *in the token*
  (``wrap``/``unwrap``): the database, the keyring file and every other file of the host open
  nothing without the token and its PIN.
- the gateway's **signing key** (``CONTACTGATE_PKCS11_SIGNING_KEY``): RSA or EC private keys in the
  token under that label, each with the id ``key_id(public key)``; the gateway signs with the one
  whose public key is in ``signing/cert.pem`` (so a rotation picks the promoted key by itself). Its
  private half never leaves the token: the SignedInfo is signed with C_Sign (``TokenKey.sign``).

The token is named by the module (the vendor's PKCS#11 library), the token label, and a PIN read
from a file (``CONTACTGATE_PKCS11_PIN_FILE``) or the environment (``CONTACTGATE_PKCS11_PIN``):
never from the command line. A token that is missing, or refuses the PIN, is an `HsmError` that
says which: `serve` refuses to start on it, `/readyz` reports it.

PKCS#11 sessions do not survive ``fork``: each process opens its own (gunicorn's master may have
opened one for its checks before forking the workers; a worker finds the process id changed and
initialises the library anew, with a new lock: the master's metrics thread may hold the old one).
A session the token dropped is replaced on the next use (a signature is tried once more in it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

ENV_MODULE = "CONTACTGATE_PKCS11_MODULE"
ENV_TOKEN = "CONTACTGATE_PKCS11_TOKEN"
ENV_PIN_FILE = "CONTACTGATE_PKCS11_PIN_FILE"
ENV_PIN = "CONTACTGATE_PKCS11_PIN"
ENV_SIGNING_KEY = "CONTACTGATE_PKCS11_SIGNING_KEY"
ENV_KEK = "CONTACTGATE_PKCS11_KEK"

WRAP_FORMAT = 2  # keys/data-keys.json: {"format": 2, "wrapped_by": "pkcs11", ...}
WRAP_AAD = b"contactgate data keyring, sealed under the token's key-encryption key"
NONCE_BYTES = 12


class HsmError(Exception):
    """The token cannot be used: not configured right, not present, the PIN refused, a key not in it."""


@dataclass(frozen=True)
class TokenConfig:
    module: str
    token: str
    pin_file: Path | None
    signing_label: str | None
    kek_label: str | None

    def pin(self) -> str:
        if self.pin_file is None:
            pin = os.environ.get(ENV_PIN, "") or _ENV_PIN[0]
        else:
            from gateway.files import loose_mode

            try:
                loose = loose_mode(self.pin_file)
                if loose is not None:
                    raise HsmError(f"the token's PIN file {self.pin_file} is readable by others (mode {loose:o}): "
                                   f"run `chmod 600 {self.pin_file}`")
                owner = self.pin_file.stat().st_uid
                if owner != os.geteuid():
                    raise HsmError(f"the token's PIN file {self.pin_file} is owned by uid {owner}, not by the "
                                   f"gateway's user (uid {os.geteuid()}): run `chown $(id -un) {self.pin_file}`")
                pin = self.pin_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise HsmError(f"cannot read the token's PIN from {self.pin_file} ({ENV_PIN_FILE}): "
                               f"{exc.strerror or exc}") from None
        if not pin:
            raise HsmError(f"the token's PIN is empty: put it in the file {ENV_PIN_FILE} names, or in {ENV_PIN}")
        return pin


_ENV_PIN = [""]  # CONTACTGATE_PKCS11_PIN, taken out of os.environ: no child process (pg_dump ...) inherits it


def config(env=None) -> TokenConfig | None:
    """The token the environment names, or None (keys on disk, the embedded default). A setting
    missing or contradictory is an HsmError naming the variable. A PIN in the environment is moved
    out of it into this process (forked workers keep it; programs it starts do not get it)."""
    if env is None:
        env = os.environ
        if os.environ.get(ENV_PIN):
            _ENV_PIN[0] = os.environ.pop(ENV_PIN)
        env_pin = _ENV_PIN[0]
    else:
        env_pin = env.get(ENV_PIN, "")
    module = env.get(ENV_MODULE, "").strip()
    if not module:
        named = [v for v in (ENV_TOKEN, ENV_SIGNING_KEY, ENV_KEK, ENV_PIN_FILE) if env.get(v)]
        if named:
            raise HsmError(f"{named[0]} is set but {ENV_MODULE} is not: name the token's PKCS#11 module "
                           f"(e.g. /usr/lib/softhsm/libsofthsm2.so)")
        return None
    if not os.path.isabs(module):
        raise HsmError(f"{ENV_MODULE} must be an absolute path to the PKCS#11 module, not {module!r}")
    token = env.get(ENV_TOKEN, "").strip()
    if not token:
        raise HsmError(f"{ENV_MODULE} is set: {ENV_TOKEN} must name the token's label too")
    pin_file = env.get(ENV_PIN_FILE, "").strip()
    if pin_file and env.get(ENV_PIN):
        raise HsmError(f"set {ENV_PIN_FILE} or {ENV_PIN}, not both")
    if not pin_file and not env_pin:
        raise HsmError(f"{ENV_MODULE} is set: the token's PIN comes from the file {ENV_PIN_FILE} names "
                       f"(or from {ENV_PIN}), never from the command line")
    return TokenConfig(module=module, token=token, pin_file=Path(pin_file) if pin_file else None,
                       signing_label=env.get(ENV_SIGNING_KEY, "").strip() or None,
                       kek_label=env.get(ENV_KEK, "").strip() or None)


def kek_config() -> TokenConfig | None:
    """The token, when it holds the key-encryption key of the data keyring."""
    cfg = config()
    return cfg if cfg is not None and cfg.kek_label else None


def signing_config() -> TokenConfig | None:
    """The token, when it holds the gateway's signing key."""
    cfg = config()
    return cfg if cfg is not None and cfg.signing_label else None


# ---- sessions: one per process and token, opened on first use ----------------------------------

_LOCK = threading.RLock()
_SESSIONS: dict[tuple, tuple[int, object]] = {}  # (module, token) -> (pid, session)
_LIBS: dict[str, int] = {}  # module -> pid that initialised it
_SIGN_FAILED: dict[tuple, tuple] = {}  # (module, token) -> (why the last signature failed, its TokenKey)


def _after_fork_in_child() -> None:
    """A forked process (a gunicorn worker) may have been forked while another thread of the parent
    held the lock (the master's /readyz in its metrics thread): that thread does not exist here, so
    the lock is made anew; the parent's sessions mean nothing here (``_LIBS`` stays: ``_library``
    sees the pid changed and initialises the library anew)."""
    global _LOCK
    _LOCK = threading.RLock()
    _SESSIONS.clear()
    _SIGN_FAILED.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _drop_session(cfg: "TokenConfig", opened=None) -> None:
    """Forget this process's session with the token (the token dropped it), so the next use opens one."""
    with _LOCK:
        found = _SESSIONS.get((cfg.module, cfg.token))
        if found is not None and (opened is None or found[1] is opened):
            del _SESSIONS[(cfg.module, cfg.token)]


def _library(module: str):
    import pkcs11

    if not os.path.exists(module):
        raise HsmError(f"no PKCS#11 module at {module} ({ENV_MODULE})")
    try:
        lib = pkcs11.lib(module)
    except pkcs11.PKCS11Error as exc:
        raise HsmError(f"the PKCS#11 module {module} does not load: {exc}") from None
    if _LIBS.get(module) != os.getpid():
        if module in _LIBS:  # forked: the parent's initialisation and sessions mean nothing here
            try:
                lib.reinitialize()
            except pkcs11.PKCS11Error:
                lib.initialize()
        _LIBS[module] = os.getpid()
    return lib


def session(cfg: TokenConfig):
    """This process's logged-in session with the token (an HsmError saying what is wrong if none)."""
    import pkcs11
    from pkcs11 import exceptions as e

    key = (cfg.module, cfg.token)
    with _LOCK:
        found = _SESSIONS.get(key)
        if found is not None and found[0] == os.getpid():
            return found[1]
        lib = _library(cfg.module)
        try:
            token = lib.get_token(token_label=cfg.token)
        except e.NoSuchToken:
            raise HsmError(f"no token labelled {cfg.token!r} in {cfg.module} ({ENV_TOKEN}): is the hardware "
                           f"security module connected and the token initialised?") from None
        except e.MultipleTokensReturned:
            raise HsmError(f"more than one token is labelled {cfg.token!r} in {cfg.module}") from None
        pin = cfg.pin()
        try:
            opened = token.open(user_pin=pin, rw=True)
        except (e.PinIncorrect, e.PinInvalid, e.PinLenRange):
            raise HsmError(f"the token {cfg.token!r} refused the PIN (from "
                           f"{cfg.pin_file or ENV_PIN}): check it; the token locks after too many tries") from None
        except e.PinLocked:
            raise HsmError(f"the token {cfg.token!r} is locked (too many wrong PINs): its security officer "
                           f"must unlock it") from None
        except pkcs11.PKCS11Error as exc:
            raise HsmError(f"the token {cfg.token!r} cannot be opened: {type(exc).__name__}") from None
        _SESSIONS[key] = (os.getpid(), opened)
        return opened


def release() -> None:
    """Close this process's sessions and finalise the libraries (before a fork, and between tests
    that each make their own token)."""
    import pkcs11

    with _LOCK:
        for pid, opened in _SESSIONS.values():
            if pid == os.getpid():
                try:
                    opened.close()
                except pkcs11.PKCS11Error:
                    pass
        _SESSIONS.clear()
        for module, pid in list(_LIBS.items()):
            if pid == os.getpid():
                try:
                    pkcs11.lib(module).finalize()
                except pkcs11.PKCS11Error:
                    pass
        _LIBS.clear()


def _one_key(cfg: TokenConfig, what: str, **attributes):
    import pkcs11
    from pkcs11 import exceptions as e

    try:
        return session(cfg).get_key(**attributes)
    except e.NoSuchKey:
        raise HsmError(f"the token {cfg.token!r} holds no {what}") from None
    except e.MultipleObjectsReturned:
        raise HsmError(f"the token {cfg.token!r} holds more than one {what}") from None
    except pkcs11.PKCS11Error as exc:
        raise HsmError(f"the token {cfg.token!r} could not be searched for the {what}: {type(exc).__name__}") from None


# ---- the key-encryption key: the data keyring sealed under it, in the token ---------------------

def _kek(cfg: TokenConfig):
    from pkcs11 import KeyType, ObjectClass

    return _one_key(cfg, f"key-encryption key labelled {cfg.kek_label!r} ({ENV_KEK}; "
                         f"`contactgate hsm create-kek` makes it)",
                    object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=cfg.kek_label)


def create_kek(cfg: TokenConfig) -> None:
    """An AES-256 key made in the token, sensitive and not extractable: it never leaves it."""
    from pkcs11 import Attribute, KeyType

    try:
        _kek(cfg)
    except HsmError as exc:
        if "holds no" not in str(exc):
            raise
    else:
        raise HsmError(f"the token {cfg.token!r} already holds a key labelled {cfg.kek_label!r}")
    with _LOCK:
        session(cfg).generate_key(KeyType.AES, 256, label=cfg.kek_label, store=True, template={
            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True, Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.PRIVATE: True})


def _aad(label: str, ca: str | None) -> bytes:
    """AES-GCM's associated data: the KEK's label and the gateway's CA (its fingerprint), so that a
    sealed keyring does not open in another gateway's home sharing the token. (Keyrings sealed before
    this was bound, without "ca", carry the constant alone.)"""
    return WRAP_AAD if ca is None else WRAP_AAD + f"; kek={label}; ca={ca}".encode("utf-8")


def wrap(cfg: TokenConfig, plaintext: bytes, *, ca: str | None = None) -> dict:
    """``plaintext`` sealed under the token's KEK (AES-256-GCM in the token), as the keyring file
    holds it; bound to the gateway whose CA fingerprint is ``ca``."""
    import pkcs11
    from pkcs11 import Mechanism
    from pkcs11.mechanisms import GCMParams

    nonce = secrets.token_bytes(NONCE_BYTES)
    with _LOCK:
        try:
            sealed = _kek(cfg).encrypt(plaintext, mechanism=Mechanism.AES_GCM,
                                       mechanism_param=GCMParams(nonce, _aad(cfg.kek_label, ca)))
        except pkcs11.PKCS11Error as exc:
            raise HsmError(f"the token {cfg.token!r} did not seal the data keyring: {type(exc).__name__}") from None
    doc = {"format": WRAP_FORMAT, "wrapped_by": "pkcs11", "kek": cfg.kek_label,
           "nonce": base64.b64encode(nonce).decode(), "sealed": base64.b64encode(sealed).decode()}
    if ca is not None:
        doc["ca"] = ca
    return doc


def is_wrapped(doc) -> bool:
    return isinstance(doc, dict) and doc.get("format") == WRAP_FORMAT and doc.get("wrapped_by") == "pkcs11"


def unwrap(doc: dict, *, ca: str | None = None) -> bytes:
    """The keyring a ``wrap`` sealed, opened in the token named by the environment; refused when it
    was sealed for another gateway than the one whose CA fingerprint is ``ca``."""
    import pkcs11
    from pkcs11 import Mechanism
    from pkcs11.mechanisms import GCMParams

    cfg = config()
    label = str(doc.get("kek"))
    if cfg is None:
        raise HsmError(f"the data keyring is sealed under the key-encryption key {label!r} of a hardware "
                       f"security module: set {ENV_MODULE}, {ENV_TOKEN}, the PIN and {ENV_KEK}")
    if cfg.kek_label != label:
        raise HsmError(f"the data keyring is sealed under the token's key {label!r}, but {ENV_KEK} is "
                       f"{cfg.kek_label!r}")
    bound = doc.get("ca")
    try:
        nonce = base64.b64decode(doc["nonce"], validate=True)
        sealed = base64.b64decode(doc["sealed"], validate=True)
        if bound is not None and not isinstance(bound, str):
            raise TypeError("ca")
    except (KeyError, TypeError, ValueError):
        raise HsmError("the sealed data keyring is malformed") from None
    if bound is not None and ca is not None and bound != ca:
        raise HsmError(f"the data keyring was sealed for another gateway (CA {bound[:23]}…, this home's is "
                       f"{ca[:23]}…): it is not this home's keyring")
    with _LOCK:
        try:
            return bytes(_kek(cfg).decrypt(sealed, mechanism=Mechanism.AES_GCM,
                                           mechanism_param=GCMParams(nonce, _aad(label, bound))))
        except pkcs11.PKCS11Error as exc:
            raise HsmError(f"the token's key {label!r} does not open the data keyring (altered, or sealed "
                           f"under another token's key): {type(exc).__name__}") from None


# ---- the signing key: C_Sign in the token --------------------------------------------------------

def key_id(public_key) -> bytes:
    """CKA_ID of a signing key in the token: SHA-256 of its public key (SubjectPublicKeyInfo), 20 bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()[:20]


def import_signing_key(cfg: TokenConfig, private_key) -> None:
    """Put a private key (cryptography's RSA or EC) into the token: sensitive, not extractable, for
    signing only. The caller then deletes the file it came from."""
    import pkcs11
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    from pkcs11 import Attribute
    from pkcs11.util.ec import decode_ec_private_key
    from pkcs11.util.rsa import decode_rsa_private_key

    kid = key_id(private_key.public_key())
    if _find_private(cfg, kid) is not None:
        return  # already there (a command run again)
    der = private_key.private_bytes(Encoding.DER, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    attributes = decode_rsa_private_key(der) if isinstance(private_key, rsa.RSAPrivateKey) else decode_ec_private_key(der)
    attributes.update({Attribute.LABEL: cfg.signing_label, Attribute.ID: kid, Attribute.TOKEN: True,
                       Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                       Attribute.SIGN: True, Attribute.DECRYPT: False, Attribute.UNWRAP: False})
    with _LOCK:
        try:
            session(cfg).create_object(attributes)
        except pkcs11.PKCS11Error as exc:
            raise HsmError(f"the token {cfg.token!r} did not take the signing key: {type(exc).__name__}") from None


def generate_signing_key(cfg: TokenConfig, *, ec: bool = False):
    """A new key pair made in the token (RSA-2048, or EC P-256); returns its public key (cryptography's)."""
    import pkcs11
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                        Attribute.PRIVATE: True, Attribute.DECRYPT: False, Attribute.UNWRAP: False}
    with _LOCK:
        opened = session(cfg)
        temporary = secrets.token_bytes(20)
        try:
            if ec:
                parameters = opened.create_domain_parameters(KeyType.EC, {
                    Attribute.EC_PARAMS: encode_named_curve_parameters("1.2.840.10045.3.1.7")}, local=True)
                public, private = parameters.generate_keypair(store=True, label=cfg.signing_label, id=temporary,
                                                              private_template=private_template)
                public_key = serialization.load_der_public_key(encode_ec_public_key(public))  # SubjectPublicKeyInfo
            else:
                public, private = opened.generate_keypair(KeyType.RSA, 2048, store=True, label=cfg.signing_label,
                                                          id=temporary, private_template=private_template)
                public_key = RSAPublicNumbers(int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                                              int.from_bytes(public[Attribute.MODULUS], "big")).public_key()
        except pkcs11.PKCS11Error as exc:
            raise HsmError(f"the token {cfg.token!r} did not make a signing key: {type(exc).__name__}") from None
        try:  # the pair was stored under a temporary id: its real one, or nothing left behind
            kid = key_id(public_key)
            private[Attribute.ID] = kid
            public[Attribute.ID] = kid
        except pkcs11.PKCS11Error as exc:
            for item in (private, public):
                try:
                    item.destroy()
                except pkcs11.PKCS11Error:
                    pass
            raise HsmError(f"the token {cfg.token!r} did not label the new signing key: {type(exc).__name__}") from None
    return public_key


def destroy_signing_key(cfg: TokenConfig, public_key) -> bool:
    """Remove the token's key pair for ``public_key`` (a discarded or retired signing key)."""
    import pkcs11
    from pkcs11 import Attribute

    with _LOCK:
        try:
            found = list(session(cfg).get_objects({Attribute.LABEL: cfg.signing_label, Attribute.ID: key_id(public_key)}))
            for item in found:
                item.destroy()
        except pkcs11.PKCS11Error as exc:
            raise HsmError(f"the token {cfg.token!r} did not remove the signing key: {type(exc).__name__}") from None
    return bool(found)


def _find_private(cfg: TokenConfig, kid: bytes):
    from pkcs11 import ObjectClass

    try:
        return _one_key(cfg, "signing key", object_class=ObjectClass.PRIVATE_KEY, label=cfg.signing_label, id=kid)
    except HsmError as exc:
        if "holds no" in str(exc):
            return None
        raise


class TokenKey:
    """Signs with a private key in the token, found by the public key of a certificate. ``sign``
    returns what XML-DSig puts in SignatureValue: RSA PKCS#1 v1.5 over SHA-256, or ECDSA over the
    SHA-256 digest as r || s (RFC 4050: what PKCS#11's CKM_ECDSA returns)."""

    def __init__(self, cfg: TokenConfig, certificate):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._cfg = cfg
        self.certificate = certificate
        self.is_rsa = isinstance(certificate.public_key(), rsa.RSAPublicKey)
        self._id = key_id(certificate.public_key())
        self._found = None  # (the session, the key's object in it): found once per session, not per signature
        self._key()  # fail now (at start-up) rather than at the first answer

    def _key(self):
        with _LOCK:
            opened = session(self._cfg)  # this process's (a fork or a dropped session: a new one)
            if self._found is not None and self._found[0] is opened:
                return self._found[1]
            found = _find_private(self._cfg, self._id)
            self._found = None if found is None else (opened, found)
        if found is None:
            raise HsmError(f"the token {self._cfg.token!r} holds no signing key labelled "
                           f"{self._cfg.signing_label!r} for the certificate in signing/cert.pem "
                           f"(`contactgate hsm import-signing-key` puts the home's key there)")
        return found

    def sign(self, data: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism

        where = (self._cfg.module, self._cfg.token)
        with _LOCK:  # one operation at a time on the process's session
            for attempt in (1, 2):  # a session the token dropped: once more in a new one
                try:
                    key = self._key()
                    if self.is_rsa:
                        signature = bytes(key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS))
                    else:
                        signature = bytes(key.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA))
                    _SIGN_FAILED.pop(where, None)
                    return signature
                except pkcs11.PKCS11Error as exc:
                    problem = f"the token {self._cfg.token!r} did not sign: {type(exc).__name__}"
                    _drop_session(self._cfg, self._found[0] if self._found else None)
                    self._found = None
                except HsmError as exc:
                    problem = str(exc)
                    break
            _SIGN_FAILED[where] = (problem, self)  # /readyz says so until a signature succeeds
            raise HsmError(problem)


def probe(cfg: TokenConfig) -> str | None:
    """For readiness: None when the token answers, holds the configured KEK and (when this process's
    last signature failed) signs again; else what is wrong."""
    opened = None
    try:
        with _LOCK:
            opened = session(cfg)
            opened.generate_random(8)  # a round trip to the token (the session may outlive a removed token)
        if cfg.kek_label:
            _kek(cfg)
    except HsmError as exc:
        return str(exc)
    except Exception as exc:  # the library's own errors: a session the token dropped
        _drop_session(cfg, opened)  # the next use (a signature, a probe) opens a new one
        return f"the token {cfg.token!r} does not answer: {type(exc).__name__}"
    failed = _SIGN_FAILED.get((cfg.module, cfg.token))
    if failed is not None:  # this process's last signature failed: is it signing again?
        try:
            failed[1].sign(b"readiness")
        except HsmError as exc:
            return str(exc)
    return None
