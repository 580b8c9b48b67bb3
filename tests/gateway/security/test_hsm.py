"""Keys in a hardware security module (gateway.security.hsm): a SoftHSM2 token made for each test
(its own SOFTHSM2_CONF and token directory), the data keyring sealed under a key-encryption key in
the token, the signing key moved into it, a real gateway signing its answers there (C_Sign over
SignedInfo) and the SDK client verifying them; the database with every file of the home copied
elsewhere opens nothing without the token; a missing token or a wrong PIN stops `serve`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from contactgate_local import proposal_id
from contactgate_wire.soap import DS
from gateway.backup.archive import BackupKey, decrypt_to, read_manifest
from gateway.security import hsm, vault
from tests.support import Gateway, child_update, postgres_database, sqlite_database, unique_name

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
MODULE = next((m for m in MODULES if os.path.exists(m)), None)

if MODULE is None or shutil.which("softhsm2-util") is None:
    if os.environ.get("CONTACTGATE_REQUIRE_SOFTHSM"):
        raise RuntimeError("SoftHSM2 is needed here (make test installs softhsm2)")
    pytest.skip("SoftHSM2 is not installed (make test installs softhsm2)", allow_module_level=True)

TOKEN_LABEL = "contactgate"
KEK_LABEL = "contactgate-kek"
SIGNING_LABEL = "contactgate-signing"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
READ = dict(user_id="hsm.tester", role="gp", reason_code="referral", reason_text="keys in a token")


def make_token(directory: Path, pin: str = "4711-2342") -> dict:
    """A fresh SoftHSM2 token in ``directory``: the environment that names it (the PIN in a file)."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL, "--pin", pin,
                    "--so-pin", "so-" + pin], env=env, check=True, capture_output=True)
    pin_file = directory / "pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    return {"SOFTHSM2_CONF": str(conf), hsm.ENV_MODULE: MODULE, hsm.ENV_TOKEN: TOKEN_LABEL,
            hsm.ENV_PIN_FILE: str(pin_file), hsm.ENV_KEK: KEK_LABEL, hsm.ENV_SIGNING_KEY: SIGNING_LABEL}


@dataclass
class TokenHome:
    gateway: Gateway
    token: dict
    backup_key: Path
    before_wrap: Path  # a backup made before `hsm wrap-keyring`: the keyring in clear, signing/key.pem
    before_import: Path  # a backup made before `hsm import-signing-key`: signing/key.pem in it


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def token_home(request, tmp_path_factory):
    """A home made as usual (keys on disk), then its keys moved into a fresh token as an operator
    does (docs/operations.md): the commands run in this process, `serve` in its own."""
    backend = request.param
    hsm.release()
    with (postgres_database() if backend == "postgresql" else sqlite_database()) as url, \
            pytest.MonkeyPatch.context() as patch:
        token = make_token(tmp_path_factory.mktemp("hsm"))
        gateway = Gateway(backend, tmp_path_factory.mktemp("hsm-home"), url, None)
        gateway.cli("init")
        gateway.add_org("LA", "local_authority", ["push", "query"])
        archives = tmp_path_factory.mktemp("hsm-backups")
        backup_key = archives / "backup.key"
        backup_key.write_bytes(os.urandom(32))
        backup_key.chmod(0o600)
        gateway.cli("backup", "--key-file", str(backup_key), "--out", str(archives / "before-wrap.cgb"))
        for name, value in token.items():
            patch.setenv(name, value)
        gateway.extra_env.update(token)
        gateway.cli("hsm", "create-kek", officer="senior-s")
        gateway.cli("hsm", "wrap-keyring", officer="senior-s")
        patch.delenv(hsm.ENV_SIGNING_KEY)  # the signing key is still the file
        gateway.cli("backup", "--key-file", str(backup_key), "--out", str(archives / "before-import.cgb"))
        patch.setenv(hsm.ENV_SIGNING_KEY, token[hsm.ENV_SIGNING_KEY])
        moved = gateway.cli("hsm", "import-signing-key", officer="senior-s")
        assert "signing-key rotate" in moved.output  # the imported key existed outside: replace it
        try:
            yield TokenHome(gateway, token, backup_key, archives / "before-wrap.cgb", archives / "before-import.cgb")
        finally:
            gateway.stop()
            hsm.release()


def serve_refusal(gateway: Gateway, env: dict, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """`contactgate serve` run with ``env`` where it must not start: its exit and its words (a
    `serve` that started after all is stopped after ``timeout_s``: returncode None)."""
    try:
        return subprocess.run([sys.executable, "-m", "gateway", "serve", "--bind", "127.0.0.1:0"],
                              env={**gateway.env(), **env}, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, None, exc.stdout, str(exc.stderr or ""))


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)  # the token, not the database, is tested here
def test_answers_signed_in_the_token_verify_with_the_sdk_and_the_copied_files_open_nothing(
        token_home, tmp_path, monkeypatch):
    gateway, token = token_home.gateway, token_home.token

    home = gateway.home
    assert not (home / "signing" / "key.pem").exists()  # the private half is in the token only
    ring = vault.read_keyring(home / "keys" / "data-keys.json")  # opened in the token
    stored = (home / "keys" / "data-keys.json").read_text()
    assert hsm.is_wrapped(json.loads(stored))
    import base64

    for key in (*ring.data_keys.values(), ring.index_key):
        for path in (p for p in home.rglob("*") if p.is_file()):
            assert base64.b64encode(key) not in path.read_bytes(), path

    gateway.start(workers=2)  # forked after the master's token check: each worker its own session
    try:
        la = gateway.client("la")
        family = unique_name("Hsm")
        [created] = la.submit_updates([child_update("hsm-1", family, "Ada", "2016-03-04")])
        assert created.outcome == "created"
        contacts = la.get_contacts(created.child_id, **READ)
        assert contacts["Identity"]["FamilyName"] == family  # the answer's signature and pin checked by the SDK
        status, answer = la.post_raw("Ping", la.build_request("Ping", Requester={"UserId": "it", "Role": "onboarding"}))
        assert status == 200 and answer.find(f".//{{{DS}}}SignatureMethod").get("Algorithm") == RSA_SHA256
        ready = requests.get(f"http://127.0.0.1:{gateway.metrics_port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text

        # A rotation of the data keys keeps the keyring sealed in the token; the records still read.
        gateway.cli("keys", "rotate", officer="senior-s")
        assert hsm.is_wrapped(json.loads((home / "keys" / "data-keys.json").read_text()))
        again = la.get_contacts(created.child_id, **READ)
        assert again["Identity"]["FamilyName"] == family
        assert gateway.cli("audit", "verify").exit_code == 0  # its checkpoint signed in the token
        rotated = vault.read_keyring(home / "keys" / "data-keys.json")
    finally:
        gateway.stop()

    # A backup keeps the keyring sealed under the token's key inside the archive: the backup key alone
    # opens no record; a restore (which needs both) puts it back sealed.
    backup_key = tmp_path / "backup.key"
    backup_key.write_bytes(os.urandom(32))
    backup_key.chmod(0o600)
    archive = tmp_path / "with-token.cgb"
    gateway.cli("backup", "--key-file", str(backup_key), "--out", str(archive))
    with (tmp_path / "opened").open("w+b") as plain:
        decrypt_to(archive, BackupKey.from_file(backup_key), plain)
        _, where = read_manifest(plain)
        offset, size = where["home/keys/data-keys.json"]
        plain.seek(offset)
        assert hsm.is_wrapped(json.loads(plain.read(size)))
    gateway.cli("restore", str(archive), "--key-file", str(backup_key))
    assert hsm.is_wrapped(json.loads((home / "keys" / "data-keys.json").read_text()))
    assert vault.read_keyring(home / "keys" / "data-keys.json").data_keys == rotated.data_keys

    # A database administrator with the database and every file of the host, but not the token.
    copy = tmp_path / "copied-home"
    shutil.copytree(home, copy)
    for name in token:
        monkeypatch.delenv(name)
    hsm.release()
    with pytest.raises(vault.KeyringError, match="hardware security module"):
        vault.read_keyring(copy / "keys" / "data-keys.json")
    other = make_token(tmp_path / "another-token")  # a token of the same name, without the key
    for name, value in other.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(vault.KeyringError, match="holds no key-encryption key"):
        vault.read_keyring(copy / "keys" / "data-keys.json")
    hsm.release()
    copied = Gateway(gateway.backend, copy, gateway.database_url, None)
    refused = copied.cli("serve", expect_ok=False)  # refused before it listens
    assert refused.exit_code == 3, refused.output
    assert "hardware security module" in refused.output and "holds no" in refused.output
    hsm.release()


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)  # refused before any storage is touched
def test_serve_refuses_to_start_without_the_token_or_with_a_wrong_pin(token_home, tmp_path, monkeypatch):
    gateway = token_home.gateway
    hsm.release()
    wrong_pin = tmp_path / "wrong-pin"
    wrong_pin.write_text("0000-0000\n")
    monkeypatch.setenv(hsm.ENV_PIN_FILE, str(wrong_pin))
    wrong_pin.chmod(0o644)
    refused = gateway.cli("serve", expect_ok=False)  # a PIN others can read is no secret
    assert refused.exit_code == 3 and "readable by others" in refused.output, refused.output
    monkeypatch.setenv(hsm.ENV_PIN_FILE, token_home.token[hsm.ENV_PIN_FILE])
    wrong_pin.chmod(0o600)
    refused = serve_refusal(gateway, {hsm.ENV_PIN_FILE: str(wrong_pin)})  # a real `serve`
    assert refused.returncode == 3, refused.stderr
    assert "refused the PIN" in refused.stderr and "Traceback" not in refused.stderr

    empty = tmp_path / "no-token"
    empty.mkdir()
    (empty / "softhsm2.conf").write_text(f"directories.tokendir = {empty}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(empty / "softhsm2.conf"))
    refused = gateway.cli("serve", expect_ok=False)  # refused before it listens
    assert refused.exit_code == 3, refused.output
    assert f"no token labelled '{TOKEN_LABEL}'" in refused.output
    hsm.release()

    monkeypatch.setenv(hsm.ENV_PIN_FILE, "")
    refused = gateway.cli("serve", expect_ok=False)
    assert refused.exit_code == 2 and "never from the command line" in refused.output


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)
def test_a_signing_key_rotated_in_the_token_signs_there_and_the_old_one_goes_at_retire(token_home):
    """`signing-key rotate --ec` makes the new key in the token; after `promote` the answers are signed
    there (ECDSA: the token's r || s is XML-DSig's value); the old key leaves the token at `retire`."""
    from lxml import etree

    from contactgate_wire import wsse
    from contactgate_wire.soap import SOAP_ENV
    from gateway.config import HomeLayout
    from gateway.trust import signing_keys

    gateway = token_home.gateway
    layout = HomeLayout(gateway.home)
    hsm.release()
    before = signing_keys.load(layout).current
    gateway.cli("signing-key", "rotate", "--ec", officer="senior-s")  # ECDSA P-256 this time
    assert layout.signing_next_cert.exists() and not layout.signing_next_key.exists()  # made in the token
    gateway.cli("signing-key", "promote", "--grace-days", "0", officer="senior-s")
    assert not layout.signing_key.exists()
    envelope = etree.fromstring(f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body><x xmlns="urn:t">1</x></s:Body></s:Envelope>')
    envelope = etree.fromstring(etree.tostring(signing_keys.envelope_signer(layout).sign(envelope)))  # as received
    signed_by = wsse.extract_signer_certificate(envelope)
    assert signed_by == signing_keys.load(layout).current != before
    assert wsse.verify(envelope, signed_by).payload.text == "1"
    assert envelope.find(f".//{{{DS}}}SignatureMethod").get("Algorithm") == wsse.ECDSA_SHA256
    proposed = gateway.cli("restore", "acknowledge", officer="senior-s", expect_ok=False)
    if proposed.exit_code == 0:  # the restore of the first test, acknowledged: audit verify can pass
        gateway.cli("restore", "acknowledge", "--proposal", proposal_id(proposed.output), officer="senior-t")
    gateway.cli("audit", "verify")  # records a checkpoint signed in the token with ECDSA (r || s, made DER) ...
    verified = gateway.cli("audit", "verify")  # ... which the next run verifies and starts from
    assert "signed checkpoint" in verified.output, verified.output
    cfg = hsm.signing_config()
    assert hsm._find_private(cfg, hsm.key_id(before.public_key())) is not None  # nodes not yet reloaded sign on
    gateway.cli("signing-key", "retire", officer="senior-s")
    assert hsm._find_private(cfg, hsm.key_id(before.public_key())) is None


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)
def test_init_run_again_keeps_the_signing_key_in_the_token(token_home):
    gateway = token_home.gateway
    hsm.release()
    pinned = (gateway.home / "signing" / "cert.pem").read_bytes()
    again = gateway.cli("init")  # "safe to run twice": what clients pin must not change
    assert "kept     response-signing key" in again.output
    assert (gateway.home / "signing" / "cert.pem").read_bytes() == pinned
    assert not (gateway.home / "signing" / "key.pem").exists()
    hsm.release()


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)  # refused before any storage is touched
def test_a_clear_keyring_in_the_environment_is_refused_while_a_kek_is_configured(token_home, monkeypatch):
    gateway = token_home.gateway
    hsm.release()
    stored = gateway.home / "keys" / "data-keys.json"
    clear = vault.read_keyring(stored).to_json()
    monkeypatch.setenv(vault.ENV_VAR, clear)
    status = gateway.cli("keys", "status", officer="senior-s", expect_ok=False)
    assert status.exit_code != 0 and "in clear" in status.output, status.output
    refused = serve_refusal(gateway, {vault.ENV_VAR: clear}, timeout_s=30)
    assert refused.returncode == 3, refused.stderr
    assert "in clear" in refused.stderr and "Traceback" not in refused.stderr
    monkeypatch.setenv(vault.ENV_VAR, stored.read_text())  # the keyring sealed under the KEK is taken
    assert gateway.cli("keys", "status", officer="senior-s").exit_code == 0
    hsm.release()


def signing_files(home: Path) -> dict:
    return {p.name: p.read_bytes() for p in (home / "signing").iterdir() if p.is_file()}


def test_a_restore_puts_no_signing_key_file_back_once_the_key_is_in_the_token(token_home):
    """A backup from before `hsm import-signing-key` holds signing/key.pem: restored, the key is
    not written back to disk, and the certificate of the key the token signs with stays."""
    from gateway.config import HomeLayout
    from gateway.trust import signing_keys

    gateway = token_home.gateway
    hsm.release()
    before = signing_files(gateway.home)
    gateway.cli("restore", str(token_home.before_import), "--key-file", str(token_home.backup_key))
    assert not list((gateway.home / "signing").glob("*key.pem"))
    assert signing_files(gateway.home) == before
    signing_keys.token_key(HomeLayout(gateway.home))  # serve would sign in the token
    hsm.release()


def test_a_backup_made_before_the_keyring_was_sealed_restores_under_the_kek(token_home):
    gateway = token_home.gateway
    hsm.release()
    stored = gateway.home / "keys" / "data-keys.json"
    now = vault.read_keyring(stored)
    gateway.cli("restore", str(token_home.before_wrap), "--key-file", str(token_home.backup_key))
    assert hsm.is_wrapped(json.loads(stored.read_text()))  # sealed again as it is written
    assert set(vault.read_keyring(stored).data_keys) >= set(now.data_keys)
    assert not list((gateway.home / "signing").glob("*key.pem"))
    hsm.release()


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)  # no storage: the token only
def test_a_process_forked_while_the_token_is_in_use_opens_its_own_session(token_home):
    """gunicorn's master answers /readyz (hsm.probe, under the module's lock) in a thread and forks
    workers at any moment: a worker forked while the lock is held must not wait for it for ever."""
    import threading
    import time

    cfg = hsm.config()
    assert hsm.probe(cfg) is None  # the parent's session, as the master's after a /readyz
    held, release = threading.Event(), threading.Event()

    def hold():
        with hsm._LOCK:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the worker: its own session, a round trip to the token
            os._exit(0 if hsm.probe(cfg) is None else 1)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked process hung on the token's lock")
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        release.set()
        holder.join()
        hsm.release()


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)  # no storage: the token only
def test_signing_recovers_when_the_token_drops_the_session(token_home):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    from gateway.config import HomeLayout
    from gateway.trust import signing_keys

    hsm.release()
    cfg = hsm.config()
    key = signing_keys.token_key(HomeLayout(token_home.gateway.home))

    def verified(data: bytes) -> None:
        signature = key.sign(data)
        public = key.certificate.public_key()
        if key.is_rsa:
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

            half = len(signature) // 2
            der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
            public.verify(der, data, ec.ECDSA(hashes.SHA256()))

    verified(b"before")
    hsm._SESSIONS[(cfg.module, cfg.token)][1].close()  # the token dropped the session (removed, reset)
    verified(b"after the session was dropped")
    assert hsm.probe(cfg) is None
    hsm._SESSIONS[(cfg.module, cfg.token)][1].close()
    assert hsm.probe(cfg) is not None  # /readyz says so once ...
    verified(b"after a probe found it dropped")  # ... and signing takes a new session, not the old key object
    assert hsm.probe(cfg) is None
    hsm.release()


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)  # refused before any storage is touched
def test_commands_run_without_the_token_setting_refuse_to_make_a_signing_key_on_disk(token_home, monkeypatch):
    """The home records that its signing key is in a token (signing/key.pkcs11): `init`, `signing-key
    rotate`, `serve` and `restore` run without CONTACTGATE_PKCS11_SIGNING_KEY refuse, and write no key."""
    gateway = token_home.gateway
    hsm.release()
    gateway.session("senior-s", fresh=True)  # a restore before may have rolled the officer's session back
    before = signing_files(gateway.home)
    assert "key.pkcs11" in before
    monkeypatch.delenv(hsm.ENV_SIGNING_KEY)
    without = {k: v for k, v in gateway.extra_env.items() if k != hsm.ENV_SIGNING_KEY}
    monkeypatch.setattr(gateway, "extra_env", without)
    for args in (("init",), ("signing-key", "rotate")):
        refused = gateway.cli(*args, officer="senior-s" if args[0] != "init" else None, expect_ok=False)
        assert refused.exit_code != 0 and hsm.ENV_SIGNING_KEY in refused.output, refused.output
        assert signing_files(gateway.home) == before, args
    refused = gateway.cli("restore", str(token_home.before_import), "--key-file", str(token_home.backup_key),
                          expect_ok=False)
    assert refused.exit_code != 0 and hsm.ENV_SIGNING_KEY in refused.output, refused.output
    assert signing_files(gateway.home) == before
    refused = serve_refusal(gateway, {}, timeout_s=30)
    assert refused.returncode == 3 and hsm.ENV_SIGNING_KEY in refused.stderr, refused.stderr
    hsm.release()


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)  # no storage: the token only
def test_the_pin_is_kept_from_child_processes_and_its_file_must_be_the_gateway_users(token_home, monkeypatch, tmp_path):
    from gateway.backup import libpq

    gateway = token_home.gateway
    hsm.release()
    monkeypatch.setattr(hsm, "_ENV_PIN", [""])  # forgotten again after the test
    gateway.session("senior-s", fresh=True)  # a restore before may have rolled the officer's session back
    pin = Path(token_home.token[hsm.ENV_PIN_FILE]).read_text().strip()
    monkeypatch.delenv(hsm.ENV_PIN_FILE)
    monkeypatch.setenv(hsm.ENV_PIN, pin)  # from a secret store, as systemd's LoadCredential would
    assert "PIN accepted" in gateway.cli("hsm", "status", officer="senior-s").output
    assert hsm.ENV_PIN not in os.environ  # what pg_dump, pg_restore and any other child inherit
    assert hsm.ENV_PIN not in libpq("postgresql+psycopg://u:secret@db.example/cg")[1]
    hsm.release()
    assert "PIN accepted" in gateway.cli("hsm", "status", officer="senior-s").output  # kept in the process

    foreign = tmp_path / "foreign-pin"
    foreign.write_text(pin + "\n")
    foreign.chmod(0o600)
    os.chown(foreign, 65534, 65534)  # 0600, but another user's: they can change the PIN the gateway presents
    monkeypatch.setenv(hsm.ENV_PIN_FILE, str(foreign))
    hsm.release()
    refused = gateway.cli("hsm", "status", officer="senior-s", expect_ok=False)
    assert refused.exit_code != 0 and "owned by" in refused.output, refused.output
    hsm.release()


@pytest.mark.parametrize("token_home", ["sqlite"], indirect=True)  # no storage: the token only
def test_a_sealed_keyring_copied_into_another_home_on_the_same_token_does_not_open(token_home, tmp_path):
    from gateway import files
    from gateway.trust import pki

    hsm.release()
    other = tmp_path / "other-home"
    shutil.copytree(token_home.gateway.home / "keys", other / "keys")
    _, ca_cert = pki.make_ca()  # another gateway, another CA, sharing the HSM's token and label
    (other / "ca").mkdir()
    files.write_private(other / "ca" / "ca.pem", pki.cert_pem(ca_cert))
    with pytest.raises(vault.KeyringError, match="sealed for another gateway"):
        vault.read_keyring(other / "keys" / "data-keys.json")
    doc = json.loads((other / "keys" / "data-keys.json").read_text())
    doc["ca"] = pki.fingerprint(ca_cert)  # the binding edited to match: the token's AES-GCM refuses it
    (other / "keys" / "data-keys.json").write_text(json.dumps(doc))
    with pytest.raises(vault.KeyringError, match="does not open the data keyring"):
        vault.read_keyring(other / "keys" / "data-keys.json")
    hsm.release()
