"""Write throwaway test PKI material: a CA and one key + certificate per organisation code.

    python certs/make_test_pki.py OUT_DIR CODE [CODE ...]

For experiments only. A real gateway makes its own with `contactgate init`; organisations make their keys with
`contactgate csr`, and two officers issue their certificates (`cert issue --csr`, `cert approve`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.trust import pki


def main(out_dir: str, *codes: str) -> None:
    out = Path(out_dir)
    ca_key, ca_cert = pki.make_ca("ContactGate TEST CA (throwaway)")
    pki.write_private(out / "test-ca-key.pem", pki.key_pem(ca_key))
    pki.write_public(out / "test-ca.pem", pki.cert_pem(ca_cert))
    for code in codes:
        key = pki.new_rsa_key()
        cert = pki.issue_org_cert(ca_key, ca_cert, code, f"{code} (test)", key.public_key())
        pki.write_private(out / code / "test-key.pem", pki.key_pem(key))
        pki.write_public(out / code / "test-cert.pem", pki.cert_pem(cert))
        print(f"{code}: {pki.fingerprint(cert)}")
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], *sys.argv[2:])
