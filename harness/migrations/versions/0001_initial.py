"""Initial schema: runs, scenarios, measurements, face_matches.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Plain types here, never model classes: a migration must stay what it was when written.
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("suite", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("station_name", sa.String(200)),
        sa.Column("station_file_hash", sa.String(64)),
        sa.Column("reader_firmware", sa.String(64)),
        sa.Column("reader_features", sa.JSON()),
        sa.Column("facehil_version", sa.String(64)),
        sa.Column("git_sha", sa.String(64)),
        sa.Column("card_deck", sa.JSON()),
        sa.Column("dataset_hash", sa.String(64)),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS),
        sa.Column("heartbeat_at", _TS),
        sa.Column("host", sa.String(255)),
        sa.Column("host_boot_id", sa.String(64)),
        sa.Column("pid", sa.Integer()),
        sa.Column("pid_started_at", sa.Float()),
        sa.Column("exit_status", sa.Integer()),
        sa.Column("abort_reason", sa.Text()),
        sa.Column("extra", sa.JSON()),
    )
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_suite", "runs", ["suite"])

    op.create_table(
        "scenarios",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("nodeid", sa.Text(), nullable=False),
        sa.Column("flow", sa.String(100)),
        sa.Column("params", sa.JSON()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("measurement_outcome", sa.String(16)),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("started_at", _TS),
        sa.Column("ended_at", _TS),
        sa.Column("longrepr", sa.Text()),
    )
    op.create_index("ix_scenarios_run_id", "scenarios", ["run_id"])
    op.create_index("ix_scenarios_flow", "scenarios", ["flow"])

    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("scenario_id", sa.Integer(), sa.ForeignKey("scenarios.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("unit", sa.String(32)),
        sa.Column("low", sa.Float()),
        sa.Column("high", sa.Float()),
        sa.Column("marginal_low", sa.Float()),
        sa.Column("marginal_high", sa.Float()),
        sa.Column("confidence", sa.Float()),
        sa.Column("errors", sa.Integer()),
        sa.Column("trials", sa.Integer()),
        sa.Column("bound_low", sa.Float()),
        sa.Column("bound_high", sa.Float()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("measured_at", _TS),
    )
    op.create_index("ix_measurements_run_id", "measurements", ["run_id"])
    op.create_index("ix_measurements_scenario_id", "measurements", ["scenario_id"])
    op.create_index("ix_measurements_name_run", "measurements", ["name", "run_id"])

    op.create_table(
        "face_matches",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("scenario_id", sa.Integer(), sa.ForeignKey("scenarios.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("genuine", sa.Boolean()),
        sa.Column("condition", sa.String(64)),
        sa.Column("subject_id", sa.String(128)),
    )
    op.create_index("ix_face_matches_run_id", "face_matches", ["run_id"])
    op.create_index("ix_face_matches_scenario_id", "face_matches", ["scenario_id"])


def downgrade() -> None:
    op.drop_table("face_matches")
    op.drop_table("measurements")
    op.drop_table("scenarios")
    op.drop_table("runs")
