"""`contactgate init`: the gateway's home (CA, server TLS certificate, response-signing key, audit
chain key, database schema). Safe to run twice: what exists is kept, the schema is brought up to
date, and a home made by an older version (files readable by others) is tightened.

Everything in the home is the gateway's alone: the home and its directories 0700, every file 0600
(`gateway.files`). `serve` refuses to start on a looser home (`permission_problems`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway import files
from gateway.audit import new_key
from gateway.config import Settings
from gateway.migrations import upgrade
from gateway.security import hsm, vault
from gateway.trust import pki, signing_keys


class HomeError(Exception):
    """The home lacks something a command needs, or holds something unreadable. The message says
    what to do."""


@dataclass
class InitReport:
    """What `init` did, one (verb, item) per line: created, replaced, kept, migrated, tightened."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, verb: str, item: str) -> None:
        self.lines.append((verb, item))

    @property
    def created(self) -> list[str]:
        return [item for verb, item in self.lines if verb == "created"]

    @property
    def kept(self) -> list[str]:
        return [item for verb, item in self.lines if verb == "kept"]


def sqlite_database_path(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another backend or an in-memory database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _database_files(settings: Settings) -> list[Path]:
    path = sqlite_database_path(settings.database_url)
    if path is None:
        return []
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def permission_problems(settings: Settings) -> list[files.LoosePath]:
    """The home, anything under it, and a SQLite database kept elsewhere, that are open to anyone but
    the gateway's user."""
    return files.loose_paths(settings.layout.root, *_database_files(settings))


def describe_path(settings: Settings, path: Path) -> str:
    root = settings.layout.root
    if path == root:
        return f"home {path}"
    return str(path.relative_to(root)) if files.is_under(path, root) else str(path)


def _keep_or_make_pair(report: InitReport, what: str, cert_path: Path, key_path: Path, make):
    if cert_path.exists() and key_path.exists():
        report.add("kept", what)
        return None
    key, cert = make()
    files.write_private(key_path, pki.key_pem(key))
    files.write_private(cert_path, pki.cert_pem(cert))
    report.add("created", what)
    return key, cert


def init_home(settings: Settings, server_names: list[str] | None = None, *, signing_key: str = "rsa") -> InitReport:
    """``signing_key``: "rsa" (RSA-2048, what every caller's stack verifies) or "ec" (ECDSA P-256:
    a signature costs the gateway ~0.05 ms instead of ~1 ms). Used only when the key is made; an
    existing key is changed with `contactgate signing-key rotate [--ec]`."""
    layout = settings.layout
    try:  # a home whose signing key is in a token, run without its settings: nothing is made
        in_token = signing_keys.token_config(layout) is not None
    except hsm.HsmError as exc:
        raise HomeError(str(exc)) from None
    report = InitReport()
    report.add("kept" if layout.root.is_dir() else "created", f"home {layout.root}")
    files.private_dir(layout.root)
    files.private_dir(layout.trusted_cas_dir)

    made = _keep_or_make_pair(report, "gateway CA", layout.ca_cert, layout.ca_key, pki.make_ca)
    ca_key, ca_cert = made if made else load_ca(settings)

    server_exists = layout.server_cert.exists() and layout.server_key.exists()
    if server_exists and not server_names:
        report.add("kept", "server TLS certificate")
    else:
        key, cert = pki.issue_server_cert(ca_key, ca_cert, server_names or [])
        files.write_private(layout.server_key, pki.key_pem(key))
        files.write_private(layout.server_cert, pki.cert_pem(cert))
        names = ", ".join(["localhost", "127.0.0.1", *(server_names or [])])
        report.add("replaced" if server_exists else "created", f"server TLS certificate ({names})")

    kind = "ECDSA P-256" if signing_key == "ec" else "RSA-2048"
    if layout.signing_cert.exists() and in_token:  # the key is in a PKCS#11 token
        report.add("kept", "response-signing key (in the PKCS#11 token)")
    else:
        _keep_or_make_pair(report, "response-signing key" + ("" if layout.signing_cert.exists() else f" ({kind})"),
                           layout.signing_cert, layout.signing_key,
                           lambda: pki.issue_signing_cert(ca_key, ca_cert, ec=signing_key == "ec"))

    if layout.audit_key.exists():
        report.add("kept", "audit chain key")
    else:
        files.write_private(layout.audit_key, new_key())
        report.add("created", "audit chain key")

    if os.environ.get(vault.ENV_VAR):
        report.add("kept", f"data keys (from {vault.ENV_VAR})")
    elif layout.data_keys.exists():
        report.add("kept", "data keys")
    else:
        vault.write_keyring(layout.data_keys, vault.Keyring.generate())
        report.add("created", "data keys (values at rest are sealed under them: back them up)")

    before, head = upgrade(settings.database_url, keys=layout.data_keys)
    if before is None:
        report.add("created", f"database schema at {head}")
    elif before == head:
        report.add("kept", f"database schema (already at head: {head})")
    else:
        report.add("migrated", f"database schema from {before} to {head}")

    loose = permission_problems(settings)
    files.tighten(loose)
    for item in loose:
        report.add("tightened", f"{describe_path(settings, item.path)}: "
                                f"{item.mode & 0o777:04o} -> {item.wanted:04o}")
    return report


def load_ca(settings: Settings):
    """The gateway CA's key and certificate."""
    layout = settings.layout
    if not layout.ca_key.exists() or not layout.ca_cert.exists():
        raise HomeError(f"no gateway CA in {layout.root}: run `contactgate init` first")
    try:
        return pki.load_key_pem(layout.ca_key.read_bytes()), pki.load_cert_pem(layout.ca_cert.read_bytes())
    except ValueError:
        raise HomeError(f"the gateway CA in {layout.ca_cert.parent} is unreadable (not PEM, or "
                        f"damaged): restore it from a backup") from None
