"""Alerts, their deliveries and the callback worklist; direction, callee, caller key and how a call was recovered.

The unused alert outbox of 0001 (one row per alert and channel) becomes two tables: ``alerts`` (the fact,
unique per call and kind) and ``alert_deliveries`` (per alert and channel).  ``callbacks``,
``callback_calls`` and ``callback_attempts`` hold the worklist's human state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FALSE = sa.text("false")
OPEN = sa.text("closed_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("recovered_how", sa.String(16), nullable=True))
        batch.add_column(sa.Column("direction", sa.String(16), nullable=False, server_default="inbound"))
        batch.add_column(sa.Column("callee", sa.String(128), nullable=True))
        batch.add_column(sa.Column("caller_key", sa.String(64), nullable=True))
    op.create_index("ix_calls_caller_key_started_at", "calls", ["caller_key", "started_at"])

    op.drop_index("ix_alerts_pbx_call_id", table_name="alerts")
    op.drop_index("ix_alerts_state_next_attempt_at", table_name="alerts")
    op.drop_table("alerts")
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False, server_default=""),
        sa.Column("caller", sa.String(128), nullable=False, server_default=""),
        sa.Column("decided_at", sa.Double, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="open"),
        sa.Column("resolved_at", sa.Double, nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("pbx", "call_id", "kind", name="uq_alerts_pbx_call_id_kind"),
    )
    op.create_index("ix_alerts_decided_at", "alerts", ["decided_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Double, nullable=True),
        sa.Column("last_attempt_at", sa.Double, nullable=True),
        sa.Column("sent_at", sa.Double, nullable=True),
        sa.Column("resolved_sent_at", sa.Double, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("idempotency_key", sa.String(80), nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("alert_id", "channel", name="pk_alert_deliveries"),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE", name="fk_alert_deliveries_alerts"),
    )
    op.create_index("ix_alert_deliveries_state_next_attempt_at", "alert_deliveries", ["state", "next_attempt_at"])

    op.create_table(
        "callbacks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("caller_key", sa.String(64), nullable=False),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("caller_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("queue", sa.String(128), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False, server_default="waiting"),
        sa.Column("lost_count", sa.Integer, nullable=False, server_default="1"),
        sa.Column("first_lost_at", sa.Double, nullable=False),
        sa.Column("last_lost_at", sa.Double, nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", sa.Double, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_attempt_at", sa.Double, nullable=True),
        sa.Column("resolution", sa.String(16), nullable=True),
        sa.Column("done_reason", sa.Text, nullable=True),
        sa.Column("resolved_by_call", sa.String(64), nullable=True),
        sa.Column("closed_at", sa.Double, nullable=True),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_callbacks"),
    )
    op.create_index("ix_callbacks_state_first_lost_at", "callbacks", ["state", "first_lost_at"])
    op.create_index("uq_callbacks_open_caller", "callbacks", ["pbx", "caller_key"], unique=True,
                    sqlite_where=OPEN, postgresql_where=OPEN)
    op.create_table(
        "callback_calls",
        sa.Column("callback_id", sa.String(32), nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("lost_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("callback_id", "pbx", "call_id", name="pk_callback_calls"),
        sa.ForeignKeyConstraint(["callback_id"], ["callbacks.id"], ondelete="CASCADE",
                                name="fk_callback_calls_callbacks"),
    )
    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("callback_id", sa.String(32), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("by", sa.String(256), nullable=True),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("answered", sa.Boolean, nullable=False, server_default=FALSE),
        sa.PrimaryKeyConstraint("id", name="pk_callback_attempts"),
        sa.ForeignKeyConstraint(["callback_id"], ["callbacks.id"], ondelete="CASCADE",
                                name="fk_callback_attempts_callbacks"),
    )


def downgrade() -> None:
    op.drop_table("callback_attempts")
    op.drop_table("callback_calls")
    op.drop_index("uq_callbacks_open_caller", table_name="callbacks")
    op.drop_index("ix_callbacks_state_first_lost_at", table_name="callbacks")
    op.drop_table("callbacks")
    op.drop_index("ix_alert_deliveries_state_next_attempt_at", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alerts_decided_at", table_name="alerts")
    op.drop_table("alerts")
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
    op.drop_index("ix_calls_caller_key_started_at", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("caller_key")
        batch.drop_column("callee")
        batch.drop_column("direction")
        batch.drop_column("recovered_how")
