"""The portal as an OpenID Connect relying party of an organisation's own provider (issue 27): what
no web request does itself — discovery, the provider's keys, the authorisation request, the code
exchange and the ID token's checks. The pages are gateway.portal.oidc_views.

- **Libraries, not hand-written JWT**: Authlib (`OAuth2Session`: the authorisation URL with PKCE
  S256, the token request with ``private_key_jwt`` via `PrivateKeyJWT` or a client secret) and
  joserfc (Authlib's JOSE: the ID token's signature and claims).
- **Discovery, keys and the token response** over https only, from public addresses only (never
  loopback, private, link-local or reserved ones: `check_address`; plain http and 127.0.0.1 only
  where ``Settings.oidc_insecure_http_loopback`` allows: tests), with timeouts, no redirects and a size
  cap, kept per issuer for `CACHE_S`; the discovery document must name the registered issuer. An ID
  token whose ``kid`` is not in the cached key set makes the portal fetch the keys again (a
  provider's rotation), at most once per `REFETCH_S` per issuer; still unknown: refused.
- **ID token checks**: ``alg`` in `ALLOWED_ALGS` (asymmetric only: never ``none``, never HS*, which
  would let a public key serve as an HMAC secret) and in what the provider says it signs with; the
  key's type fits the alg (joserfc); ``iss`` the registered issuer, ``aud`` holding the client id,
  ``azp`` the client id when present (and required when ``aud`` names others); ``exp`` (a logout
  token's too), ``nbf`` and ``iat`` finite numbers within `SKEW_S` of now, ``iat`` no older than `MAX_TOKEN_AGE_S`; the ``nonce`` of this
  sign-in. Each failure is a `ProviderMisbehaved` naming what failed (for the audit).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from gateway.portal.accounts import PortalError
from gateway.trust.identity_providers import CLIENT_KEY_ALG, IdentityProvider

ALLOWED_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
SKEW_S = 60
MAX_TOKEN_AGE_S = 600
CACHE_S = 3600
REFETCH_S = 30
TIMEOUT_S = (5, 10)  # connect, read
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_JSON_DEPTH = 16
REQUEST_MINUTES = 10  # a sign-in started must come back within this
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class ProviderMisbehaved(PortalError):
    """The provider (or someone posing as it, or replaying it) sent what the portal refuses: nobody
    is signed in. ``str()`` says what failed, for the audit; the person is told only that the sign-in
    was refused."""


class ProviderUnreachable(PortalError):
    """The provider's discovery document or keys could not be fetched (said to the person)."""


def _depth(value, limit: int = MAX_JSON_DEPTH, level: int = 0) -> None:
    if level > limit:
        raise ValueError("nested too deeply")
    if isinstance(value, dict):
        for item in value.values():
            _depth(item, limit, level + 1)
    elif isinstance(value, list):
        for item in value:
            _depth(item, limit, level + 1)


def check_url(url: str, settings, what: str) -> None:
    parts = urlsplit(url or "")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname == "127.0.0.1" and settings.oidc_insecure_http_loopback:
        return
    raise ProviderMisbehaved(f"{what} {url!r} is not https")


def check_address(url: str, settings, what: str) -> None:
    """What the portal itself fetches (discovery, keys, token endpoint) only from public addresses:
    an issuer an officer registered, or endpoints its discovery document names, must not make the
    portal reach loopback, private, link-local (cloud metadata) or reserved addresses. (127.0.0.1
    only where ``oidc_insecure_http_loopback`` allows: tests.) The name is resolved here and again
    by the connection: a name that changes its address in between is not caught."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host == "127.0.0.1" and settings.oidc_insecure_http_loopback:
        return
    try:
        found = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise ProviderUnreachable(f"the provider's {what} host {host[:100]!r} could not be resolved") from None
    for *_unused, address in found:
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise ProviderMisbehaved(f"{what} {host[:100]!r} is at {ip}, not a public address")


def fetch_json(url: str, settings, what: str) -> dict:
    """A provider's JSON document: https, a public address, no redirects, bounded time and size and
    nesting."""
    check_url(url, settings, what)
    check_address(url, settings, what)
    try:
        with requests.get(url, timeout=TIMEOUT_S, stream=True, allow_redirects=False,
                          headers={"Accept": "application/json"}) as answer:
            if answer.status_code != 200:
                raise ProviderUnreachable(f"the provider's {what} answered HTTP {answer.status_code}")
            body = b""
            for chunk in answer.iter_content(16384):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ProviderUnreachable(f"the provider's {what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    except requests.RequestException as exc:
        raise ProviderUnreachable(f"the provider's {what} could not be fetched ({type(exc).__name__})") from None
    try:
        document = json.loads(body)
        _depth(document)
    except (ValueError, RecursionError):
        raise ProviderUnreachable(f"the provider's {what} is not usable JSON") from None
    if not isinstance(document, dict):
        raise ProviderUnreachable(f"the provider's {what} is not a JSON object")
    return document


@dataclass
class Provider:
    """What the portal knows of one issuer: its discovery document and its keys, with their ages."""

    issuer: str
    metadata: dict
    fetched_at: float
    keys: object = None  # joserfc KeySet of the provider's public signing keys
    keys_at: float = 0.0
    refetched_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def endpoint(self, name: str, settings, *, required: bool = True) -> str | None:
        value = self.metadata.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise ProviderUnreachable(f"the provider's discovery document has no {name}")
        check_url(value, settings, name)
        return value

    @property
    def algs(self) -> tuple[str, ...]:
        offered = self.metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        return tuple(a for a in ALLOWED_ALGS if a in offered)


def _key_set(document: dict):
    """The JWKS's public signature keys (RSA, EC, OKP); symmetric and private parts never."""
    from joserfc.jwk import KeySet

    keys = []
    for key in document.get("keys") or []:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC") or key.get("use", "sig") != "sig":
            continue
        public = {k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")}
        keys.append(public)
    try:
        return KeySet.import_key_set({"keys": keys})
    except Exception:  # noqa: BLE001 - a key the library cannot read is no key
        raise ProviderUnreachable("the provider's keys (jwks_uri) could not be read") from None


class Providers:
    """The per-process cache of providers, by issuer (bounded: at most `MAX_PROVIDERS`)."""

    MAX_PROVIDERS = 256

    def __init__(self, settings, clock=time.monotonic):
        self.settings = settings
        self.clock = clock
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def provider(self, issuer: str) -> Provider:
        now = self.clock()
        with self._lock:
            found = self._providers.get(issuer)
        if found is not None and now - found.fetched_at < CACHE_S:
            return found
        document = fetch_json(issuer.rstrip("/") + "/.well-known/openid-configuration", self.settings,
                              "discovery document")
        if document.get("issuer") != issuer:
            raise ProviderMisbehaved(f"the discovery document names the issuer {str(document.get('issuer'))[:200]!r}, "
                                     f"not the registered {issuer!r}")
        found = Provider(issuer, document, now)
        with self._lock:
            if len(self._providers) >= self.MAX_PROVIDERS:
                self._providers.clear()
            self._providers[issuer] = found
        return found

    def keys(self, provider: Provider, kid: str | None):
        """The provider's key set, fetched again when ``kid`` is not in it (rotation), at most once per
        REFETCH_S."""
        now = self.clock()
        with provider.lock:
            stale = provider.keys is None or now - provider.keys_at >= CACHE_S
            unknown = provider.keys is not None and kid is not None and not _has_kid(provider.keys, kid)
            if stale or (unknown and now - provider.refetched_at >= REFETCH_S):
                if unknown:
                    provider.refetched_at = now
                provider.keys = _key_set(fetch_json(provider.endpoint("jwks_uri", self.settings), self.settings,
                                                    "keys (jwks_uri)"))
                provider.keys_at = now
            return provider.keys


def _has_kid(key_set, kid: str) -> bool:
    return any(getattr(k, "kid", None) == kid for k in key_set.keys)


# ---- the sign-in: authorisation request, code exchange, ID token -----------------------------------

def new_request() -> tuple[str, str, str]:
    """(state, nonce, PKCE code verifier): each 256 bits of randomness."""
    return secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _client(idp: IdentityProvider, credential: str | None, provider: Provider | None = None):
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

    if idp.client_auth == "private_key_jwt":
        from joserfc.jwk import ECKey

        key = ECKey.import_key(json.loads(credential)) if credential else None
        session = OAuth2Session(idp.client_id, key, token_endpoint_auth_method="private_key_jwt",
                                redirect_uri=idp.redirect_uri, scope=idp.scopes, code_challenge_method="S256")
        # The assertion's audience: the issuer identifier (RFC 7523bis; every provider accepts it).
        session.register_client_auth_method(PrivateKeyJWT(idp.issuer, alg=CLIENT_KEY_ALG,
                                                          headers={"kid": key.kid} if key else None))
    else:
        session = OAuth2Session(idp.client_id, credential, token_endpoint_auth_method=idp.client_auth,
                                redirect_uri=idp.redirect_uri, scope=idp.scopes, code_challenge_method="S256")
    session.trust_env = False  # the provider is reached directly, never through an environment's proxy
    return session


def authorisation_url(idp: IdentityProvider, provider: Provider, settings, state: str, nonce: str,
                      verifier: str) -> str:
    endpoint = provider.endpoint("authorization_endpoint", settings)
    extra = {"acr_values": " ".join(idp.acr_values)} if idp.acr_values else {}
    url, _ = _client(idp, None).create_authorization_url(endpoint, state=state, nonce=nonce, code_verifier=verifier,
                                                         **extra)
    return url


def exchange_code(idp: IdentityProvider, provider: Provider, settings, credential: str, code: str,
                  verifier: str) -> dict:
    """The token response for ``code`` (with the PKCE verifier): the provider refuses a replayed or
    foreign code (its error is a ProviderMisbehaved)."""
    from authlib.common.errors import AuthlibBaseError

    endpoint = provider.endpoint("token_endpoint", settings)
    check_address(endpoint, settings, "token_endpoint")
    session = _client(idp, credential)
    try:
        token = session.fetch_token(endpoint, grant_type="authorization_code", code=code, code_verifier=verifier,
                                    timeout=TIMEOUT_S, allow_redirects=False, stream=True,
                                    hooks={"response": _bounded_json})
    except AuthlibBaseError as exc:
        raise ProviderMisbehaved(f"the token request was refused by the provider: "
                                 f"{getattr(exc, 'error', None) or type(exc).__name__}"
                                 f"{': ' + str(exc.description)[:200] if getattr(exc, 'description', None) else ''}")
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnreachable(f"the provider's token endpoint could not be used ({type(exc).__name__})") from None
    if not isinstance(token, dict) or not isinstance(token.get("id_token"), str):
        raise ProviderMisbehaved("the token response holds no ID token")
    return dict(token)


def _bounded_json(response, *args, **kwargs):
    """The token response read with the discovery document's bounds (size, nesting) before Authlib
    parses it."""
    body = response.raw.read(MAX_DOCUMENT_BYTES + 1, decode_content=True)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ProviderUnreachable(f"the provider's token response is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        _depth(json.loads(body or b"{}"))
    except (ValueError, RecursionError):
        raise ProviderUnreachable("the provider's token response is not usable JSON") from None
    response._content, response._content_consumed = body, True
    return response


def _header(token: str) -> dict:
    from joserfc.errors import JoseError
    from joserfc.jws import extract_compact

    try:
        return dict(extract_compact(token.encode("ascii")).protected)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise ProviderMisbehaved(f"the token is not a signed JWT ({type(exc).__name__})") from None


def verified_claims(token: str, providers: Providers, provider: Provider, *, client_id: str, now: float,
                    nonce: str | None, logout: bool = False) -> dict:
    """The claims of an ID token (or, ``logout``, a back-channel logout token) from ``provider`` for
    ``client_id``, once every check in the module's docstring passes; else ProviderMisbehaved."""
    from joserfc import jwt
    from joserfc.errors import JoseError

    if not isinstance(token, str) or len(token) > 16384:
        raise ProviderMisbehaved("the token is missing or too long")
    header = _header(token)
    alg = header.get("alg")
    if alg not in provider.algs:
        raise ProviderMisbehaved(f"the token's alg {str(alg)[:20]!r} is not allowed (allowed: {', '.join(provider.algs)})")
    kid = header.get("kid")
    keys = providers.keys(provider, kid if isinstance(kid, str) else None)
    if isinstance(kid, str) and not _has_kid(keys, kid):
        raise ProviderMisbehaved(f"the token's key id {kid[:80]!r} is not among the provider's keys")
    try:
        decoded = jwt.decode(token, keys, algorithms=[alg])
    except (JoseError, ValueError, TypeError) as exc:
        raise ProviderMisbehaved(f"the token's signature does not verify with the provider's keys "
                                 f"({type(exc).__name__})") from None
    claims = dict(decoded.claims)
    _check_claims(claims, issuer=provider.issuer, client_id=client_id, now=now, nonce=nonce, logout=logout)
    return claims


def _number(claims: dict, name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        # NaN and Infinity (which JSON parsers accept) would pass every comparison below
        raise ProviderMisbehaved(f"the token's {name} is missing or not a finite number")
    return float(value)


def _check_claims(claims: dict, *, issuer: str, client_id: str, now: float, nonce: str | None, logout: bool) -> None:
    if claims.get("iss") != issuer:
        raise ProviderMisbehaved(f"the token's issuer {str(claims.get('iss'))[:200]!r} is not {issuer!r}")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise ProviderMisbehaved(f"the token's audience {str(audience)[:200]!r} does not hold the client id")
    azp = claims.get("azp")
    if (azp is not None or len(audiences) > 1) and azp != client_id:
        raise ProviderMisbehaved(f"the token's authorised party (azp) {str(azp)[:200]!r} is not the client id")
    expires = _number(claims, "exp", required=True)  # a logout token's too (Back-Channel Logout 1.0, 2.4)
    if now > expires + SKEW_S:
        raise ProviderMisbehaved(f"the token expired {int(now - expires)} s ago")
    issued = _number(claims, "iat", required=True)
    if issued > now + SKEW_S:
        raise ProviderMisbehaved(f"the token was issued {int(issued - now)} s in the future")
    if issued < now - MAX_TOKEN_AGE_S - SKEW_S:
        raise ProviderMisbehaved(f"the token was issued {int(now - issued)} s ago (at most {MAX_TOKEN_AGE_S} s)")
    not_before = _number(claims, "nbf", required=False)
    if not_before is not None and not_before > now + SKEW_S:
        raise ProviderMisbehaved("the token is not valid yet (nbf)")
    if logout:
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
            raise ProviderMisbehaved("the logout token has no back-channel logout event")
        if "nonce" in claims:
            raise ProviderMisbehaved("a logout token must not hold a nonce")
        if not isinstance(claims.get("sub"), str) and not isinstance(claims.get("sid"), str):
            raise ProviderMisbehaved("the logout token names neither a subject nor a session")
        if not isinstance(claims.get("jti"), str):
            raise ProviderMisbehaved("the logout token has no jti")
        return
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise ProviderMisbehaved("the token has no subject")
    if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce or ""):
        raise ProviderMisbehaved("the token's nonce is not this sign-in's")


def at_hash_matches(claims: dict, access_token: str | None, alg: str) -> bool:
    """The ID token's at_hash (when present) matches the access token (OIDC Core 3.1.3.6)."""
    if "at_hash" not in claims or access_token is None:
        return True
    if not isinstance(access_token, str) or not access_token.isascii():
        return False  # an access token is ASCII text (RFC 6749 A.12): anything else matches nothing
    digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[alg[-3:]](
        access_token.encode("ascii")).digest()
    expected = base64.urlsafe_b64encode(digest[:len(digest) // 2]).rstrip(b"=").decode()
    return secrets.compare_digest(expected, str(claims["at_hash"]))


# ---- what the claims say -----------------------------------------------------------------------

def two_factors(idp: IdentityProvider, claims: dict) -> str | None:
    """What in the token counts as two factors (``acr=...``/``amr=...``), or None."""
    acr = claims.get("acr")
    if isinstance(acr, str) and acr in idp.acr_values:
        return f"acr={acr}"
    amr = claims.get("amr")
    for method in amr if isinstance(amr, list) else []:
        if isinstance(method, str) and method in idp.amr_values:
            return f"amr={method}"
    return None


def role_of(idp: IdentityProvider, claims: dict) -> str | None:
    """The roles-file role the role claim's values map to (the first mapped value, in the map's
    order of values: deterministic), or None."""
    values = claims.get(idp.role_claim)
    values = [values] if isinstance(values, str) else values if isinstance(values, list) else []
    held = {v for v in values if isinstance(v, str)}
    for value in sorted(idp.role_map):
        if value in held:
            return idp.role_map[value]
    return None
