"""one authorization code per PKCE challenge

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:10:00.000000

A unique index on `authorization_codes (client_id, code_challenge)`: one code per authorization
request, which its PKCE challenge names. A consent ticket or a sign-in form posted again, in the
ten minutes a ticket lives, had yielded another code for the same request.

Codes live 60 s and their rows an hour after that (for reuse detection). A database that already
holds several codes for one client and challenge keeps the newest of them; an older one presented
again within that hour is then refused as unknown, rather than as reused. Until they are
restarted, replicas of the previous build answer an internal error where they would have issued
such a second code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

codes = sa.table(
    "authorization_codes",
    sa.column("code_digest", sa.LargeBinary),
    sa.column("client_id", sa.String),
    sa.column("code_challenge", sa.String),
    sa.column("created_at", sa.Double),
)


def upgrade() -> None:
    other = codes.alias("other")
    newer = sa.exists().where(
        other.c.client_id == codes.c.client_id,
        other.c.code_challenge == codes.c.code_challenge,
        sa.or_(
            other.c.created_at > codes.c.created_at,
            sa.and_(
                other.c.created_at == codes.c.created_at,
                other.c.code_digest > codes.c.code_digest,
            ),
        ),
    )
    op.execute(codes.delete().where(newer))
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.create_index(
            "uq_authorization_codes_challenge", ["client_id", "code_challenge"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_index("uq_authorization_codes_challenge")
