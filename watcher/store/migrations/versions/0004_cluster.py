"""Cluster mode: instance heartbeats and camera group leases with fencing epochs.

See :mod:`watcher.cluster.sqlstore` for how they are used.

Revision ID: 0004
Revises: 0003
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
        "cluster_members",
        sa.Column("instance_id", sa.String(200), primary_key=True),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("started_ms", sa.BigInteger, nullable=False),
        sa.Column("info", sa.Text, nullable=False),
    )
    op.create_table(
        "cluster_leases",
        sa.Column("group_id", sa.Text, primary_key=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("acquired_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_leases")
    op.drop_table("cluster_members")
