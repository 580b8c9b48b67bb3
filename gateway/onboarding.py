"""`contactgate org check`: the onboarding check an officer runs with a new organisation before
go-live. It uses the organisation's own certificate and key, reads the registry on the gateway
host, and sends a signed `Ping`, reporting stage by stage what passes, what fails, why, and the fix
to try. Stages after a failed network stage are reported as not run.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from contactgate_wire import soap, wsse
from contactgate_wire.answers import AnswerVerifier
from contactgate_wire.certificates import TrustAnchors
from contactgate_wire.soap import CG, q
from gateway.trust import pki, registry

SKEW_WARN_S = 30
SKEW_FAIL_S = 60
# Which stage a fault from the gateway belongs to.
FAULT_STAGES = {"NotAccredited": "accreditation", "ScopeDenied": "accreditation",
                "CertificateRejected": "registered", "SignatureInvalid": "signature",
                "SecurityHeaderInvalid": "signature", "TimestampInvalid": "clock skew", "Replay": "signature"}


@dataclass
class Stage:
    name: str
    status: str  # pass, warn, fail, not run
    detail: str = ""
    fix: str = ""

    def as_json(self) -> dict:
        return asdict(self)


def _public_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check(engine, settings, code: str, cert_file: Path, key_file: Path, url: str, ca_file: Path,
          signing_bundle: bytes, now: dt.datetime | None = None) -> list[Stage]:
    now = now or dt.datetime.now(dt.timezone.utc)
    stages: list[Stage] = []

    def add(name, ok, detail="", fix="", warn=False):
        stages.append(Stage(name, "warn" if ok and warn else ("pass" if ok else "fail"), detail, "" if ok and not warn else fix))
        return ok

    # ---- local: the files, the registry ----
    try:
        cert = pki.load_cert_pem(Path(cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        add("certificate and key", False, f"cannot read them: {exc}", "give the organisation's key.pem "
            "(`contactgate csr`, unencrypted) and the cert.pem `contactgate cert approve` wrote")
        return stages + [Stage(n, "not run") for n in ("certificate dates", "registered", "accreditation", "TCP",
                                                       "server certificate", "client certificate", "Ping",
                                                       "signature", "clock skew", "scopes")]
    key_ok = add("certificate and key", _public_der(cert.public_key()) == _public_der(key.public_key()),
                 "the key matches the certificate" if _public_der(cert.public_key()) == _public_der(key.public_key())
                 else "the key is not the certificate's key", "use the key.pem written beside this cert.pem")
    left = cert.not_valid_after_utc - now
    in_dates = cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    add("certificate dates", in_dates,
        f"valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}"
        + (f" ({left.days} days left)" if in_dates else ""),
        "a new certificate: a new key and request (`contactgate csr --org CODE --out-dir DIR`), proposed "
        "with `contactgate cert issue CODE --csr DIR/request.csr` and approved by a second officer" if not in_dates
        else "issue the next certificate before this one ends", warn=in_dates and left.days < 30)
    fingerprint = pki.fingerprint(cert)
    with engine.connect() as conn:
        record = registry.get_cert(conn, fingerprint)
        org = registry.get_org(conn, code)
    if record is None:
        add("registered", False, f"certificate {fingerprint[:16]}… is not registered",
            f"propose it with `contactgate cert register {code} --cert {cert_file}` (or have one issued: "
            f"`contactgate cert issue {code} --csr FILE`), and have a second officer approve it")
    elif org is None or record.org_code != org.code:
        add("registered", False, f"the certificate is registered to {record.org_code}, not {code}",
            "use this organisation's own certificate")
    elif record.revoked_at is not None:
        add("registered", False, f"the certificate was revoked on {record.revoked_at:%Y-%m-%d} "
            f"({record.revoked_reason})", f"a new one: a new key and request (`contactgate csr --org {org.code} "
            f"--out-dir DIR`), proposed with `contactgate cert issue {org.code} --csr DIR/request.csr` and "
            "approved by a second officer")
    else:
        add("registered", True, f"registered to {org.code}, not revoked")
    if org is None:
        add("accreditation", False, f"no organisation {code}", f"`contactgate org add {code} …`")
    else:
        status = org.effective_status(now.date())
        fixes = {"registered": f"propose it: `contactgate org accredit {org.code} --scope … --expires …`",
                 "pending_approval": f"a second officer approves it: `contactgate org approve {org.code} --proposal "
                                     f"{org.pending[0].id if org.pending else 'ID'}`",
                 "suspended": f"`contactgate org reinstate {org.code} --reason …`, approved by a second officer",
                 "expired": f"renew it: `contactgate org accredit {org.code} …`, approved by a second officer",
                 "revoked": "a revoked organisation is registered again under a new code"}
        add("accreditation", status == "accredited",
            f"{status}" + (f" until {org.expires}" if org.expires else "") + (f" ({org.status_reason})" if org.status_reason else ""),
            fixes.get(status, ""))

    # ---- the network: TCP, TLS both ways, a signed Ping ----
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    remaining = ["server certificate", "client certificate", "Ping", "signature", "clock skew", "scopes"]
    if not key_ok:  # nothing on the wire can work with a key that is not the certificate's
        return stages + [Stage(n, "not run") for n in ["TCP", *remaining]]
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        add("TCP", False, f"cannot connect to {host}:{port} ({exc.strerror or exc})",
            "is `contactgate serve` running, bound to that address, and the port open in the firewall?")
        return stages + [Stage(n, "not run") for n in remaining]
    add("TCP", True, f"connected to {host}:{port}")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    try:
        with socket.create_connection((host, port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            server = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            add("server certificate", True, f"{server.subject.rfc4514_string()}, trusted through {ca_file}")
            remaining.remove("server certificate")
            tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = tls.recv(64)
            if not answer.startswith(b"HTTP/1.1 200"):
                raise ConnectionResetError("no answer to /healthz")
    except ssl.SSLCertVerificationError as exc:
        add("server certificate", False, f"not trusted: {exc.verify_message}",
            "give the gateway CA with --ca (ca.pem from `cert approve --out-dir`), and connect by a name in the server "
            "certificate (`contactgate init --server-name NAME`)")
        return stages + [Stage(n, "not run") for n in remaining[1:]]
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        if "server certificate" in remaining:
            remaining.remove("server certificate")
            add("server certificate", False, f"handshake failed: {exc}", "check the URL is the gateway's TLS port")
            return stages + [Stage(n, "not run") for n in remaining]
        add("client certificate", False, f"the gateway refused the client certificate ({exc})",
            "it must be issued by a CA on the gateway's trust list, within its dates and not revoked")
        return stages + [Stage(n, "not run") for n in remaining[1:]]
    add("client certificate", True, "accepted at the handshake")

    try:
        answer = _signed_ping(f"{parts.scheme}://{parts.netloc}", cert_file, key_file, ca_file, signing_bundle)
    except GatewayRefused as refused:
        stage = FAULT_STAGES.get(refused.code, "Ping")
        add("Ping", False, f"refused with {refused.code}: {refused.message}",
            f"see the {stage!r} stage" if stage != "Ping" else "see the gateway's log")
        return stages + [Stage(n, "not run") for n in ("signature", "clock skew", "scopes")]
    except Exception as exc:  # the answer's signature or digest did not verify, or the call failed
        add("Ping", False, f"{type(exc).__name__}: {exc}",
            "check the gateway signing bundle (`contactgate signing-key bundle`) and the URL")
        return stages + [Stage(n, "not run") for n in ("signature", "clock skew", "scopes")]
    add("Ping", True, f"answered for {answer['Organisation']}")
    add("signature", True, "the request's signature was accepted; the answer's signature and RequestDigest verified")
    gateway_time = answer["GatewayTime"]
    skew = abs((dt.datetime.now(dt.timezone.utc) - gateway_time).total_seconds())
    add("clock skew", skew <= SKEW_FAIL_S, f"{skew:.0f} s between this host and the gateway",
        f"synchronise the clocks (NTP): messages are refused beyond {SKEW_FAIL_S} s", warn=SKEW_WARN_S < skew <= SKEW_FAIL_S)
    scopes = answer.get("Scope") or []
    add("scopes", bool(scopes), f"holds {', '.join(scopes) or 'none'} until {answer['AccreditationExpires']}",
        "propose the scopes it needs: `contactgate org accredit …`")
    return stages


class GatewayRefused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def _signed_ping(base_url: str, cert_file: Path, key_file: Path, ca_file: Path, signing_bundle: bytes) -> dict:
    """A Ping as the organisation sends it: signed with its key over mutual TLS, the answer trusted
    only when signed by the gateway's published signing certificate and bound to this request
    (the same checks the SDK makes, from the shared `contactgate_wire`)."""
    ping = etree.Element(q(CG, "Ping"), nsmap={"cg": CG})
    requester = etree.SubElement(ping, q(CG, "Requester"))
    etree.SubElement(requester, q(CG, "UserId")).text = "org-check"
    etree.SubElement(requester, q(CG, "Role")).text = "onboarding check"
    envelope = soap.new_envelope(ping)
    wsse.EnvelopeSigner(Path(key_file).read_bytes(), Path(cert_file).read_bytes()).sign(envelope)
    request = soap.to_bytes(envelope)
    response = requests.post(base_url.rstrip("/") + soap.SOAP_PATH, data=request, timeout=15,
                             cert=(str(cert_file), str(key_file)), verify=str(ca_file),
                             headers={"Content-Type": "text/xml; charset=utf-8",
                                      "SOAPAction": f'"{soap.SOAP_ACTION_PREFIX}Ping"'})
    answer = soap.parse_untrusted(response.content)
    verified = AnswerVerifier(TrustAnchors.from_files([Path(ca_file)]), pki.load_certs_pem(signing_bundle)
                              ).verify(answer, soap.digest_b64(request))
    code = soap.fault_code(answer)
    if code is not None:
        raise GatewayRefused(code, verified.body.findtext(f".//{q(CG, 'Message')}") or "")
    result = verified.payload
    if result is None or result.tag != q(CG, "PingResponse"):
        raise ValueError("the answer is not a PingResponse")
    return {"Organisation": result.findtext(q(CG, "Organisation")),
            "AccreditationExpires": result.findtext(q(CG, "AccreditationExpires")),
            "Scope": [s.text for s in result.findall(q(CG, "Scope"))],
            "GatewayTime": wsse.parse_time(result.findtext(q(CG, "GatewayTime")))}


def passed(stages: list[Stage]) -> bool:
    return all(s.status in ("pass", "warn") for s in stages)
