"""The tamper-evident audit trail: an append-only, hash-chained log of every exchange.

Each entry's hash covers its fields and the previous entry's hash, so altering, removing or
reordering any entry breaks the chain from that point; the single-row head (last seq and hash)
catches a truncated tail. Links are HMACs under a key kept in the gateway's home, outside the
database. ``AuditTrail.append`` must be called inside the transaction that carries the exchange's
effect: no audit, no effect.
"""

from gateway.audit.chain import (AuditTrail, Entry, VerifyResult, new_key, new_request_id, report_for_child,
                                 report_for_org, report_for_user, reset_origin, set_origin)

__all__ = ["AuditTrail", "Entry", "VerifyResult", "new_key", "new_request_id", "report_for_child", "report_for_org",
           "report_for_user", "reset_origin", "set_origin"]
