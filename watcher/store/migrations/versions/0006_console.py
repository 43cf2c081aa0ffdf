"""The console's tables: silences, acknowledged episodes, feedback marks, evidence clips.

``alert_events.silenced_by`` names the silence that kept an event from
notifying. Indexes serve the console's timeline filters (stream, episode,
silenced) without scanning.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("alert_events") as batch:
        batch.add_column(sa.Column("silenced_by", sa.Text))
    op.create_index("alert_events_by_stream", "alert_events", ["stream_key", "created_ms"])
    op.create_index("alert_events_by_episode", "alert_events",
                    ["rule", "stream_key", "episode"])
    op.create_index("alert_events_silenced", "alert_events", ["created_ms", "id"],
                    sqlite_where=sa.text("silenced_by IS NOT NULL"),
                    postgresql_where=sa.text("silenced_by IS NOT NULL"))
    op.create_table(
        "silences",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("matchers", sa.Text, nullable=False),
        sa.Column("starts_ms", sa.BigInteger, nullable=False),
        sa.Column("ends_ms", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expired_ms", sa.BigInteger),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "acks",
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("stream_key", sa.Text, nullable=False),
        sa.Column("episode", sa.Integer, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("rule", "stream_key", "episode"),
    )
    op.create_table(
        "feedback",
        sa.Column("event_id", Id, sa.ForeignKey("alert_events.id"), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "evidence_clips",
        sa.Column("event_id", Id, sa.ForeignKey("alert_events.id"), nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("frames", sa.Integer, nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False),
        sa.Column("end_ms", sa.BigInteger, nullable=False),
        sa.Column("encode_cpu_ms", sa.Integer, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("evidence_clips_by_time", "evidence_clips", ["created_ms"])
