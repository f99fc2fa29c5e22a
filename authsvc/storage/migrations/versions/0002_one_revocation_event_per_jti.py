"""one revocation event per jti

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 08:23:50.427324

Revoking an access token twice used to append a second `jti` event; a unique index now keeps one.
A database that already holds such duplicates keeps the first of each (the cursor every verifier
has already seen), with the latest expiry any of them had, so no token is forgotten earlier.
Until they are restarted, replicas of the previous build answer an internal error, where they used
to append a duplicate, when asked to revoke an access token that is revoked already.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

events = sa.table(
    "revocation_events",
    sa.column("cursor", sa.BigInteger),
    sa.column("kind", sa.String),
    sa.column("value", sa.String),
    sa.column("expires_at", sa.Double),
)
JTI = sa.text("kind = 'jti'")


def upgrade() -> None:
    other = events.alias("other")
    same_jti = sa.and_(other.c.kind == "jti", other.c.value == events.c.value)
    latest_expiry = sa.select(sa.func.max(other.c.expires_at)).where(same_jti).scalar_subquery()
    op.execute(events.update().where(events.c.kind == "jti").values(expires_at=latest_expiry))
    earlier = sa.exists().where(same_jti, other.c.cursor < events.c.cursor)
    op.execute(events.delete().where(events.c.kind == "jti", earlier))
    with op.batch_alter_table("revocation_events", schema=None) as batch_op:
        batch_op.create_index(
            "uq_revocation_events_jti",
            ["value"],
            unique=True,
            sqlite_where=JTI,
            postgresql_where=JTI,
        )


def downgrade() -> None:
    with op.batch_alter_table("revocation_events", schema=None) as batch_op:
        batch_op.drop_index("uq_revocation_events_jti")
