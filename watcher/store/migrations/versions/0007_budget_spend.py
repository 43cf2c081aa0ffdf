"""Spend against rule and model budgets, so a restart keeps counting (see
:mod:`watcher.engine.budget`).

``budget_spend``: one row per (scope, name, period), the calls and tokens of
its current UTC window (``window_start_ms``).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_spend",
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("window_start_ms", sa.BigInteger, nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("scope", "name", "period"),
        sqlite_with_rowid=False,
    )
