"""`contactgate console` started as a user starts it: its own gunicorn, HTTPS with the gateway's
server certificate, no client certificate asked; a sign-in through it works end to end."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pyotp
import requests

from gateway.files import write_private
from contactgate_local import free_port


def test_the_console_serves_https_and_signs_an_officer_in(registry_home):
    port = free_port()
    log = registry_home.home / "console.log"
    write_private(log, b"")  # the console refuses a home holding files others can read
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "console", "--bind", f"127.0.0.1:{port}",
                                    "--workers", "1"], env=registry_home.env(), stdout=out, stderr=subprocess.STDOUT)
    ca = str(registry_home.home / "ca" / "ca.pem")
    url = f"https://127.0.0.1:{port}"
    try:
        session = requests.Session()
        deadline = time.monotonic() + 30
        while True:
            try:
                page = session.get(f"{url}/login", verify=ca, timeout=2)
                break
            except requests.RequestException:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert session.get(f"{url}/static/console.css", verify=ca).status_code == 200
        try:
            requests.get(f"http://127.0.0.1:{port}/login", timeout=2)
            plain = "answered"
        except requests.RequestException:
            plain = "refused"
        assert plain == "refused"  # no plain HTTP
        password, secret = registry_home.officer_secrets("senior-t")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        signed = session.post(f"{url}/login", verify=ca, headers={"Referer": f"{url}/login"},
                              data={"csrf_token": token, "officer": "senior-t", "password": password,
                                    "code": pyotp.TOTP(secret).now()})
        assert signed.status_code == 200 and "Dashboard" in signed.text and "senior-t" in signed.text
    finally:
        process.terminate()
        process.wait(15)
    assert "csrf_token" not in log.read_text() and password not in log.read_text()
