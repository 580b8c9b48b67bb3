"""Which stored values are sealed or blinded, and how (gateway.security.vault for the cryptography).

Sealed (AES-GCM; the associated data names the table, column and the row's key):
- ``children.record`` and ``children.provenance``: what the index shows, and who supplied it;
- ``source_records.record``: each source's own record, with its source record id;
- ``involvements.sealed``: the practitioner's name, phone and email;
- ``processed_messages.answer``: a SubmitUpdates' signed first answer (source record ids, child ids);
- ``value_conflicts.detail``: both values of a value conflict, their suppliers and dates.

Blinded (HMAC, so lookups stay equality lookups): every linkage blocking key (names, birth dates,
postcodes, NHS and pupil numbers), and each source record id (``source_records``,
``involvements``, ``review_queue``, ``value_conflicts``), under the organisation's code.

Involvements and source records are keyed by (organisation, blinded source record id), not by
child: a merge moves them to another child without touching their ciphertext.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json

from sqlalchemy.engine import Connection

from gateway.security import vault as vault_mod

RETIRED_DATE = dt.date(1, 1, 1)  # children.date_of_birth from 0007: the birth date is sealed in the record
VAULT_INFO = "contactgate_vault"  # Connection.info key: a zero-argument loader of the vault
SOURCE_SEPARATOR = "\x00"  # between the source record id and its record (the schema refuses NUL)


def vault_of(conn: Connection):
    loader = conn.info.get(VAULT_INFO)
    return loader() if loader is not None else vault_mod.current()


def blind_source_id(v, org_code: str, source_record_id: str) -> str:
    if isinstance(v, vault_mod.Plain):
        return source_record_id
    return v.blind(f"{org_code}\x00{source_record_id}", "source_record_id")


def blind_keys(v, keys) -> set[str]:
    return {v.blind(k, "blocking_key") for k in keys}


def child_context(column: str, child_id: str) -> str:
    return f"children.{column}|{child_id}"


def source_context(org_code: str, stored_source_id: str) -> str:
    return f"source_records.record|{org_code}|{stored_source_id}"


def involvement_context(org_code: str, stored_source_id: str | None) -> str:
    return f"involvements.sealed|{org_code}|{stored_source_id or ''}"


def officer_totp_context(officer_id: str) -> str:
    return f"officer:{officer_id}:totp"


def portal_totp_context(org_code: str, user_id: str) -> str:
    return f"portal:{org_code}:{user_id}:totp"


def portal_key_context(org_code: str, user_id: str, credential_id: str) -> str:
    """A portal account's security key (its public key): sealed to the account and the credential."""
    return f"portal:{org_code}:{user_id}:webauthn:{credential_id}"


def submitted_context(review_id: int) -> str:
    return f"review_queue.submitted|{review_id}"


def conflict_context(conflict_id: int) -> str:
    return f"value_conflicts.detail|{conflict_id}"


def answer_context(org_code: str, signature_id: str) -> str:
    return f"processed_messages.answer|{org_code}|{signature_id}"


def seal_source(v, org_code: str, stored_source_id: str, source_record_id: str, record_text: str) -> str:
    return v.seal(source_record_id + SOURCE_SEPARATOR + record_text, source_context(org_code, stored_source_id))


def open_source(v, org_code: str, stored_source_id: str, token: str) -> tuple[str, str]:
    """(the source record id as sent, the record's JSON)."""
    plain = v.open(token, source_context(org_code, stored_source_id))
    srid, sep, record_text = plain.partition(SOURCE_SEPARATOR)
    if not sep:  # migration 0005's plain rows: the record alone
        return stored_source_id, plain
    return srid, record_text


INVOLVEMENT_FIELDS = ("practitioner_name", "phone", "email")


def seal_involvement(v, org_code: str, stored_source_id: str | None, values: dict) -> str:
    return v.seal(json.dumps({k: values.get(k) for k in INVOLVEMENT_FIELDS}, sort_keys=True),
                  involvement_context(org_code, stored_source_id))


def open_involvement(v, org_code: str, stored_source_id: str | None, token: str | None) -> dict:
    if token is None:
        return {}
    return json.loads(v.open(token, involvement_context(org_code, stored_source_id)))


@functools.lru_cache(maxsize=4)
def _plain():
    return vault_mod.Plain()


def plain():
    """The no-op codec migration 0005 runs the store with (see vault.Plain)."""
    return _plain()


@contextlib.contextmanager
def installed(conn: Connection, codec):
    """Run the store on ``conn`` with ``codec`` (a vault, or ``plain()``) for the block."""
    before = conn.info.get(VAULT_INFO)
    conn.info[VAULT_INFO] = lambda: codec
    try:
        yield codec
    finally:
        if before is None:
            conn.info.pop(VAULT_INFO, None)
        else:
            conn.info[VAULT_INFO] = before
