"""Where each officer signs in, so that the global back-off cannot lock them out of it (review of
issue 22, B).

- ``officer_known_sources``: per (officer, source) when the officer last signed in from there (an
  IPv4 address, an IPv6 /64, or ``local:uid N (name)`` at the command line). For
  CONTACTGATE_SIGNIN_KNOWN_SOURCE_DAYS after that the global back-off does not apply there
  (gateway.officers).
- Filled from the audit trail: each successful console sign-in or step-up of the last 30 days (the
  setting's default) by an officer who still exists, counted against its address as sign-in counts
  it (gateway.officers.source_key), so that an upgrade does not leave officers open to the lock it
  closes. Command-line entries are left out: their source was ``local:<user>``, which the command
  line no longer uses.

Revision ID: 0012
Revises: 0011
"""
import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

REMEMBERED_DAYS = 30


def upgrade() -> None:
    from gateway.officers import source_key

    known = op.create_table(
        "officer_known_sources",
        sa.Column("officer_id", sa.String(64), sa.ForeignKey("officers.officer_id"), primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("last_signed_in_at", sa.DateTime(timezone=True), nullable=False),
    )
    bind = op.get_bind()
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=REMEMBERED_DAYS)).strftime("%Y-%m-%dT%H:%M:%S")
    existing = set(bind.execute(sa.text("SELECT officer_id FROM officers")).scalars())
    last: dict[tuple[str, str], dt.datetime] = {}
    rows = bind.execute(sa.text(
        "SELECT user_id, source_address, at FROM audit_log WHERE operation IN ('officer.login', 'officer.step_up') "
        "AND outcome = 'done' AND source_address IS NOT NULL AND at >= :since"), {"since": since})
    for officer_id, address, at in rows:
        if officer_id not in existing or address.startswith("local:"):
            continue
        when = dt.datetime.strptime(at[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
        key = (officer_id, source_key(address))
        last[key] = max(when, last.get(key, when))
    if last:
        op.bulk_insert(known, [{"officer_id": officer_id, "source": source, "last_signed_in_at": when}
                               for (officer_id, source), when in sorted(last.items())])


def downgrade() -> None:
    op.drop_table("officer_known_sources")
