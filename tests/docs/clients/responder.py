"""A hostile gateway for the client guides' tests: a small TLS responder in front of a real gateway.

It forwards each request unchanged to the gateway (over mutual TLS, with the calling organisation's
credentials, so the gateway's RequestDigest is the SHA-256 of the very bytes the guide sent), then
serves the gateway's answer as a variant: mostly re-signed with the gateway's own signing key, read
from its home (what an attacker who can only rearrange a signed answer, or who holds a stale one,
can make), and the WSDL with its address pointed back at the responder. The variant is the first
segment of the path: a guide run with CONTACTGATE_URL=https://127.0.0.1:PORT/<variant> meets it on
every answer.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import ssl
import threading
import uuid
from pathlib import Path

import requests
import xmlsec
from lxml import etree

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"
CG = "urn:contactgate:v1"
X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BASE64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
# What an injected or forged value reads: a guide that prints it was fooled.
FORGED = "ZZZZ-ZZZZ-ZZZZ-ZZZZ"

# Each variant: what a guide must do with it (refuse: exit non-zero before printing SubmitUpdates).
VARIANTS = {
    "faithful": "the gateway's answer as it sent it",
    "unsigned": "(a) the answer with its ds:Signature removed",
    "body-only": "(b) re-signed over the soap:Body only (the Timestamp present, unsigned)",
    "wrapped-body": "(c) the signed Body moved into a header wrapper, a forged Body (no wsu:Id) in its place",
    "wrapped-timestamp": "(c') a stale answer: signed an hour ago, its signed Timestamp moved into a header "
                         "wrapper, a fresh unsigned one in the Security header",
    "digest-changed": "(d) RequestDigest changed, re-signed: an answer to another request",
    "header-digest": "(e) as (d), plus the request's true RequestDigest and a forged ChildId in an unsigned header",
    "header-values": "a good re-signed answer plus forged Outcome, ChildId, FamilyName and the true "
                     "RequestDigest in an unsigned header: accepted, the injected values never shown",
    "expired": "re-signed with a Timestamp that expired 55 minutes ago",
    "foreign-x509": "signed by a foreign key whose certificate travels in ds:KeyInfo/ds:X509Data",
}


def q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def sign(envelope: etree._Element, key_pem: bytes, cert_pem: bytes, *, parts=("body", "timestamp"),
         created: dt.datetime | None = None, key_info: str = "token") -> etree._Element:
    """Replace the answer's wsse:Security with a fresh Timestamp and a signature over ``parts``
    (RSA-SHA256, SHA-256, exclusive C14N, by wsu:Id), as the gateway signs: the certificate in a
    BinarySecurityToken (``key_info="token"``) or in ds:KeyInfo/ds:X509Data (``"x509data"``)."""
    header = envelope.find(q(SOAP, "Header"))
    if header is None:
        header = etree.Element(q(SOAP, "Header"))
        envelope.insert(0, header)
    for old in header.findall(q(WSSE, "Security")):
        header.remove(old)
    security = etree.SubElement(header, q(WSSE, "Security"), nsmap={"wsse": WSSE, "wsu": WSU})
    created = created or dt.datetime.now(dt.timezone.utc)
    timestamp = etree.SubElement(security, q(WSU, "Timestamp"), {q(WSU, "Id"): f"TS-{uuid.uuid4().hex}"})
    etree.SubElement(timestamp, q(WSU, "Created")).text = _time(created)
    etree.SubElement(timestamp, q(WSU, "Expires")).text = _time(created + dt.timedelta(minutes=5))
    body = envelope.find(q(SOAP, "Body"))
    body.set(q(WSU, "Id"), f"Body-{uuid.uuid4().hex}")
    signature = xmlsec.template.create(envelope, xmlsec.Transform.EXCL_C14N, xmlsec.Transform.RSA_SHA256)
    security.insert(0, signature)
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_memory(key_pem, xmlsec.KeyFormat.PEM, None)
    for target in [{"body": body, "timestamp": timestamp}[part] for part in parts]:
        reference = xmlsec.template.add_reference(signature, xmlsec.Transform.SHA256,
                                                  uri="#" + target.get(q(WSU, "Id")))
        xmlsec.template.add_transform(reference, xmlsec.Transform.EXCL_C14N)
        context.register_id(target, "Id", WSU)
    key_info_node = xmlsec.template.ensure_key_info(signature)
    context.sign(signature)
    certificate = b"".join(line for line in cert_pem.splitlines() if not line.startswith(b"-----")).decode()
    if key_info == "x509data":
        data = etree.SubElement(key_info_node, q(DS, "X509Data"))
        etree.SubElement(data, q(DS, "X509Certificate")).text = certificate
    else:
        token = etree.Element(q(WSSE, "BinarySecurityToken"), {"ValueType": X509V3, "EncodingType": BASE64,
                                                              q(WSU, "Id"): f"X509-{uuid.uuid4().hex}"})
        token.text = certificate
        security.insert(1, token)
        reference = etree.SubElement(etree.SubElement(key_info_node, q(WSSE, "SecurityTokenReference")),
                                     q(WSSE, "Reference"))
        reference.set("URI", "#" + token.get(q(WSU, "Id")))
        reference.set("ValueType", X509V3)
    return envelope


def _forge(element: etree._Element) -> None:
    """Change what a guide prints: every ChildId, Outcome and FamilyName."""
    for node in element.iter(q(CG, "ChildId")):
        node.text = FORGED
    for node in element.iter(q(CG, "FamilyName")):
        node.text = "Forged"


def _injected_header(envelope: etree._Element, request_digest: str | None) -> None:
    """Unsigned values, first in the document, named as the answer's own."""
    header = envelope.find(q(SOAP, "Header"))
    injected = etree.Element(q(CG, "Injected"), nsmap={"cg": CG})
    for name, value in (("Outcome", "updated"), ("ChildId", FORGED), ("FamilyName", "Forged"),
                        ("RequestDigest", request_digest)):
        etree.SubElement(injected, q(CG, name)).text = value
    header.insert(0, injected)


class Responder:
    """The hostile gateway: ``url(variant)``, or ``url(variant, foreign_tls=True)`` for a second
    port whose TLS certificate comes from ``foreign`` (a CA the gateway's clients must not trust)."""

    def __init__(self, gateway, credentials: Path, foreign_tls: tuple[Path, Path], foreign_signer: tuple[bytes, bytes]):
        self.gateway = gateway
        self.credentials = credentials
        home = gateway.home
        self.signing = ((home / "signing" / "key.pem").read_bytes(), (home / "signing" / "cert.pem").read_bytes())
        self.foreign_signer = foreign_signer
        self._local = threading.local()
        self.servers = {}
        for name, (cert, key) in {"gateway": (home / "tls" / "server.pem", home / "tls" / "server-key.pem"),
                                  "foreign": foreign_tls}.items():
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
            server.daemon_threads = True
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert), str(key))
            server.socket = context.wrap_socket(server.socket, server_side=True)
            self.servers[name] = server
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def url(self, variant: str, *, foreign_tls: bool = False) -> str:
        assert variant in VARIANTS, variant
        port = self.servers["foreign" if foreign_tls else "gateway"].server_address[1]
        return f"https://127.0.0.1:{port}/{variant}"

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.cert = (str(self.credentials / "cert.pem"), str(self.credentials / "key.pem"))
            session.verify = str(self.credentials / "ca.pem")
            session.trust_env = False
        return session

    def answer(self, variant: str, sent: bytes, answer: bytes) -> bytes:
        if variant == "faithful":
            return answer
        envelope = etree.fromstring(answer)
        body = envelope.find(q(SOAP, "Body"))
        digest = body.find(f".//{q(CG, 'RequestDigest')}")
        true_digest = base64.b64encode(hashlib.sha256(sent).digest()).decode()
        if variant == "unsigned":
            for signature in envelope.iter(q(DS, "Signature")):
                signature.getparent().remove(signature)
        elif variant == "body-only":
            sign(envelope, *self.signing, parts=("body",))
        elif variant == "wrapped-body":
            sign(envelope, *self.signing)
            forged = etree.Element(q(SOAP, "Body"))
            forged.extend(etree.fromstring(etree.tostring(child)) for child in body)
            _forge(forged)
            envelope.replace(body, forged)
            wrapper = etree.Element(q(CG, "Wrapper"), nsmap={"cg": CG})
            wrapper.append(body)
            envelope.find(q(SOAP, "Header")).insert(0, wrapper)
        elif variant == "wrapped-timestamp":
            sign(envelope, *self.signing, created=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
            header = envelope.find(q(SOAP, "Header"))
            signed = header.find(f"{q(WSSE, 'Security')}/{q(WSU, 'Timestamp')}")
            fresh = etree.Element(q(WSU, "Timestamp"))
            now = dt.datetime.now(dt.timezone.utc)
            etree.SubElement(fresh, q(WSU, "Created")).text = _time(now)
            etree.SubElement(fresh, q(WSU, "Expires")).text = _time(now + dt.timedelta(minutes=5))
            signed.getparent().replace(signed, fresh)
            wrapper = etree.Element(q(CG, "Wrapper"), nsmap={"cg": CG})
            wrapper.append(signed)
            header.insert(0, wrapper)
        elif variant in ("digest-changed", "header-digest"):
            if digest is not None:
                digest.text = base64.b64encode(hashlib.sha256(b"another request").digest()).decode()
            sign(envelope, *self.signing)
            if variant == "header-digest":
                _injected_header(envelope, true_digest)
        elif variant == "header-values":
            sign(envelope, *self.signing)
            _injected_header(envelope, true_digest)
        elif variant == "expired":
            sign(envelope, *self.signing, created=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
        elif variant == "foreign-x509":
            sign(envelope, *self.foreign_signer, key_info="x509data")
        return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")

    def _handler(self):
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self, method: str):
                _, variant, rest = (self.path.split("/", 2) + [""])[:3]
                if variant not in VARIANTS:
                    return self._send(404, b"no such variant\n", "text/plain")
                sent = self._read_body() if method == "POST" else b""
                headers = {name: self.headers[name] for name in ("Content-Type", "SOAPAction") if self.headers[name]}
                upstream = responder._session().request(method, f"{responder.gateway.url}/{rest}", data=sent or None,
                                                        headers=headers, timeout=60)
                content = upstream.content
                if method == "GET" and rest.startswith("soap/v1?"):  # the WSDL: calls come back here
                    base = f"https://127.0.0.1:{self.server.server_address[1]}/{variant}"
                    content = content.replace(f'location="{responder.gateway.url}/soap/v1"'.encode(),
                                              f'location="{base}/soap/v1"'.encode())
                elif method == "POST":
                    content = responder.answer(variant, sent, content)
                self._send(upstream.status_code, content, upstream.headers.get("Content-Type", "text/xml"))

            def _send(self, status: int, content: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        return Handler
