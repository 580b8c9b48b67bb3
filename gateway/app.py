"""The application factory: everything heavy (keys, trust anchors, schemas, database engine) is
loaded here, once per worker process, never per message."""

from __future__ import annotations

import base64
import hashlib
import logging
from http import HTTPStatus

from flask import Flask, Response, request

import contactgate_schemas as schemas
from contactgate_wire.soap import SOAP_PATH
from gateway import forwarded, metrics
from gateway.audit import AuditTrail
from gateway.config import Settings
from gateway.db import make_engine
from gateway.files import ChangeWatch
from gateway.index import disclosure, precedence
from gateway.index.linkage.versions import ModelUnavailable
from gateway.security import vault
from gateway.pipeline import ReceivedBody, handle
from gateway.pipeline.context import Services
from gateway.store import make_store
from gateway.trust import signing_keys
from gateway.trust.pki import TrustAnchors

XML = "text/xml; charset=utf-8"
OVERSIZE_FACTOR = 8
# Set by the front (gateway/front.py): the verified TLS client certificate (DER) and the body it
# has already read and hashed (a ReceivedBody).
PEER_CERT_DER_KEY = "contactgate.peer_cert_der"
RECEIVED_BODY_KEY = "contactgate.received_body"


def trust_anchor_files(settings: Settings) -> list:
    layout = settings.layout
    return [layout.ca_cert, *sorted(layout.trusted_cas_dir.glob("*.pem"))]


class FollowingAnchors:
    """The trust anchors as the trust list stands: reloaded (at most once a second) when a CA is added
    to or removed from the home, so an approved trust change applies without a restart."""

    def __init__(self, settings: Settings, interval_s: float = 1.0):
        self._settings = settings
        self._watch = ChangeWatch(lambda: trust_anchor_files(settings), interval_s)
        self._anchors = TrustAnchors.from_files(trust_anchor_files(settings))

    def __getattr__(self, name):
        if self._watch.changed():
            self._anchors = TrustAnchors.from_files(trust_anchor_files(self._settings))
        return getattr(self._anchors, name)


def check_linkage_model(settings: Settings, engine) -> None:
    """This process reads its linkage models from the home, and the model in use loads and is the
    approved one (gateway.index.linkage.versions); raises ModelUnavailable if not."""
    from gateway.index.linkage import names, versions

    versions.IN_USE.configure(settings.layout.root)
    with engine.connect() as conn:
        versions.IN_USE.model(conn)
    names.is_a_name("")  # the list of given names read now (~0.1 s), not in the first push that needs it


def build_services(settings: Settings) -> Services:
    layout = settings.layout
    vault.for_home(layout.data_keys)  # read once, now: a gateway without its data keys does not start
    engine = make_engine(settings.database_url, timeout_s=settings.database_timeout_s, keys=layout.data_keys)
    # Which source's value is shown (gateway.index.precedence): a bad precedence file, the gateway does not start.
    precedence.attach(engine, precedence.load(settings.precedence_path))
    try:
        check_linkage_model(settings, engine)
    except ModelUnavailable as exc:
        # `serve` refuses to start on this (exit 3); a worker booted later (a reload, gunicorn
        # replacing one) serves on, linking nothing: SubmitUpdates and FindChild answer Unavailable,
        # as a running worker does when the file changes, and reads go on. Raising here would make
        # gunicorn halt the whole node.
        logging.getLogger("contactgate.linkage").error("linkage model unavailable: %s", exc)
    return Services(
        settings=settings,
        engine=engine,
        store=make_store(settings, engine),
        anchors=FollowingAnchors(settings),
        audit=AuditTrail.from_file(layout.audit_key),
        signer=signing_keys.envelope_signer(layout),  # the home's key file, or C_Sign in a PKCS#11 token
        schema_source=schemas.read(schemas.XSD_NAME),
        roles=disclosure.load(settings.roles_path),  # a bad roles file: the gateway does not start
    )


def peer_certificate_der(environ: dict) -> bytes | None:
    """The TLS client certificate the front verified (None under any other server: refused)."""
    return environ.get(PEER_CERT_DER_KEY)


def read_body(stream, limit: int, chunk_size: int = 64 * 1024) -> ReceivedBody:
    """Read the request, keeping at most ``limit + 1`` bytes but hashing all of it (up to
    OVERSIZE_FACTOR x limit), so that even a TooLarge fault is bound to what the client sent."""
    hasher = hashlib.sha256()
    kept = bytearray()
    size = 0
    while chunk := stream.read(chunk_size):
        size += len(chunk)
        if size > limit * OVERSIZE_FACTOR:
            return ReceivedBody(bytes(kept), size, None)  # stop reading: no honest client sends this
        hasher.update(chunk)
        if len(kept) <= limit:
            kept += chunk[: limit + 1 - len(kept)]
    return ReceivedBody(bytes(kept), size, base64.b64encode(hasher.digest()).decode())


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Flask:
    settings = settings or Settings.from_env()
    services = services or build_services(settings)
    services.schema  # compile the XSD now, so a broken schema fails at start-up
    app = Flask("gateway")
    app.config["SERVICES"] = services
    limit = settings.max_message_bytes

    def soap_exchange(environ: dict) -> tuple[str, list, bytes]:
        """POST /soap: one exchange through the pipeline."""
        body = environ.get(RECEIVED_BODY_KEY) or read_body(environ["wsgi.input"], limit)
        client = forwarded.caller(environ, peer_certificate_der(environ), settings.trusted_proxies)
        answer = handle(body, environ.get("HTTP_SOAPACTION"), client.certificate_der, services,
                        source_address=client.address, certificate_problem=client.problem,
                        proxy_der=client.proxy_der)
        return (f"{answer.status} {HTTPStatus(answer.status).phrase}",
                [("Content-Type", XML), ("Content-Length", str(len(answer.body))),
                 ("X-Request-Id", answer.request_id)], answer.body)

    flask_wsgi = app.wsgi_app

    def wsgi_app(environ, start_response):
        """The exchanges go straight to the pipeline; Flask routes the rest (WSDL, XSD, health, CRL).
        Flask's request context and routing cost as much per message as several SQL statements."""
        if environ.get("PATH_INFO") == SOAP_PATH and environ.get("REQUEST_METHOD") == "POST":
            status, headers, body = soap_exchange(environ)  # plain HTTP on a node's TLS port: refused, audited
            start_response(status, headers)
            return [body]
        if environ.get(forwarded.PLAIN_HTTP):
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"this port requires TLS\n"]
        return flask_wsgi(environ, start_response)

    app.wsgi_app = wsgi_app

    @app.get(SOAP_PATH)
    def wsdl():
        if "wsdl" not in {k.lower() for k in request.args}:
            return Response("use ?wsdl\n", status=404, content_type="text/plain")
        address = request.host_url.rstrip("/") + SOAP_PATH
        return Response(schemas.wsdl_for(address), content_type=XML)

    @app.get("/soap/" + schemas.XSD_NAME)
    @app.get(SOAP_PATH + "/" + schemas.XSD_NAME)
    def xsd():
        return Response(schemas.read(schemas.XSD_NAME), content_type=XML)

    @app.get("/healthz")
    def healthz():
        return Response("ok\n", content_type="text/plain")

    readiness = metrics.Readiness(settings, services.engine)  # the worker's engine, not a second one

    @app.get("/readyz")
    def readyz():
        """Ready when the database answers, degraded (still 200) while Redis does not (liveness is /healthz)."""
        ready, text = readiness.check()
        return Response(text, status=200 if ready else 503, content_type="text/plain")

    @app.get("/crl")
    def crl():
        """The gateway CA's current revocation list: DER (application/pkix-crl), or ?format=pem."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        path = services.settings.layout.crl
        if not path.exists():
            return Response("no CRL published yet\n", status=404, content_type="text/plain")
        pem = path.read_bytes()
        if request.args.get("format") == "pem":
            return Response(pem, content_type="application/x-pem-file")
        return Response(x509.load_pem_x509_crl(pem).public_bytes(Encoding.DER), content_type="application/pkix-crl")

    logging.getLogger("contactgate").setLevel(logging.INFO)
    return app
