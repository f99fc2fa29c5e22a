"""one authorization code per PKCE challenge, and whether its request named a redirect URI

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:10:00.000000

A unique index on `authorization_codes (client_id, code_challenge)`: one live code per
authorization request, which its PKCE challenge names. A consent ticket or a sign-in form posted
again, in the ten minutes a ticket lives, had yielded another code for the same request; now it
replaces the code while that is unused, and gets none once it is used.

A database that already holds several codes for one client and challenge keeps one of them: the
newest redeemed one if there is one (so its reuse is still detected), else the newest. On
PostgreSQL the table is locked first (ACCESS EXCLUSIVE, which adding the column takes anyway;
taken up front, a replica of the previous build reading the table cannot deadlock with it), so
that no such replica inserts another code between the cleanup and the index. Until they are
restarted, those replicas answer an internal error where they would have issued a second code
for a request.

Upgrade authsvc before standalone gateways: a gateway of this build lets a request leave its
redirect URI out, and an authsvc of the previous build would bind that code to the URI, so its
token request without one would be refused. (The gateway `authsvc serve` embeds upgrades with it.)

`redirect_uri_sent`: false where the authorization request named no redirect URI (OAuth 2.1
§4.1.1), so that its token request may leave it out too (§4.1.3). Every existing code's request
named one.
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
    sa.column("used_at", sa.Double),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("LOCK TABLE authorization_codes IN ACCESS EXCLUSIVE MODE")
    other = codes.alias("other")
    used, other_used = codes.c.used_at.is_not(None), other.c.used_at.is_not(None)
    same_use = sa.or_(sa.and_(used, other_used), sa.and_(~used, ~other_used))
    kept_instead = sa.or_(
        sa.and_(other_used, ~used),
        sa.and_(
            same_use,
            sa.or_(
                other.c.created_at > codes.c.created_at,
                sa.and_(
                    other.c.created_at == codes.c.created_at,
                    other.c.code_digest > codes.c.code_digest,
                ),
            ),
        ),
    )
    duplicate = sa.exists().where(
        other.c.client_id == codes.c.client_id,
        other.c.code_challenge == codes.c.code_challenge,
        kept_instead,
    )
    op.execute(codes.delete().where(duplicate))
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("redirect_uri_sent", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.create_index(
            "uq_authorization_codes_challenge", ["client_id", "code_challenge"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_index("uq_authorization_codes_challenge")
        batch_op.drop_column("redirect_uri_sent")
