"""Fleet: rig registry, rig leases and fleet jobs (harness/fleet_db.py).

Revision ID: 0002_fleet
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_fleet"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "fleet_rigs",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("tags", sa.JSON()),
        sa.Column("host", sa.String(255)),
        sa.Column("station_file", sa.Text()),
        sa.Column("station_hash", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("heartbeat_at", _TS),
        sa.Column("heartbeat_interval_s", sa.Float(), nullable=False),
        sa.Column("registered_at", _TS, nullable=False),
        sa.Column("quarantine_reason", sa.Text()),
        sa.Column("quarantined_at", _TS),
        sa.Column("last_job_id", sa.String(36)),
        sa.Column("last_run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="SET NULL")),
    )
    op.create_table(
        "fleet_leases",
        sa.Column("rig", sa.String(100), sa.ForeignKey("fleet_rigs.name", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("holder", sa.String(255)),
        sa.Column("job_id", sa.String(36)),
        sa.Column("acquired_at", _TS),
        sa.Column("renewed_at", _TS),
        sa.Column("expires_at", _TS),
    )
    op.create_table(
        "fleet_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("batch", sa.String(36), nullable=False),
        sa.Column("rig", sa.String(100), nullable=False),
        sa.Column("suite", sa.String(64), nullable=False),
        sa.Column("args", sa.JSON()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16)),
        sa.Column("detail", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("enqueued_at", _TS, nullable=False),
        sa.Column("deadline_at", _TS),
        sa.Column("started_at", _TS),
        sa.Column("ended_at", _TS),
        sa.Column("health_run_id", sa.Integer()),
        sa.Column("run_ids", sa.JSON()),
        sa.Column("exit_status", sa.Integer()),
    )
    op.create_index("ix_fleet_jobs_batch", "fleet_jobs", ["batch"])
    op.create_index("ix_fleet_jobs_rig", "fleet_jobs", ["rig"])
    op.create_index("ix_fleet_jobs_state", "fleet_jobs", ["state"])


def downgrade() -> None:
    op.drop_table("fleet_jobs")
    op.drop_table("fleet_leases")
    op.drop_table("fleet_rigs")
