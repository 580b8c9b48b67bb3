"""nginx in front of several gateway nodes on this machine, as deploy/nginx/contactgate.conf lays
them out (docs/operations.md "nginx in front of several nodes"): for the tests of that layout and the benchmark of
one node against two. The shipped configuration is used as it is, pointed at a local home, ports and
addresses; nginx is the distribution's, with its njs module. The hop from nginx to the nodes is mutual
TLS: nginx's proxy certificate is made as an operator makes it (its key and CSR on the nginx side,
`contactgate proxy issue` by one senior officer, `proxy approve` by a second).
"""

from __future__ import annotations

import http.client
import os
import ssl
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from connectors.client import GatewayClient
from contactgate_local import LocalGateway, free_port
from contactgate_wire.soap import SOAP_ACTION_PREFIX, SOAP_PATH

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
JS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
PROXY_ADDRESS = "127.0.0.2"  # nginx connects to the nodes from here: their CONTACTGATE_TRUSTED_PROXIES
PROXY_NAME = "nginx-local"


def available() -> bool:
    return Path(NGINX).exists() and JS_MODULE.exists()


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}:\n{log.read_text(errors='replace')[-3000:]}")


def wait_for_port_free(port: int, what: str, timeout_s: float = 30) -> None:
    """Until nothing accepts on ``port``: a node whose master was killed leaves its workers
    listening until each sees its parent gone (a second or so). A node started meanwhile would
    find its port taken, and a probe would reach the dying workers instead of it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: something still listens on {port} after {timeout_s:.0f} s")


def make_key_and_csr(directory: Path, name: str) -> tuple[Path, Path]:
    """A proxy's key and CSR (CN = its name), as the nginx host makes them (`openssl req -new`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from gateway.trust import pki

    directory.mkdir(parents=True, exist_ok=True)
    key = pki.new_ec_key()
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256()))
    key_path, csr_path = directory / f"{name}-key.pem", directory / f"{name}.csr"
    pki.write_private(key_path, pki.key_pem(key))
    csr_path.write_bytes(request.public_bytes(pki.serialization.Encoding.PEM))
    return key_path, csr_path


def register_proxy(gateway: LocalGateway, directory: Path, name: str = PROXY_NAME, *, proposer: str = "senior-s",
                   approver: str = "senior-t") -> tuple[Path, Path]:
    """A proxy certificate for ``name`` made and registered by two senior officers: (cert, key) paths."""
    from contactgate_local import proposal_id

    key_path, csr_path = make_key_and_csr(directory, name)
    proposed = gateway.cli("proxy", "issue", "--name", name, "--csr", str(csr_path), officer=proposer)
    cert_path = directory / f"{name}.pem"
    gateway.cli("proxy", "approve", "--proposal", proposal_id(proposed.output), "--out", str(cert_path),
                officer=approver)
    return cert_path, key_path


class Cluster:
    """One gateway home (``gateway``, set up, not started), ``nodes`` processes of `serve
    --behind-proxy` on it, and nginx in front with a registered proxy certificate. The home's
    environment must name PROXY_ADDRESS in CONTACTGATE_TRUSTED_PROXIES."""

    def __init__(self, gateway: LocalGateway, prefix: Path, nodes: int = 2, workers: int = 1):
        self.gateway = gateway
        self.prefix = prefix
        self.workers = workers
        self.node_ports = [free_port() for _ in range(nodes)]
        self.metrics_ports = [free_port() for _ in range(nodes)]
        self.nodes: list[subprocess.Popen | None] = [None] * nodes
        self.nginx_port = free_port()
        self.nginx: subprocess.Popen | None = None
        self.proxy_identity: tuple[Path, Path] | None = None  # nginx's proxy certificate and key

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.nginx_port}"

    def start_node(self, index: int) -> None:
        log = self.prefix / f"node{index}.log"
        wait_for_port_free(self.node_ports[index], f"node {index}")
        with open(log, "ab") as out:
            self.nodes[index] = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--behind-proxy", "--workers", str(self.workers),
                 "--bind", f"127.0.0.1:{self.node_ports[index]}",
                 "--metrics-bind", f"127.0.0.1:{self.metrics_ports[index]}"],
                env=self.gateway.env(), stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.node_ports[index], self.nodes[index], f"node {index}", log)

    def stop_node(self, index: int, sig: int = signal.SIGTERM) -> None:
        process = self.nodes[index]
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def nginx_config(self) -> str:
        """deploy/nginx/contactgate.conf as shipped, pointed at this home, these ports and addresses,
        inside a minimal main configuration."""
        site = (DEPLOY / "contactgate.conf").read_text()
        for shipped, here in (("/var/lib/contactgate", str(self.gateway.home)),
                              ("/etc/nginx/contactgate/client_cert.js", str(DEPLOY / "client_cert.js")),
                              ("    server 10.0.0.11:8441 max_fails=1 fail_timeout=5s;\n"
                               "    server 10.0.0.12:8441 max_fails=1 fail_timeout=5s;\n",
                               "".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n"
                                       for port in self.node_ports)),
                              ("proxy_bind 10.0.0.10;", f"proxy_bind {PROXY_ADDRESS};"),
                              ("/etc/nginx/contactgate/proxy.pem", str(self.proxy_identity[0])),
                              ("/etc/nginx/contactgate/proxy-key.pem", str(self.proxy_identity[1])),
                              ("proxy_ssl_name gateway.example.org;", "proxy_ssl_name localhost;"),
                              ("listen 8443 ssl;", f"listen 127.0.0.1:{self.nginx_port} ssl;")):
            assert shipped in site, f"the shipped configuration no longer has {shipped!r}"
            site = site.replace(shipped, here)
        (self.prefix / "contactgate.conf").write_text(site)
        return "\n".join([
            f"load_module {JS_MODULE};", "worker_processes 1;", f"pid {self.prefix}/nginx.pid;",
            # Started as root, nginx's workers would be `nobody`, unable to reach this private prefix
            # to buffer large request bodies: here they stay the user who started it.
            *(["user root;"] if os.geteuid() == 0 else []),
            f"error_log {self.prefix}/error.log info;", "events { worker_connections 256; }",
            "http {", f"    access_log {self.prefix}/access.log;",
            f"    client_body_temp_path {self.prefix}/body; proxy_temp_path {self.prefix}/proxy;",
            f"    include {self.prefix}/contactgate.conf;", "}", ""])

    def start(self) -> None:
        for directory in ("body", "proxy"):
            (self.prefix / directory).mkdir(exist_ok=True)
        if self.proxy_identity is None:
            self.proxy_identity = register_proxy(self.gateway, self.prefix / "proxy-identity")
        for index in range(len(self.nodes)):
            self.start_node(index)
        self.start_nginx()

    def start_nginx(self) -> None:
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.nginx_config())
        log = self.prefix / "nginx.out"
        check = subprocess.run([NGINX, "-t", "-p", str(self.prefix), "-c", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        with open(log, "ab") as out:
            self.nginx = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
                                          stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.nginx_port, self.nginx, "nginx", self.prefix / "error.log")

    def stop(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
        for index in range(len(self.nodes)):
            self.stop_node(index)

    def client(self, name: str, **kwargs) -> GatewayClient:
        return GatewayClient.from_directory(self.url, self.gateway.certs[name], **kwargs)

    def node_connection(self, index: int, *, source: str = PROXY_ADDRESS, identity="proxy",
                        timeout: float = 30) -> http.client.HTTPConnection:
        """A connection to a node, as nginx makes it (from the proxy address, over TLS with the proxy
        certificate: ``identity`` "proxy"), or as someone else: over TLS with another (cert, key)
        pair, or plain HTTP (``identity`` None)."""
        if identity is None:
            return http.client.HTTPConnection("127.0.0.1", self.node_ports[index], timeout=timeout,
                                              source_address=(source, 0))
        cert, key = self.proxy_identity if identity == "proxy" else identity
        context = ssl.create_default_context(cafile=str(self.gateway.home / "ca" / "ca.pem"))
        context.load_cert_chain(str(cert), str(key))
        return http.client.HTTPSConnection("127.0.0.1", self.node_ports[index], timeout=timeout,
                                           source_address=(source, 0), context=context)

    def post_to_node(self, index: int, operation: str, message: bytes, *, client_cert: str | None,
                     source: str = PROXY_ADDRESS, identity="proxy") -> tuple[int, bytes]:
        """POST to a node directly, as nginx would (from the proxy address, with its proxy certificate
        and a Client-Cert), or as an attacker (from elsewhere, with another certificate or none)."""
        conn = self.node_connection(index, source=source, identity=identity)
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}{operation}"'}
        if client_cert is not None:
            headers["Client-Cert"] = client_cert
        try:
            conn.request("POST", SOAP_PATH, body=message, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()
