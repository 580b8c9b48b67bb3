"""The metadata listener (`contactgate serve --metadata-bind HOST:PORT`, off by default): the WSDL,
with its WS-SecurityPolicy, and the XSD it imports, over HTTPS with the gateway's server certificate
and no client certificate asked for -- for the tools that cannot present one (wsimport, `python -m
zeep`, svcutil, node-soap's WSDL fetch). It serves those two files and nothing else: no exchange,
no health or CRL, no other page; every other path is 404 and every method but GET and HEAD 405.

The files sit where their relative ``schemaLocation`` finds them: ``/soap/v1?wsdl`` beside
``/soap/contactgate.xsd`` (as on the service's own port), and ``/contactgate.wsdl`` beside
``/contactgate.xsd``. The WSDL's ``soap:address`` is the service's (mutual TLS), not this
listener's: ``service_url`` (``--service-url``, required with ``--metadata-bind``), the same whatever
Host a request names -- an address made of the Host header would let one request poison a shared
cache or CDN for every integrator. Nothing here may be cached by a shared cache (no-store, Vary: Host).
The two files are built once, when the app is made: a request reads no file.

It runs on the same hardened front as the service (gateway/front.py: handshake, head and body
deadlines, connection caps of its own), in the same worker processes (gateway/server.py).
"""

from __future__ import annotations

import contactgate_schemas as schemas
from contactgate_wire.soap import SOAP_PATH

XML = "text/xml; charset=utf-8"
MAX_REQUEST_BYTES = 1024  # requests here carry no body
WSDL_PATHS = frozenset({SOAP_PATH, "/" + schemas.WSDL_NAME})
XSD_PATHS = frozenset({"/soap/" + schemas.XSD_NAME, f"{SOAP_PATH}/{schemas.XSD_NAME}", "/" + schemas.XSD_NAME})
NOT_CACHED = [("Cache-Control", "no-store"), ("Vary", "Host")]


def application(service_url: str):
    """The listener's WSGI app: the WSDL (its address ``service_url``, checked by
    `contactgate_schemas.service_address`) and the XSD; nothing else."""
    xsd = schemas.read(schemas.XSD_NAME)
    wsdl = schemas.wsdl_for(schemas.service_address(service_url) + SOAP_PATH)

    def app(environ, start_response):
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        known = path in WSDL_PATHS or path in XSD_PATHS
        if known and method not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", b"only GET here\n", "text/plain",
                           [("Allow", "GET, HEAD")])
        asked_wsdl = any(p.split("=")[0] == "wsdl" for p in environ.get("QUERY_STRING", "").lower().split("&"))
        if path == SOAP_PATH and asked_wsdl or path == "/" + schemas.WSDL_NAME:
            return _answer(start_response, "200 OK", wsdl, XML)
        if path in XSD_PATHS:
            return _answer(start_response, "200 OK", xsd, XML)
        return _answer(start_response, "404 Not Found", b"not found: this port serves only /soap/v1?wsdl and "
                       b"/soap/contactgate.xsd\n", "text/plain")

    return app


def _answer(start_response, status: str, body: bytes, kind: str, extra: list | None = None):
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body))), *NOT_CACHED,
                            *(extra or [])])
    return [body]
