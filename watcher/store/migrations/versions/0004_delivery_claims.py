"""Delivery claims: who is delivering a row, and until when the claim holds.

A claim whose deadline has passed lapses: any store instance may take the
delivery again (its claimer died or froze). The Idempotency-Key stays.

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
    op.add_column("deliveries", sa.Column("claimed_by", sa.Text))
    op.add_column("deliveries", sa.Column("claim_expires_ms", sa.BigInteger))
    op.create_index("deliveries_claims", "deliveries", ["status", "claim_expires_ms"])
