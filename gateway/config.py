"""Settings from the environment (CONTRACT.md "Configuration"), with the home's layout in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.officer_roles import ROLES as OFFICER_ROLES


@dataclass(frozen=True)
class HomeLayout:
    """Where `contactgate init` puts things under CONTACTGATE_HOME."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca-key.pem"

    @property
    def crl(self) -> Path:
        """The gateway CA's revocation list (PEM): in the TLS context, served at GET /crl."""
        return self.root / "ca" / "crl.pem"

    @property
    def trusted_cas_dir(self) -> Path:
        """Extra CAs (PEM files) whose certificates may be registered with `cert register`."""
        return self.root / "trust"

    @property
    def server_cert(self) -> Path:
        return self.root / "tls" / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "tls" / "server-key.pem"

    @property
    def client_ca_bundle(self) -> Path:
        """Every CA the TLS layer accepts client certificates from (gateway CA + trust/*.pem)."""
        return self.root / "tls" / "client-cas.pem"

    @property
    def signing_cert(self) -> Path:
        return self.root / "signing" / "cert.pem"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing" / "key.pem"

    @property
    def signing_next_key(self) -> Path:
        """A signing key staged by `signing-key rotate`: published, not yet used to sign."""
        return self.root / "signing" / "next-key.pem"

    @property
    def signing_next_cert(self) -> Path:
        return self.root / "signing" / "next-cert.pem"

    @property
    def signing_previous_cert(self) -> Path:
        """The certificate of the key before the current one, still published after a promotion."""
        return self.root / "signing" / "previous-cert.pem"

    @property
    def audit_key(self) -> Path:
        """The audit chain's HMAC key: outside the database, so its administrators cannot forge."""
        return self.root / "keys" / "audit-chain.key"

    @property
    def roles_file(self) -> Path:
        """Which fields each practitioner role may see (gateway.index.disclosure); optional."""
        return self.root / "roles.json"

    @property
    def precedence_file(self) -> Path:
        """Which kind of organisation's value of each field is shown (gateway.index.precedence); optional."""
        return self.root / "precedence.json"

    @property
    def review_file(self) -> Path:
        """Thresholds of the misuse review's rules (gateway.audit.review.Thresholds); optional."""
        return self.root / "review.json"

    @property
    def data_keys(self) -> Path:
        """The keyring that seals identifying values at rest (gateway.security.vault), outside the
        database, so that those who run the database cannot read it."""
        return self.root / "keys" / "data-keys.json"

    @property
    def archived_keys(self) -> Path:
        """Retired data keys (`keys retire`), each wrapped under the active data key: kept until no
        recorded backup inside its retention needs them (`keys destroy`)."""
        return self.root / "keys" / "archived-keys.json"

    @property
    def backups(self) -> Path:
        """The backups `contactgate backup` made (id, entry, data keys needed, retention), also in the
        audit trail; kept across a restore."""
        return self.root / "keys" / "backups.json"

    @property
    def restore_marker(self) -> Path:
        """Present while `contactgate restore` is putting a backup in place: the gateway refuses to serve."""
        return self.root / "restore-pending.json"

    @property
    def audit_checkpoints(self) -> Path:
        """Heads recorded by each successful `audit verify`, outside the database."""
        return self.root / "audit" / "checkpoints"

    def default_database_url(self) -> str:
        return f"sqlite:///{(self.root / 'contactgate.db').resolve()}"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    redis_url: str | None = None
    max_message_bytes: int = 8 * 1024 * 1024
    max_timestamp_lifetime_s: int = 300
    clock_skew_s: int = 60
    # Requests per minute; generous defaults, meant to stop runaway or scraping clients.
    rate_limit_per_org: int = 60_000
    rate_limit_per_user: int = 600
    redis_prefix: str = "contactgate"
    # Fail fast: how long one Redis connect or round trip may take before the worker counts rates in
    # its own memory (degraded mode, gateway.store.redis_store), and one database step (connect,
    # pooled connection, lock, statement, SQLite's write lock) before the request is answered Unavailable.
    redis_timeout_s: float = 0.5
    database_timeout_s: float = 10.0
    # While Redis is unavailable each worker counts rates in its own memory and allows each limit
    # divided by nodes x workers (gateway.store.redis_store): the gateway nodes that share the Redis,
    # and this node's worker processes (`serve --workers`, set by `serve`).
    nodes: int = 1
    workers: int = 1
    # `serve`'s front (gateway/front.py, docs/operations.md "Slow and idle clients"): seconds, and caps per worker.
    handshake_timeout_s: float = 5.0
    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    max_connections: int = 1000
    max_connections_per_address: int = 64
    threads: int = 4
    # Linkage (docs/data-engineers.md "Linkage"): match probabilities at or above link_upper link automatically,
    # below link_lower make a new child, between make a new child and a pair for review; FindChild
    # answers candidates scoring at least find_floor (0-100) whose match probability, with the prior
    # for the index's size, is at least find_min_probability (docs/data-engineers.md "FindChild and blocking at scale").
    # Roles (Requester/Role) that see a shielded child's location; every other role does not.
    shield_roles: frozenset = frozenset()
    # Officer roles that see a shielded child's location in the review queue (`review show`, the
    # console): none by default (gateway.index.shielding). Officer roles, never practitioner roles.
    review_shield_roles: frozenset = frozenset()
    # Which fields each role may see (gateway.index.disclosure); None: the home's roles.json, if any.
    roles_file: Path | None = None
    # Which kind of organisation's value of each field is shown (gateway.index.precedence); None: the
    # home's precedence.json, if any, else the built-in default.
    precedence_file: Path | None = None
    link_upper: float = 0.95
    link_lower: float = 0.05
    find_floor: int = 40
    find_min_probability: float = 0.9
    # Retention (docs/officers.md "Retention"): data managers can read an archived record for
    # retention_view_days; it is purged retention_purge_years after archiving.
    retention_view_days: int = 365
    retention_purge_years: int = 6
    # Officers (docs/officers.md): an accreditation's expiry at most this far ahead; a sign-in session
    # ends after session_idle_minutes without a command and session_max_hours after sign-in.
    # Sign-in failures (gateway.officers): lockout_failures in a row from one source address lock
    # that address out of that account for lockout_minutes (the officer still signs in from
    # elsewhere); lockout_global_failures from all addresses together within lockout_global_minutes
    # lock the account for lockout_global_minutes from every address but those the officer signed in
    # from in the last signin_known_source_days (so strangers cannot lock them out of where they
    # work). The global limit must be out of reach of one address (checked in from_env).
    # The console (gateway.console.throttle) checks at most signin_per_minute sign-in attempts a
    # minute from one address (as many at once), and at most signin_concurrency at a time in each
    # of its processes (and fewer than its threads); the others are refused unchecked.
    max_accreditation_days: int = 3 * 365 + 1
    # The gateway CA's CRL is valid this many days: `serve`, `cert revoke` and `cert crl` renew it.
    crl_days: int = 30
    session_idle_minutes: int = 15
    session_max_hours: int = 8
    lockout_failures: int = 5
    lockout_minutes: int = 15
    lockout_global_failures: int = 50
    lockout_global_minutes: int = 60
    signin_known_source_days: int = 30
    signin_per_minute: int = 10
    signin_concurrency: int = 2
    # The practitioners' portal (gateway.portal.accounts): a practitioner's clearance is re-checked
    # every portal_clearance_years and their training refreshed every portal_training_years; sign-in
    # is refused once either is past.
    portal_clearance_years: int = 3
    portal_training_years: int = 1
    # The portal's public URL (https://HOST[:PORT]): WebAuthn's relying party id is its host and the
    # origin every key signs for is this URL (gateway.portal.security_keys). Unset: https://localhost:PORT
    # of `portal --bind` when it binds a loopback address; otherwise `portal` refuses to start.
    portal_url: str | None = None
    # Federated sign-in (gateway.portal.oidc): a provider's issuer on plain http://127.0.0.1 is used
    # only when this is set (tests against a provider on loopback); never in production.
    oidc_insecure_http_loopback: bool = False
    # Behind a TLS-terminating proxy (docs/operations.md "nginx in front of several nodes"): the addresses whose Client-Cert
    # header (RFC 9440) is believed. Empty: the header is refused from everyone.
    trusted_proxies: tuple = ()
    # `serve`'s log lines: "json" (one object a line, with the request id) or "text".
    log_format: str = "json"
    # Copies of the audit checkpoints kept outside the home (docs/operations.md "Backup and restore"):
    # every successful `audit verify` and every backup appends to each; a restore cannot roll them back.
    checkpoint_copies: tuple = ()
    extra: dict = field(default_factory=dict)

    @property
    def layout(self) -> HomeLayout:
        return HomeLayout(self.home)

    @property
    def rate_shares(self) -> int:
        """How many worker processes share the rate limits: each allows its share without Redis."""
        return self.nodes * self.workers

    @property
    def roles_path(self) -> Path:
        return self.roles_file or self.layout.roles_file

    @property
    def precedence_path(self) -> Path:
        return self.precedence_file or self.layout.precedence_file

    @classmethod
    def from_env(cls, env: os._Environ | dict | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        home = Path(overrides.pop("home", None) or env.get("CONTACTGATE_HOME") or "./var").resolve()
        database_url = (
            overrides.pop("database_url", None)
            or env.get("CONTACTGATE_DATABASE_URL")
            or HomeLayout(home).default_database_url()
        )
        redis_url = overrides.pop("redis_url", None) or env.get("CONTACTGATE_REDIS_URL") or None
        parsed = {  # setting: (environment variable, parser that names the variable in its error)
            "rate_limit_per_org": ("CONTACTGATE_RATE_LIMIT_PER_ORG", positive_int),
            "rate_limit_per_user": ("CONTACTGATE_RATE_LIMIT_PER_USER", positive_int),
            "max_message_bytes": ("CONTACTGATE_MAX_MESSAGE_BYTES", positive_int),
            "redis_timeout_s": ("CONTACTGATE_REDIS_TIMEOUT", positive_seconds),
            "database_timeout_s": ("CONTACTGATE_DATABASE_TIMEOUT", positive_seconds),
            "nodes": ("CONTACTGATE_NODES", positive_int),
            "handshake_timeout_s": ("CONTACTGATE_HANDSHAKE_TIMEOUT", positive_seconds),
            "header_timeout_s": ("CONTACTGATE_HEADER_TIMEOUT", positive_seconds),
            "body_timeout_s": ("CONTACTGATE_BODY_TIMEOUT", positive_seconds),
            "keepalive_timeout_s": ("CONTACTGATE_KEEPALIVE_TIMEOUT", positive_seconds),
            "max_connections": ("CONTACTGATE_MAX_CONNECTIONS", positive_int),
            "max_connections_per_address": ("CONTACTGATE_MAX_CONNECTIONS_PER_ADDRESS", positive_int),
            "threads": ("CONTACTGATE_THREADS", positive_int),
            "link_upper": ("CONTACTGATE_LINK_UPPER", probability),
            "link_lower": ("CONTACTGATE_LINK_LOWER", probability),
            "find_floor": ("CONTACTGATE_FIND_FLOOR", percentage),
            "find_min_probability": ("CONTACTGATE_FIND_MIN_PROBABILITY", probability),
            "retention_view_days": ("CONTACTGATE_RETENTION_VIEW_DAYS", positive_int),
            "retention_purge_years": ("CONTACTGATE_RETENTION_PURGE_YEARS", positive_int),
            "max_accreditation_days": ("CONTACTGATE_MAX_ACCREDITATION_DAYS", positive_int),
            "crl_days": ("CONTACTGATE_CRL_DAYS", positive_int),
            "session_idle_minutes": ("CONTACTGATE_SESSION_IDLE_MINUTES", positive_int),
            "session_max_hours": ("CONTACTGATE_SESSION_MAX_HOURS", positive_int),
            "lockout_failures": ("CONTACTGATE_LOCKOUT_FAILURES", positive_int),
            "lockout_minutes": ("CONTACTGATE_LOCKOUT_MINUTES", positive_int),
            "lockout_global_failures": ("CONTACTGATE_LOCKOUT_GLOBAL_FAILURES", positive_int),
            "lockout_global_minutes": ("CONTACTGATE_LOCKOUT_GLOBAL_MINUTES", positive_int),
            "signin_known_source_days": ("CONTACTGATE_SIGNIN_KNOWN_SOURCE_DAYS", positive_int),
            "signin_per_minute": ("CONTACTGATE_SIGNIN_PER_MINUTE", positive_int),
            "signin_concurrency": ("CONTACTGATE_SIGNIN_CONCURRENCY", positive_int),
            "portal_clearance_years": ("CONTACTGATE_PORTAL_CLEARANCE_YEARS", positive_int),
            "portal_training_years": ("CONTACTGATE_PORTAL_TRAINING_YEARS", positive_int),
            "portal_url": ("CONTACTGATE_PORTAL_URL", lambda _variable, value: value.strip()),
            "oidc_insecure_http_loopback": ("CONTACTGATE_OIDC_INSECURE_HTTP_LOOPBACK",
                                            lambda _variable, value: value.strip().lower() in ("1", "true", "yes")),
            "shield_roles": ("CONTACTGATE_SHIELD_ROLES", role_list),
            "review_shield_roles": ("CONTACTGATE_REVIEW_SHIELD_ROLES", officer_role_list),
            "roles_file": ("CONTACTGATE_ROLES_FILE", lambda _variable, value: Path(value)),
            "precedence_file": ("CONTACTGATE_PRECEDENCE_FILE", lambda _variable, value: Path(value)),
            "trusted_proxies": ("CONTACTGATE_TRUSTED_PROXIES", address_list),
            "log_format": ("CONTACTGATE_LOG_FORMAT", one_of("json", "text")),
            "checkpoint_copies": ("CONTACTGATE_CHECKPOINT_COPIES", path_list),
        }
        for name, (variable, parse) in parsed.items():
            if name not in overrides and env.get(variable):
                overrides[name] = parse(variable, env[variable])
        for path in overrides.get("checkpoint_copies", ()):
            if path.resolve().is_relative_to(home):
                raise SettingError(f"CONTACTGATE_CHECKPOINT_COPIES holds {path}, inside the home {home}: a copy "
                                   f"must live outside it (a restore of the home must not roll it back)")
        if "redis_prefix" not in overrides and env.get("CONTACTGATE_REDIS_PREFIX"):
            overrides["redis_prefix"] = env["CONTACTGATE_REDIS_PREFIX"]
        upper, lower = overrides.get("link_upper", cls.link_upper), overrides.get("link_lower", cls.link_lower)
        if not lower < upper:
            raise SettingError(f"CONTACTGATE_LINK_LOWER ({lower}) must be below CONTACTGATE_LINK_UPPER ({upper})")
        view, purge = (overrides.get("retention_view_days", cls.retention_view_days),
                       overrides.get("retention_purge_years", cls.retention_purge_years))
        if view > purge * 365:
            raise SettingError(f"CONTACTGATE_RETENTION_VIEW_DAYS ({view}) must not be longer than "
                               f"CONTACTGATE_RETENTION_PURGE_YEARS ({purge} years)")
        check_lockout(**{name: overrides.get(name, getattr(cls, name)) for name in (
            "lockout_failures", "lockout_minutes", "lockout_global_failures", "lockout_global_minutes")})
        check_database_url(database_url)
        if redis_url is not None:
            check_redis_url(redis_url)
        return cls(home=home, database_url=database_url, redis_url=redis_url, **overrides)


# ---- validation of settings: a bad value is named, with what it should look like ------------------

class SettingError(ValueError):
    """A setting (an environment variable or its flag) has a value the gateway cannot use. The
    message names the setting and says what a good value looks like; it never echoes a password."""


def positive_int(variable: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise SettingError(f"{variable} must be a whole number, not {value!r}") from None
    if number < 1:
        raise SettingError(f"{variable} must be 1 or more, not {number}")
    return number


def one_of(*choices: str):
    def parse(variable: str, value: str) -> str:
        if value.strip().lower() not in choices:
            raise SettingError(f"{variable} must be one of {', '.join(choices)}, not {value!r}")
        return value.strip().lower()
    return parse


def address_list(variable: str, value: str) -> tuple:
    """Addresses or networks, comma-separated: 127.0.0.1, 10.0.0.0/24, ::1."""
    import ipaddress

    networks = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingError(f"{variable} holds {part!r}, which is not an address or network "
                               f"(e.g. 127.0.0.1, 10.0.0.0/24, ::1)") from None
    return tuple(networks)


def path_list(variable: str, value: str) -> tuple:
    """Absolute file paths, comma-separated."""
    paths = tuple(Path(part.strip()) for part in value.split(",") if part.strip())
    for path in paths:
        if not path.is_absolute():
            raise SettingError(f"{variable} holds {str(path)!r}, which is not an absolute path "
                               f"(e.g. /var/lib/contactgate-witness/checkpoints)")
    return paths


def role_list(variable: str, value: str) -> frozenset[str]:
    """Practitioner roles, comma-separated (as sent in Requester/Role)."""
    roles = frozenset(part.strip() for part in value.split(",") if part.strip())
    if any(len(role) > 100 for role in roles):
        raise SettingError(f"{variable} holds a role longer than 100 characters (the schema's limit)")
    return roles


def officer_role_list(variable: str, value: str) -> frozenset[str]:
    """Officer roles (gateway.officer_roles.ROLES), comma-separated. An unknown name is refused rather
    than ignored: a misspelt role would otherwise grant nothing without anyone noticing."""
    roles = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(roles - set(OFFICER_ROLES))
    if unknown:
        raise SettingError(f"{variable} names {', '.join(map(repr, unknown))}, not an officer role "
                           f"(officer roles: {', '.join(OFFICER_ROLES)})")
    return roles


def _number_between(variable: str, value: str, low: float, high: float, what: str) -> float:
    """A number strictly between ``low`` and ``high``, or a SettingError saying ``what`` it must be."""
    try:
        number = float(value)
    except ValueError:
        number = low
    if not low < number < high:
        raise SettingError(f"{variable} must be {what}, not {value!r}")
    return number


def probability(variable: str, value: str) -> float:
    return _number_between(variable, value, 0, 1, "a probability between 0 and 1 (exclusive), e.g. 0.999")


def percentage(variable: str, value: str) -> int:
    number = positive_int(variable, value)
    if number > 100:
        raise SettingError(f"{variable} must be a score from 1 to 100, not {number}")
    return number


def positive_seconds(variable: str, value: str) -> float:
    return _number_between(variable, value, 0, 3600,
                           "a number of seconds greater than 0 (and under an hour)")


def most_failures_from_one_address(lockout_failures: int, lockout_minutes: int, lockout_global_minutes: int) -> int:
    """The most failed sign-ins one source address can add to an account's global count in one
    window: ``lockout_failures`` each time its own lock ends (attempts while it is locked are not
    counted), with one more round for a window that starts just before a lock ends."""
    rounds = -(-lockout_global_minutes // lockout_minutes) + 1
    return lockout_failures * rounds


def check_lockout(*, lockout_failures: int, lockout_minutes: int, lockout_global_failures: int,
                  lockout_global_minutes: int) -> None:
    """The global back-off must be out of one address's reach, or a stranger could lock an officer
    out alone from every address they have not signed in from lately (it never holds them back
    where they have: gateway.officers)."""
    one = most_failures_from_one_address(lockout_failures, lockout_minutes, lockout_global_minutes)
    if lockout_global_failures <= one:
        raise SettingError(
            f"CONTACTGATE_LOCKOUT_GLOBAL_FAILURES ({lockout_global_failures}) must be more than one address can "
            f"reach in CONTACTGATE_LOCKOUT_GLOBAL_MINUTES ({lockout_global_minutes}): {one} with "
            f"CONTACTGATE_LOCKOUT_FAILURES={lockout_failures} and CONTACTGATE_LOCKOUT_MINUTES={lockout_minutes}; "
            f"raise it (or shorten the window), or one stranger could lock an officer out from every address "
            f"they have not signed in from lately")


DATABASE_URL_HELP = ("use postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE, or "
                     "sqlite:////absolute/path/contactgate.db")


def safe_url(url: str) -> str:
    """``url`` with any password hidden, fit for a message."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: say nothing of what it holds
        return "(unparseable)"


def check_database_url(url: str) -> None:
    """Raise SettingError unless ``url`` is a SQLAlchemy URL whose dialect and driver are installed."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise SettingError(f"CONTACTGATE_DATABASE_URL (--database-url) is not a database URL: "
                           f"{DATABASE_URL_HELP}") from None
    try:
        parsed.get_dialect().import_dbapi()
    except Exception:
        raise SettingError(f"CONTACTGATE_DATABASE_URL (--database-url): no installed driver for "
                           f"{parsed.drivername!r}: {DATABASE_URL_HELP}") from None


def check_redis_url(url: str) -> None:
    from urllib.parse import urlsplit

    if url.startswith("redis+sentinel:"):
        from gateway.store.redis_client import SentinelUrlError, parse_sentinel_url

        try:
            parse_sentinel_url(url)
        except (SentinelUrlError, ValueError) as exc:
            raise SettingError(f"CONTACTGATE_REDIS_URL (--redis-url) is not a Redis Sentinel URL: {exc}") from None
        return
    try:
        parts = urlsplit(url)
        parts.port  # raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("redis", "rediss", "unix"):
        raise SettingError("CONTACTGATE_REDIS_URL (--redis-url) is not a Redis URL: use "
                           "redis://HOST:PORT/DB (rediss:// for TLS, redis+sentinel://HOST:PORT,.../SERVICE "
                           "for Sentinel), or leave it unset for the embedded store")
