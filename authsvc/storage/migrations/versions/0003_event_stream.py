"""the event stream's identity and newest cursor

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:02:11.514207

One row, `event_stream`: the id of this database's sequence of revocation events, so a verifier
resuming with a cursor from another database is told to start over, and the newest cursor ever
assigned, which event cursors are now taken from. Before, SQLite handed out again the cursors of
purged events (a rowid one past the largest left), and a subscriber that had seen them skipped the
new events.

The id is left empty here and chosen by the first authsvc that opens the database: a migration
also runs on templates that many databases are copied from, and as an offline SQL script that many
databases are built with, and those databases must not share an id. The cursor starts at the
newest one handed out so far: on PostgreSQL the column's sequence, which is past every purged
event; on SQLite the largest cursor left, what SQLite would have used next.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

stream = sa.table(
    "event_stream", sa.column("stream_id", sa.String), sa.column("last_cursor", sa.BigInteger)
)
events = sa.table("revocation_events", sa.column("cursor", sa.BigInteger))
SEQUENCE = sa.text("SELECT pg_get_serial_sequence('revocation_events', 'cursor')")


def _newest_cursor(bind: sa.Connection) -> int:
    newest = int(bind.execute(sa.select(sa.func.max(events.c.cursor))).scalar() or 0)
    if bind.dialect.name == "postgresql":
        sequence = bind.execute(SEQUENCE).scalar()
        if sequence is not None:
            # The name is PostgreSQL's own answer, already quoted: nothing here comes from outside.
            issued = bind.execute(
                sa.text(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}")  # noqa: S608
            ).scalar_one()
            newest = max(newest, int(issued))
    return newest


def upgrade() -> None:
    op.create_table(
        "event_stream",
        sa.Column("stream_id", sa.String(length=32), nullable=False),
        sa.Column("last_cursor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream_id", name=op.f("pk_event_stream")),
    )
    newest = _newest_cursor(op.get_bind())
    op.bulk_insert(stream, [{"stream_id": "", "last_cursor": newest}])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Cursors were assigned from the row; the column's sequence must not hand them out again.
        sequence = bind.execute(SEQUENCE).scalar()
        last = bind.execute(sa.select(stream.c.last_cursor)).scalar()
        if sequence is not None and last:
            bind.execute(sa.select(sa.func.setval(sequence, last)))
    op.drop_table("event_stream")
