"""Exports of the audit trail that others can verify offline, with the signed checkpoints
(gateway.audit.checkpoints) that fall in their period.

The HMAC chain (gateway.audit.chain) can only be checked by whoever holds its key. Beside it runs a
public SHA-256 chain (``public_hash``), and the gateway signs points of that chain with its
response-signing key: each successful `audit verify` appends a signed checkpoint to
``audit/checkpoints``, and `audit export` writes the entries of a period with their links, the
signed checkpoints that fall in it, and a signed statement of the export itself. A holder of the
gateway's signing certificate (`gateway-signing.pem`, which every client has) can then check with
`audit verify --file EXPORT --cert gateway-signing.pem`, without the HMAC key or the database,
that no entry was altered, removed, added or reordered since the gateway signed it.

An export is written only after the HMAC chain verified, so what is signed was intact then.

Also `to_fhir`: the same entries as FHIR R4 AuditEvent resources in a Bundle (IHE BALP style), for
a hospital's audit repository; the native form is the one verified offline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from gateway.audit.checkpoints import CheckpointSigner, signature_problem, signed_checkpoints
from gateway.audit.links import GENESIS, public_hash, timestamp
from gateway.db import audit_log, reader
from gateway.trust.pki import fingerprint

FORMAT = "contactgate-audit-export/1"
ENTRY_COLUMNS = ("seq", "at", "org_code", "cert_fingerprint", "user_id", "role", "operation", "reason_code",
                 "reason_text", "child_ids", "outcome", "fault_code", "request_digest", "detail", "source_address",
                 "request_id", "response_digest", "prev_hash", "entry_hash", "public_hash")
# Exported only where an entry has them (a mediated read's requester, gateway.mediation): an export
# without them reads as before; one removed from an entry breaks its public link like any other edit.
OPTIONAL_COLUMNS = ("on_behalf_of", "behalf_key")


# ---- export ---------------------------------------------------------------------------------------

class ExportError(Exception):
    """Nothing to export, or not now (said to the operator)."""


def build(engine: Engine, signer: CheckpointSigner, checkpoints_file: Path, verified_head: int,
          since: dt.datetime, until: dt.datetime | None = None) -> dict:
    """The export document of the entries from ``since`` (to ``until``) up to ``verified_head``
    (the last entry the HMAC chain was just verified to), signed."""
    with reader(engine).connect() as conn:
        bounds = select(func.min(audit_log.c.seq), func.max(audit_log.c.seq)).where(
            audit_log.c.at >= timestamp(since), audit_log.c.seq <= verified_head)
        if until is not None:
            bounds = bounds.where(audit_log.c.at < timestamp(until))
        first, last = conn.execute(bounds).one()
        if first is None:
            raise ExportError("no entries in that period")
        rows = conn.execute(select(*(audit_log.c[c] for c in ENTRY_COLUMNS + OPTIONAL_COLUMNS)).where(
            audit_log.c.seq >= first, audit_log.c.seq <= last).order_by(audit_log.c.seq)).mappings().all()
        prev_public = GENESIS if first == 1 else conn.execute(
            select(audit_log.c.public_hash).where(audit_log.c.seq == first - 1)).scalar_one()
    entries = [{k: v for k, v in r.items() if k not in OPTIONAL_COLUMNS or v is not None} for r in rows]
    claims = {"kind": "export", "format": FORMAT, "first_seq": first, "last_seq": last, "count": len(entries),
              "prev_public_hash": prev_public, "public_hash": entries[-1]["public_hash"],
              "since": timestamp(since), "until": timestamp(until) if until else None, "at": timestamp()}
    checkpoints = [c for c in signed_checkpoints(checkpoints_file)
                   if isinstance(c.get("claims"), dict) and first <= c["claims"].get("seq", 0) <= last]
    return {"format": FORMAT, "entries": entries, "checkpoints": checkpoints, "export": signer.sign(claims)}


@dataclass
class OfflineResult:
    ok: bool
    entries: int = 0
    first_bad_seq: int | None = None
    problem: str | None = None
    summary: str = ""


def verify_document(document, certificates: list[x509.Certificate]) -> OfflineResult:
    """Check an export with the gateway's signing certificates only: the signed statement, every
    entry's public link, the chain between them, and the signed checkpoints inside it."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return OfflineResult(False, problem=f"not a ContactGate audit export ({FORMAT})")
    problem = signature_problem(document.get("export"), certificates)
    if problem:
        return OfflineResult(False, problem=f"the export's signed statement: {problem}")
    claims = document["export"]["claims"]
    entries = document.get("entries")
    if claims.get("kind") != "export" or not isinstance(entries, list):
        return OfflineResult(False, problem="the export's signed statement is not an export's")
    link, seq = claims.get("prev_public_hash"), claims.get("first_seq")
    at_seq: dict[int, str] = {}
    prev_entry_hash = None
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - set(OPTIONAL_COLUMNS) != set(ENTRY_COLUMNS):
            return OfflineResult(False, index, seq, "an entry is not as exported (fields added or removed)")
        if entry["seq"] != seq:
            return OfflineResult(False, index, seq, f"entry {seq} is missing (found {entry['seq']!r})")
        if prev_entry_hash is not None and entry["prev_hash"] != prev_entry_hash:
            return OfflineResult(False, index, seq, "link to the previous entry is broken")
        try:
            link = public_hash(link, entry)
        except (TypeError, AttributeError):
            return OfflineResult(False, index, seq, "entry is malformed")
        if entry["public_hash"] != link:
            return OfflineResult(False, index, seq, "entry was altered (its public link does not match)")
        at_seq[seq] = link
        prev_entry_hash, seq = entry["entry_hash"], seq + 1
    if not entries or entries[-1]["seq"] != claims.get("last_seq") or len(entries) != claims.get("count"):
        return OfflineResult(False, len(entries), seq, f"the export was cut: it was signed with "
                                                       f"{claims.get('count')} entries, it holds {len(entries)}")
    if link != claims.get("public_hash"):
        return OfflineResult(False, len(entries), claims.get("last_seq"), "the entries differ from what was signed")
    agreed = 0
    for checkpoint in document.get("checkpoints") or []:
        problem = signature_problem(checkpoint, certificates)
        point = checkpoint.get("claims", {}) if isinstance(checkpoint, dict) else {}
        if problem is None and at_seq.get(point.get("seq")) != point.get("public_hash"):
            problem = "it names a different chain"
        if problem:
            return OfflineResult(False, len(entries), point.get("seq"), f"signed checkpoint at entry "
                                                                        f"{point.get('seq')}: {problem}")
        agreed += 1
    signer = next(c for c in certificates if fingerprint(c) == document["export"]["signer"])
    return OfflineResult(True, len(entries), summary=(
        f"export intact: {len(entries)} entries (#{claims['first_seq']}..#{claims['last_seq']}), signed by "
        f"{signer.subject.rfc4514_string()} at {claims.get('at')}; {agreed} earlier signed checkpoint(s) agree"))


# ---- FHIR ---------------------------------------------------------------------------------------

DCM = "http://dicom.nema.org/resources/ontology/DCM"
_EVENT_TYPE = {"GetContacts": ("110112", "Query"), "FindChild": ("110112", "Query"),
               "SubmitUpdates": ("110110", "Patient Record"), "SetShielding": ("110110", "Patient Record"),
               "officer.login": ("110114", "User Authentication"), "officer.logout": ("110114", "User Authentication")}
_ACTION = {"GetContacts": "R", "FindChild": "E", "SubmitUpdates": "U", "SetShielding": "U"}


def to_fhir(document: dict) -> dict:
    """The export's entries as a FHIR R4 Bundle (collection) of AuditEvent resources: who (the
    organisation's user, their role and address), what (the children, as identifiers), why (the
    reason), the outcome, and the entry's place in the chain."""
    events = [{"fullUrl": f"urn:contactgate:audit:{e['seq']}", "resource": _audit_event(e)}
              for e in document["entries"]]
    return {"resourceType": "Bundle", "type": "collection", "timestamp": document["export"]["claims"]["at"],
            "entry": events}


def _audit_event(e: dict) -> dict:
    code, display = _EVENT_TYPE.get(e["operation"], ("110100", "Application Activity"))
    who = ({"identifier": {"system": f"urn:contactgate:org:{e['org_code']}", "value": e["user_id"]}}
           if e["org_code"] and e["user_id"] else
           {"identifier": {"system": "urn:contactgate:officer", "value": e["user_id"]}} if e["user_id"] else
           {"identifier": {"system": "urn:contactgate:org", "value": e["org_code"]}} if e["org_code"] else
           {"display": "unidentified client"})
    agent = {"who": who, "requestor": not e.get("on_behalf_of")}
    if e["role"]:
        agent["role"] = [{"text": e["role"]}]
    if e["source_address"] and not e["source_address"].startswith("local:"):
        agent["network"] = {"address": e["source_address"], "type": "2"}
    event = {
        "resourceType": "AuditEvent", "id": f"cg-{e['seq']}",
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": "urn:contactgate:operation", "code": e["operation"]}],
        "action": _ACTION.get(e["operation"], "E"),
        "recorded": e["at"],
        "outcome": "4" if e["outcome"] == "refused" else "0",
        "agent": [agent, *_requester_agent(e)],
        "source": {"observer": {"display": "ContactGate"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": [*({"what": {"identifier": {"system": "urn:contactgate:child-id", "value": child}},
                      "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                               "display": "Person"},
                      "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                               "display": "Patient"}} for child in e["child_ids"].split()),
                   {"what": {"identifier": {"system": "urn:contactgate:audit-entry", "value": str(e["seq"])}},
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                             "display": "System Object"},
                    "detail": [{"type": name, "valueString": e[name]} for name in (
                        "detail", "request_id", "request_digest", "response_digest", "cert_fingerprint",
                        "entry_hash", "public_hash") if e[name]]}],
    }
    if e["fault_code"]:
        event["outcomeDesc"] = e["fault_code"]
    purpose = {}
    if e["reason_code"]:
        purpose["coding"] = [{"system": "urn:contactgate:reason", "code": e["reason_code"]}]
    if e["reason_text"]:
        purpose["text"] = e["reason_text"]
    if purpose:
        event["purposeOfEvent"] = [purpose]
    return event


def _requester_agent(e: dict) -> list[dict]:
    """A mediated read's requester (gateway.mediation): the person it was made for, the requestor;
    the mediator's agent is then not."""
    from gateway.mediation import from_json

    behalf = from_json(e.get("on_behalf_of"))
    if behalf is None:
        return []
    return [{"who": {"display": f"{behalf.name} ({behalf.organisation}, {behalf.phone})"}, "requestor": True,
             "role": [{"text": behalf.role}],
             "policy": [f"urn:contactgate:identity-check:{behalf.identity_check}"]}]


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
