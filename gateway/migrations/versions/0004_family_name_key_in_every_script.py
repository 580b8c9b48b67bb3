"""The family-name matching key keeps letters in every script.

Until 0003 the key (children.family_name_norm) kept only a-z after dropping accents, so a name in
Cyrillic, Greek, Arabic or CJK script had no key at all (the record was rejected as having "no
letters"), and letters such as "ø" or "ł" were dropped ("Søren" -> "sren"). The key now keeps every
letter; this migration recomputes it for the rows whose key changes (only names with letters
outside a-z), reading the family name from each child's canonical record, in batches.

The function is frozen here, as it was when this migration was written: a later change to
`gateway.index.model.family_name_key` needs its own migration.

Revision ID: 0004
Revises: 0003
"""
import json
import unicodedata

from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BATCH = 5000
KEY_LENGTH = 100

_children = sa.table("children", sa.column("child_id", sa.String), sa.column("record", sa.Text),
                     sa.column("family_name_norm", sa.String))


def _key_in_every_script(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in decomposed if c.isalpha() and not unicodedata.combining(c))[:KEY_LENGTH]


def _latin_key(name: str) -> str:
    """The key as 0001-0003 computed it (for the downgrade)."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c for c in stripped.casefold() if "a" <= c <= "z")[:KEY_LENGTH]


def _recompute(key) -> None:
    conn = op.get_bind()
    last = ""
    while True:
        rows = conn.execute(sa.select(_children.c.child_id, _children.c.record, _children.c.family_name_norm)
                            .where(_children.c.child_id > last).order_by(_children.c.child_id)
                            .limit(BATCH)).all()
        if not rows:
            return
        changed = []
        for row in rows:
            new = key(json.loads(row.record)["identity"]["family_name"])
            if new != row.family_name_norm:
                changed.append({"id": row.child_id, "key": new})
        if changed:
            conn.execute(sa.update(_children).where(_children.c.child_id == sa.bindparam("id"))
                         .values(family_name_norm=sa.bindparam("key")), changed)
        last = rows[-1].child_id


def upgrade() -> None:
    _recompute(_key_in_every_script)


def downgrade() -> None:
    _recompute(_latin_key)
