"""Alert states and events (with their evidence snapshots).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alert_state",
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("stream_key", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_ms", sa.BigInteger),
        sa.PrimaryKeyConstraint("rule", "stream_key"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "alert_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_key", sa.Text, nullable=False, unique=True),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("stream_key", sa.Text, nullable=False),
        sa.Column("episode", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("notify", sa.Integer, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("severity", sa.Text),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("answer", sa.Text),
        sa.Column("urls", sa.Text, nullable=False),
        sa.Column("stream_ids", sa.Text, nullable=False),
        sa.Column("stream_time_ms", sa.BigInteger),
        sa.Column("model", sa.Text),
        sa.Column("usage", sa.Text),
        sa.Column("snapshot", sa.LargeBinary),
        sa.Column("snapshot_type", sa.Text),
        sa.Column("extra", sa.Text, nullable=False),
        sa.CheckConstraint("kind IN ('firing', 'resolved', 'repeat')",
                           name="alert_events_kind"),
        sa.CheckConstraint("status IN ('firing', 'resolved')", name="alert_events_status"),
        sqlite_autoincrement=True,
    )
    op.create_index("alert_events_by_time", "alert_events", ["created_ms", "id"])
    op.create_index("alert_events_by_rule", "alert_events", ["rule", "created_ms"])
