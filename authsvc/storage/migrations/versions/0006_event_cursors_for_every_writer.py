"""event cursors from the event stream row, for writers of every build

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 02:10:00.000000

Since 0003 authsvc takes each event's cursor from `event_stream.last_cursor`, while on PostgreSQL
the column `revocation_events.cursor` kept its sequence as its default. A replica of a build
before 0003, still serving between `authsvc migrate` and its restart (the order docs/replicas.md
gives), appends with that sequence, which the row never counted: the next append of this build
takes a cursor the table already holds and fails, and so does every append after it, until that
row is purged; and an event of the old replica can get a cursor below one that tailers have read
past, and be skipped.

Here, on PostgreSQL, the column's default becomes a function that takes the next cursor from the
row as this build does, under the same row lock, so cursors stay in commit order whoever writes;
and the row is first moved past every cursor already handed out, by the sequence or found in the
table, for a database that such a replica has overtaken already. The table is locked meanwhile,
so that no append comes between. The locks are taken in the order appenders of 0003-0005 take
theirs (the append lock, the row, then the table), so that one appending meanwhile is waited for
rather than deadlocked with. SQLite serves one process, and needs nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SEQUENCE = sa.text("SELECT pg_get_serial_sequence('revocation_events', 'cursor')")
#: `authsvc.storage.sql.EVENT_APPEND_LOCK` as it stands for this migration: appenders take it first.
EVENT_APPEND_LOCK = 0x61757468_0001


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _lock_out_appenders(bind)
    newest = int(bind.execute(sa.text("SELECT max(cursor) FROM revocation_events")).scalar() or 0)
    sequence = bind.execute(SEQUENCE).scalar()
    if sequence is not None:
        # The name is PostgreSQL's own answer, already quoted: nothing here comes from outside.
        issued = bind.execute(
            sa.text(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}")  # noqa: S608
        ).scalar_one()
        newest = max(newest, int(issued))
    bind.execute(
        sa.text("UPDATE event_stream SET last_cursor = GREATEST(last_cursor, :newest)"),
        {"newest": newest},
    )
    op.execute(
        "CREATE FUNCTION authsvc_next_event_cursor() RETURNS bigint LANGUAGE sql VOLATILE AS "
        "'UPDATE event_stream SET last_cursor = last_cursor + 1 RETURNING last_cursor'"
    )
    op.execute(
        "ALTER TABLE revocation_events ALTER COLUMN cursor SET DEFAULT authsvc_next_event_cursor()"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _lock_out_appenders(bind)  # so that no cursor is handed out between the read and setval
    sequence = bind.execute(SEQUENCE).scalar()
    if sequence is not None:
        # The name is PostgreSQL's own answer, already quoted: nothing here comes from outside.
        last = bind.execute(sa.text("SELECT last_cursor FROM event_stream")).scalar()
        if last:
            bind.execute(sa.select(sa.func.setval(sequence, last)))
        op.execute(
            f"ALTER TABLE revocation_events ALTER COLUMN cursor SET DEFAULT nextval('{sequence}')"
        )
    op.execute("DROP FUNCTION authsvc_next_event_cursor()")


def _lock_out_appenders(bind: sa.Connection) -> None:
    """Wait for the appends in progress and hold off new ones until the migration commits, taking
    the locks in the order appenders take theirs: the append lock, the row, then the table (a
    replica of a build before 0003 takes only the table's)."""
    bind.execute(sa.select(sa.func.pg_advisory_xact_lock(EVENT_APPEND_LOCK)))
    bind.execute(sa.text("SELECT last_cursor FROM event_stream FOR UPDATE"))
    op.execute("LOCK TABLE revocation_events IN EXCLUSIVE MODE")
