"""The delivery outbox: one row per (notifying event, action).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", Id, sa.ForeignKey("alert_events.id"), nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("sent_ms", sa.BigInteger),
        sa.Column("last_error", sa.Text),
        sa.Column("summary_id", sa.Text),
        sa.CheckConstraint(
            "status IN ('pending', 'delivering', 'sent', 'dead', 'summarized')",
            name="deliveries_status"),
        sqlite_autoincrement=True,
    )
    op.create_index("deliveries_due", "deliveries", ["status", "next_attempt_ms", "id"])
    op.create_index("deliveries_by_event", "deliveries", ["event_id"])
    op.create_index("deliveries_by_action", "deliveries", ["action", "status"])
