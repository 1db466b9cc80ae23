"""The database schema (SQLAlchemy Core tables).

One row in ``calls`` per journey, keyed by ``(pbx, call_id)``, holding the full journey JSON (exactly
what ``onechance replay --json`` prints) plus typed columns for querying.  The child tables
(``queue_visits``, ``operator_legs``, ``transfers``) are derived from that JSON and rewritten with every
upsert of their call, so they are idempotent.  ``alerts`` is an outbox for alert delivery.

Times are epoch seconds (UTC) in double precision columns, exactly as in the journey JSON; see
``docs/database.md`` for how to turn them into dates in SQL.  Every constraint and index is named.
The Alembic migrations in ``onechance/migrations/versions`` create the same schema; a test checks
that the two never drift apart.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

#: the Alembic version table (its own name, so the database can be shared with other tools)
VERSION_TABLE = "onechance_alembic_version"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

FALSE = text("false")

calls = Table(
    "calls",
    metadata,
    Column("pbx", String(64), nullable=False),
    Column("call_id", String(64), nullable=False),
    Column("caller", String(128), nullable=False, server_default=""),
    Column("caller_name", String(256), nullable=False, server_default=""),
    Column("started_at", Double, nullable=False),
    Column("ended_at", Double, nullable=True),
    Column("updated_at", Double, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("lost", Boolean, nullable=False, server_default=FALSE),
    Column("short_abandon", Boolean, nullable=False, server_default=FALSE),
    Column("bounced", Boolean, nullable=False, server_default=FALSE),
    Column("uncertain", Boolean, nullable=False, server_default=FALSE),
    Column("recovered", Boolean, nullable=False, server_default=FALSE),
    Column("recovered_by", String(64), nullable=True),
    Column("recovered_at", Double, nullable=True),
    Column("first_queue", String(128), nullable=True),
    Column("last_queue", String(128), nullable=True),
    Column("first_operator", String(256), nullable=True),
    Column("queue_count", Integer, nullable=False, server_default="0"),
    Column("transfer_count", Integer, nullable=False, server_default="0"),
    Column("wait_seconds", Double, nullable=False, server_default="0"),
    Column("talk_seconds", Double, nullable=False, server_default="0"),
    Column("hangup_by", String(32), nullable=True),
    Column("closed_reason", String(64), nullable=True),
    Column("journey", JSON, nullable=False),
    Column("stored_at", Double, nullable=False),
    PrimaryKeyConstraint("pbx", "call_id", name="pk_calls"),
    Index("ix_calls_started_at", "started_at"),
    Index("ix_calls_outcome_started_at", "outcome", "started_at"),
    Index("ix_calls_caller_started_at", "caller", "started_at"),
    Index("ix_calls_first_queue_started_at", "first_queue", "started_at"),
    Index("ix_calls_worklist", "lost", "recovered", "started_at"),
)

queue_visits = Table(
    "queue_visits",
    metadata,
    Column("pbx", String(64), nullable=False),
    Column("call_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("queue", String(128), nullable=False),
    Column("callid", String(64), nullable=True),  # queue_log's callid: the waiting channel's Uniqueid
    Column("joined_at", Double, nullable=False),
    Column("left_at", Double, nullable=True),
    Column("wait_seconds", Double, nullable=False, server_default="0"),
    Column("result", String(16), nullable=False),
    Column("operator", String(256), nullable=True),
    Column("consultation", Boolean, nullable=False, server_default=FALSE),
    # False for a consultation call that never reached the caller (journey "consultations")
    Column("caller_visit", Boolean, nullable=False, server_default=text("true")),
    Column("short_abandon", Boolean, nullable=False, server_default=FALSE),
    Column("exit_status", String(32), nullable=True),
    PrimaryKeyConstraint("pbx", "call_id", "seq", name="pk_queue_visits"),
    ForeignKeyConstraint(
        ["pbx", "call_id"], ["calls.pbx", "calls.call_id"], ondelete="CASCADE", name="fk_queue_visits_calls"
    ),
    Index("ix_queue_visits_queue_joined_at", "queue", "joined_at"),
    Index("ix_queue_visits_joined_at", "joined_at"),
)

operator_legs = Table(
    "operator_legs",
    metadata,
    Column("pbx", String(64), nullable=False),
    Column("call_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("operator", String(256), nullable=False),
    Column("kind", String(16), nullable=False),  # "queue" or "dial"
    Column("queue", String(128), nullable=True),
    Column("interface", String(256), nullable=True),
    Column("answered_at", Double, nullable=True),
    Column("talk_from", Double, nullable=True),
    Column("ended_at", Double, nullable=True),
    Column("talk_seconds", Double, nullable=False, server_default="0"),
    Column("ended_by", String(32), nullable=True),
    PrimaryKeyConstraint("pbx", "call_id", "seq", name="pk_operator_legs"),
    ForeignKeyConstraint(
        ["pbx", "call_id"], ["calls.pbx", "calls.call_id"], ondelete="CASCADE", name="fk_operator_legs_calls"
    ),
    Index("ix_operator_legs_operator_answered_at", "operator", "answered_at"),
    Index("ix_operator_legs_queue_answered_at", "queue", "answered_at"),
)

transfers = Table(
    "transfers",
    metadata,
    Column("pbx", String(64), nullable=False),
    Column("call_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # "blind" or "attended"
    Column("from_operator", String(256), nullable=True),
    Column("from_queue", String(128), nullable=True),  # queue through which the transferring operator answered
    Column("to_target", String(256), nullable=False, server_default=""),
    Column("to_queue", String(128), nullable=True),
    Column("at", Double, nullable=False),
    PrimaryKeyConstraint("pbx", "call_id", "seq", name="pk_transfers"),
    ForeignKeyConstraint(
        ["pbx", "call_id"], ["calls.pbx", "calls.call_id"], ondelete="CASCADE", name="fk_transfers_calls"
    ),
    Index("ix_transfers_from_queue_at", "from_queue", "at"),
    Index("ix_transfers_at", "at"),
)

# The alert outbox.  No foreign key to ``calls`` on purpose: an alert may be queued before the
# asynchronous writer has stored its call.  ``channel`` is the delivery channel ("webhook", "email"...).
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pbx", String(64), nullable=False),
    Column("call_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # abandoned, timeout, rejected, bounced
    Column("channel", String(64), nullable=False),
    Column("state", String(16), nullable=False, server_default="pending"),  # pending, sent, failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", Double, nullable=False),
    Column("next_attempt_at", Double, nullable=True),
    Column("sent_at", Double, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("payload", JSON, nullable=True),
    UniqueConstraint("pbx", "call_id", "kind", "channel", name="uq_alerts_pbx_call_id_kind_channel"),
    Index("ix_alerts_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_alerts_pbx_call_id", "pbx", "call_id"),
)

CHILD_TABLES = (queue_visits, operator_legs, transfers)
