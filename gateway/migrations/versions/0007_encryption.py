"""Encryption at rest: identifying values sealed (AES-GCM), lookups by blind index (HMAC).

- ``children.record`` / ``provenance``, ``source_records.record`` (with the source record id as
  sent), ``processed_messages.answer`` and the new ``involvements.sealed`` (the practitioner's name,
  phone and email) hold values sealed under the home's data keys (gateway.security.vault), with the
  row's identity as associated data.
- ``blocking_keys.key`` and every ``source_record_id`` become blind indexes.
- ``children.family_name_norm`` and ``date_of_birth`` are retired ("" and 0001-01-01), and their
  index dropped: nothing looked children up by them since 0005, and they were names and birth dates
  in clear. (Dropping the columns would rebuild ``children`` under its foreign keys on SQLite.)
- Merges' snapshots are sealed the same way, so that an unmerge restores sealed rows.

Existing data is sealed with the keys of the home being migrated (`contactgate init`/`migrate`);
with no keyring, a database holding children refuses to migrate (nothing is sealed by guesswork).
The downgrade opens every value again with the same keys.

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("involvements") as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.Text(), nullable=True))
    with op.batch_alter_table("children") as batch_op:
        batch_op.drop_index("ix_children_name_dob")

    from gateway.index import at_rest, sealed
    conn = op.get_bind()
    if at_rest.has_rows(conn):
        at_rest.seal_existing(conn, sealed.vault_of(conn))


def downgrade() -> None:
    from gateway.index import at_rest, sealed
    conn = op.get_bind()
    if at_rest.has_rows(conn):
        at_rest.open_existing(conn, sealed.vault_of(conn))
    with op.batch_alter_table("children") as batch_op:
        batch_op.create_index("ix_children_name_dob", ["family_name_norm", "date_of_birth"], unique=False)
    with op.batch_alter_table("involvements") as batch_op:
        batch_op.drop_column("sealed")
