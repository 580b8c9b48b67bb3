"""WSS4J 1.6 itself (Debian's libwss4j-java, with Santuario: what the distribution ships to JAX-WS RI
users) signs requests with its own defaults and the settings the integrators' guide names, run by
tests/interop/wss4j/Sign.java against the real gateway (issue 29): its default key reference
(issuer and serial number) and the others it offers are accepted; its default algorithms and parts
get one fault naming every setting to change. Skipped when Java or WSS4J is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, load_pem_private_key, pkcs12

from tests.gateway.pipeline.attacks import assert_post_refused, fault_message, find_kwargs
from tests.wire.wss4j_shaped import without_security

SIGNER = Path(__file__).parent / "wss4j" / "Sign.java"
JARS = [Path("/usr/share/java") / name for name in ("wss4j.jar", "xmlsec.jar", "commons-logging.jar",
                                                                   "slf4j-api.jar")]
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
PASSWORD = "wss4j-test"
# name -> (key identifier, signature algorithm, digest algorithm, Timestamp signed with the Body)
JOBS = {
    "IssuerSerial": ("IssuerSerial", RSA_SHA256, SHA256, "yes"),
    "SKIKeyIdentifier": ("SKIKeyIdentifier", RSA_SHA256, SHA256, "yes"),
    "Thumbprint": ("Thumbprint", RSA_SHA256, SHA256, "yes"),
    "DirectReference": ("DirectReference", RSA_SHA256, SHA256, "yes"),
    "all-defaults": ("IssuerSerial", "default", "default", "no"),
}
# What is looked up is the same on both backends (tests/gateway/pipeline/test_wssecurity.py runs on
# both); here it is how WSS4J writes it: one backend, one JVM.
pytestmark = pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)


@pytest.fixture(scope="session")
def wss4j_signer(tmp_path_factory) -> list[str]:
    """The command that runs Sign.java, compiled once."""
    java, javac = shutil.which("java"), shutil.which("javac")
    if java is None or javac is None or not all(jar.exists() for jar in JARS):
        pytest.skip("a JDK 11+ and WSS4J 1.6 (apt install default-jdk-headless libwss4j-java) are needed")
    classes = tmp_path_factory.mktemp("wss4j-classes")
    class_path = ":".join(map(str, JARS))
    done = subprocess.run([javac, "-nowarn", "-cp", class_path, "-d", str(classes), str(SIGNER)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [java, "-cp", f"{classes}:{class_path}", "Sign"]


@pytest.fixture(scope="module")
def wss4j_signed(gateway, clients, wss4j_signer, tmp_path_factory):
    """name -> a FindChild of LA's signed by WSS4J as JOBS says (one JVM for all of them)."""
    work = tmp_path_factory.mktemp("wss4j")
    directory = gateway.certs["la"]
    key = load_pem_private_key((directory / "key.pem").read_bytes(), None)
    certificate = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
    (work / "la.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"la", key, certificate, None, BestAvailableEncryption(PASSWORD.encode())))
    jobs = []
    for name, options in JOBS.items():
        (work / f"{name}.xml").write_bytes(without_security(clients("la").build_request("FindChild", **find_kwargs())))
        jobs.append(",".join([str(work / f"{name}.xml"), str(work / f"{name}.signed.xml"), *options]))
    done = subprocess.run([*wss4j_signer, str(work / "la.p12"), PASSWORD, "la", *jobs], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: (work / f"{name}.signed.xml").read_bytes() for name in JOBS}


@pytest.mark.parametrize("name", ["IssuerSerial", "SKIKeyIdentifier", "Thumbprint", "DirectReference"])
def test_wss4j_16_signature_with_each_key_reference_is_accepted(wss4j_signed, clients, name):
    data = wss4j_signed[name]
    status, answer = clients("la").post_raw("FindChild", data)  # the answer's signature and RequestDigest checked
    assert status == 200, fault_message(answer)


def test_wss4j_16_defaults_get_one_fault_naming_each_setting_to_change(wss4j_signed, gateway, clients):
    data = wss4j_signed["all-defaults"]
    assert b"X509IssuerSerial" in data and b"rsa-sha1" in data
    message = fault_message(assert_post_refused(gateway, clients("la"), "FindChild", data, "SignatureInvalid",
                                                org_code="LA"))
    assert message.startswith("The signature does not follow the profile in ")
    for setting in ("SignatureMethod must be RSA-SHA256", "DigestMethod must be SHA-256",
                    "wsse:Security must hold exactly one wsu:Timestamp",
                    "The signature must reference soap:Body and wsu:Timestamp"):
        assert setting in message
