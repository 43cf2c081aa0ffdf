"""Cluster membership and camera-group leases (tables of :mod:`watcher.cluster.sqlstore`).

``cluster_members``: one heartbeat row per instance. ``cluster_leases``: one
row per camera group, its owner and a fencing epoch that only grows.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
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
