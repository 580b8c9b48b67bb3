"""Access to the wire-format files in schemas/ (packaged as `contactgate_schemas`)."""

from __future__ import annotations

import re
import urllib.parse
from importlib import resources
from xml.sax.saxutils import quoteattr

XSD_NAME = "contactgate.xsd"
WSDL_NAME = "contactgate.wsdl"
# The parts of a service address (https://HOST[:PORT][/PATH]) written into the WSDL: a DNS name, an
# IPv4 address or a bracketed IPv6 address, and a path of unreserved characters and slashes.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
_PATH = re.compile(r"^[A-Za-z0-9._~/-]*$")


def read(name: str) -> bytes:
    return resources.files("contactgate_schemas").joinpath(name).read_bytes()


def service_address(url: str) -> str:
    """``url`` as the base of the service's address (https://HOST[:PORT][/PATH], no trailing slash),
    or ValueError saying what is wrong: only https, a host name or address, a port from 1 to 65535 and
    a plain path (no user, query or fragment)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"not an https://HOST[:PORT][/PATH] address: {url!r}") from None
    host = parts.netloc.rpartition(":")[0] if port is not None else parts.netloc
    if parts.scheme != "https":
        raise ValueError(f"must be an https:// address (the service is reached over mutual TLS), not {url!r}")
    if "@" in parts.netloc or not _HOST.match(host or "") or port == 0 or parts.netloc.endswith(":"):
        raise ValueError(f"must be https://HOST[:PORT] with a host name or address and a port 1-65535, not {url!r}")
    if parts.query or parts.fragment or "?" in url or "#" in url or not _PATH.match(parts.path):
        raise ValueError(f"may have only a plain path after the host (letters, digits, - . _ ~ /), not {url!r}")
    return url.rstrip("/")


def wsdl_for(address: str) -> bytes:
    """The WSDL with the service address ``address`` (XML-escaped: checked by `service_address` first)."""
    return read(WSDL_NAME).replace(b'"https://localhost:8443/soap/v1"', quoteattr(address, {'"': "&quot;"}).encode())
