"""The journey store: calls, queue visits, operator legs, transfers and the alert outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

FALSE = sa.text("false")


def _child_key() -> list[sa.Column[Any]]:
    return [
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("caller", sa.String(128), nullable=False, server_default=""),
        sa.Column("caller_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("ended_at", sa.Double, nullable=True),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("lost", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("short_abandon", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("bounced", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("uncertain", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("recovered", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("recovered_by", sa.String(64), nullable=True),
        sa.Column("recovered_at", sa.Double, nullable=True),
        sa.Column("first_queue", sa.String(128), nullable=True),
        sa.Column("last_queue", sa.String(128), nullable=True),
        sa.Column("first_operator", sa.String(256), nullable=True),
        sa.Column("queue_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("transfer_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("wait_seconds", sa.Double, nullable=False, server_default="0"),
        sa.Column("talk_seconds", sa.Double, nullable=False, server_default="0"),
        sa.Column("hangup_by", sa.String(32), nullable=True),
        sa.Column("closed_reason", sa.String(64), nullable=True),
        sa.Column("journey", sa.JSON, nullable=False),
        sa.Column("stored_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("pbx", "call_id", name="pk_calls"),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_outcome_started_at", "calls", ["outcome", "started_at"])
    op.create_index("ix_calls_caller_started_at", "calls", ["caller", "started_at"])
    op.create_index("ix_calls_first_queue_started_at", "calls", ["first_queue", "started_at"])
    op.create_index("ix_calls_worklist", "calls", ["lost", "recovered", "started_at"])

    op.create_table(
        "queue_visits",
        *_child_key(),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("callid", sa.String(64), nullable=True),
        sa.Column("joined_at", sa.Double, nullable=False),
        sa.Column("left_at", sa.Double, nullable=True),
        sa.Column("wait_seconds", sa.Double, nullable=False, server_default="0"),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("operator", sa.String(256), nullable=True),
        sa.Column("consultation", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("caller_visit", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("short_abandon", sa.Boolean, nullable=False, server_default=FALSE),
        sa.Column("exit_status", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("pbx", "call_id", "seq", name="pk_queue_visits"),
        sa.ForeignKeyConstraint(
            ["pbx", "call_id"], ["calls.pbx", "calls.call_id"], ondelete="CASCADE", name="fk_queue_visits_calls"
        ),
    )
    op.create_index("ix_queue_visits_queue_joined_at", "queue_visits", ["queue", "joined_at"])
    op.create_index("ix_queue_visits_joined_at", "queue_visits", ["joined_at"])

    op.create_table(
        "operator_legs",
        *_child_key(),
        sa.Column("operator", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(128), nullable=True),
        sa.Column("interface", sa.String(256), nullable=True),
        sa.Column("answered_at", sa.Double, nullable=True),
        sa.Column("talk_from", sa.Double, nullable=True),
        sa.Column("ended_at", sa.Double, nullable=True),
        sa.Column("talk_seconds", sa.Double, nullable=False, server_default="0"),
        sa.Column("ended_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("pbx", "call_id", "seq", name="pk_operator_legs"),
        sa.ForeignKeyConstraint(
            ["pbx", "call_id"], ["calls.pbx", "calls.call_id"], ondelete="CASCADE", name="fk_operator_legs_calls"
        ),
    )
    op.create_index("ix_operator_legs_operator_answered_at", "operator_legs", ["operator", "answered_at"])
    op.create_index("ix_operator_legs_queue_answered_at", "operator_legs", ["queue", "answered_at"])

    op.create_table(
        "transfers",
        *_child_key(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_operator", sa.String(256), nullable=True),
        sa.Column("from_queue", sa.String(128), nullable=True),
        sa.Column("to_target", sa.String(256), nullable=False, server_default=""),
        sa.Column("to_queue", sa.String(128), nullable=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("pbx", "call_id", "seq", name="pk_transfers"),
        sa.ForeignKeyConstraint(
            ["pbx", "call_id"], ["calls.pbx", "calls.call_id"], ondelete="CASCADE", name="fk_transfers_calls"
        ),
    )
    op.create_index("ix_transfers_from_queue_at", "transfers", ["from_queue", "at"])
    op.create_index("ix_transfers_at", "transfers", ["at"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=True),
        sa.Column("sent_at", sa.Double, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("payload", sa.JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("pbx", "call_id", "kind", "channel", name="uq_alerts_pbx_call_id_kind_channel"),
    )
    op.create_index("ix_alerts_state_next_attempt_at", "alerts", ["state", "next_attempt_at"])
    op.create_index("ix_alerts_pbx_call_id", "alerts", ["pbx", "call_id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_pbx_call_id", table_name="alerts")
    op.drop_index("ix_alerts_state_next_attempt_at", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_transfers_at", table_name="transfers")
    op.drop_index("ix_transfers_from_queue_at", table_name="transfers")
    op.drop_table("transfers")
    op.drop_index("ix_operator_legs_queue_answered_at", table_name="operator_legs")
    op.drop_index("ix_operator_legs_operator_answered_at", table_name="operator_legs")
    op.drop_table("operator_legs")
    op.drop_index("ix_queue_visits_joined_at", table_name="queue_visits")
    op.drop_index("ix_queue_visits_queue_joined_at", table_name="queue_visits")
    op.drop_table("queue_visits")
    op.drop_index("ix_calls_worklist", table_name="calls")
    op.drop_index("ix_calls_first_queue_started_at", table_name="calls")
    op.drop_index("ix_calls_outcome_started_at", table_name="calls")
    op.drop_index("ix_calls_caller_started_at", table_name="calls")
    op.drop_index("ix_calls_started_at", table_name="calls")
    op.drop_table("calls")
