"""Campaign records: campaign_runs (plan, seed, schedule) and campaign_transactions (harness/campaign/records.py).

Revision ID: 0004_campaign
Revises: 0002_fleet
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_campaign"
down_revision = "0002_fleet"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaign_runs",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("limits", sa.JSON()),
        sa.Column("stopped_by", sa.String(32)),
        sa.Column("resumed", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "campaign_transactions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("card", sa.String(100), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("condition", sa.String(64), nullable=False),
        sa.Column("species", sa.String(64)),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200)),
        sa.Column("attack_detected", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_events", sa.JSON()),
        sa.Column("score", sa.Float()),
        sa.Column("transaction_ms", sa.Float()),
        sa.Column("total_ms", sa.Float()),
        sa.Column("started_at", _TS),
        sa.Column("error", sa.Text()),
        sa.UniqueConstraint("run_id", "seq", name="uq_campaign_transactions_run_seq"),
    )
    op.create_index("ix_campaign_transactions_run_id", "campaign_transactions", ["run_id"])
    op.create_index("ix_campaign_transactions_kind", "campaign_transactions", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_campaign_transactions_kind", table_name="campaign_transactions")
    op.drop_index("ix_campaign_transactions_run_id", table_name="campaign_transactions")
    op.drop_table("campaign_transactions")
    op.drop_table("campaign_runs")
