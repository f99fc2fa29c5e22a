"""failed logins shared by every replica

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:12:40.118305

`login_failures`: the recent failed logins per account and per client IP, which the gateway used to
keep in each process's memory (so N replicas gave N budgets, and a restart reset them). Keys are
HMAC digests of the username or IP. The table starts empty: every budget starts full once, as it
did after a restart before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("key_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key_digest", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_failures_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_failures_expires_at"))
    op.drop_table("login_failures")
