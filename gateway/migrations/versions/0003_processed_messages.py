"""What was answered lives in the database: processed_messages replaces the embedded store's
replay_keys.

replay_keys held claims taken before an exchange was processed (and, on deployments with Redis, was
unused: Redis held them). processed_messages holds one row per accepted exchange, written in the
exchange's own transaction (gateway.pipeline.replay). Unexpired rows of replay_keys are carried
over so that messages answered just before the upgrade are still refused or answered once: a row
with a saved answer was an answered SubmitUpdates; a row without one was an answered read, or a
claim whose processing never finished, which is now refused as a replay until it expires (at most
the replay window, about 6 minutes). Replay keys kept in Redis cannot be carried: after upgrading a
deployment that used Redis, keep the gateway stopped for one replay window (docs/operations.md, "Upgrading").

Revision ID: 0003
Revises: 0002
"""
import time

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_replay_keys = sa.table("replay_keys", sa.column("key", sa.String), sa.column("expires_at", sa.Integer),
                        sa.column("response", sa.LargeBinary))
_processed = sa.table("processed_messages", sa.column("org_code", sa.String),
                      sa.column("signature_id", sa.String), sa.column("expires_at", sa.Integer),
                      sa.column("answer", sa.LargeBinary))


def upgrade() -> None:
    op.create_table(
        "processed_messages",
        sa.Column("org_code", sa.String(length=32), nullable=False),
        sa.Column("signature_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.Column("answer", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("org_code", "signature_id"),
    )
    with op.batch_alter_table("processed_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_processed_messages_expires_at"), ["expires_at"], unique=False)

    conn = op.get_bind()
    now = int(time.time())
    carried = []
    for key, expires_at, response in conn.execute(
            sa.select(_replay_keys.c.key, _replay_keys.c.expires_at, _replay_keys.c.response)
            .where(_replay_keys.c.expires_at > now)):
        org_code, _, signature_id = key.rpartition(":")  # "ORG:<sha256 hex>"
        if org_code and signature_id:
            carried.append({"org_code": org_code, "signature_id": signature_id, "expires_at": expires_at,
                            "answer": response})
    if carried:
        op.bulk_insert(_processed, carried)

    with op.batch_alter_table("replay_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replay_keys_expires_at"))
    op.drop_table("replay_keys")


def downgrade() -> None:
    op.create_table(
        "replay_keys",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("replay_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replay_keys_expires_at"), ["expires_at"], unique=False)
    op.execute(sa.insert(_replay_keys).from_select(
        ["key", "expires_at", "response"],
        sa.select(_processed.c.org_code + ":" + _processed.c.signature_id, _processed.c.expires_at,
                  _processed.c.answer)))
    with op.batch_alter_table("processed_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_processed_messages_expires_at"))
    op.drop_table("processed_messages")
