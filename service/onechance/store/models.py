"""The database schema (SQLAlchemy Core tables).

One row in ``calls`` per journey, keyed by ``(pbx, call_id)``, holding the full journey JSON (exactly
what ``onechance replay --json`` prints) plus typed columns for querying.  The child tables
(``queue_visits``, ``operator_legs``, ``transfers``) are derived from the record and rewritten with every
upsert of their call, so they are idempotent.  A recovery sets the ``recovered*`` columns by a targeted update
that later upserts never overwrite.  ``alerts`` holds each alert raised (one per call and kind),
``alert_deliveries`` its delivery to each channel (the outbox), and ``callbacks`` (with ``callback_calls`` and
``callback_attempts``) the callback worklist's human state, which no journey upsert ever touches.

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
    Column("recovered_how", String(16), nullable=True),  # inbound (called again) or outbound (called back)
    Column("first_queue", String(128), nullable=True),
    Column("last_queue", String(128), nullable=True),
    Column("first_operator", String(256), nullable=True),
    Column("queue_count", Integer, nullable=False, server_default="0"),
    Column("transfer_count", Integer, nullable=False, server_default="0"),
    Column("wait_seconds", Double, nullable=False, server_default="0"),
    Column("talk_seconds", Double, nullable=False, server_default="0"),
    Column("hangup_by", String(32), nullable=True),
    Column("closed_reason", String(64), nullable=True),
    Column("direction", String(16), nullable=False, server_default="inbound"),
    Column("callee", String(128), nullable=True),  # outbound: the outside number dialled
    Column("caller_key", String(64), nullable=True),  # the caller's number normalised (E.164 when possible)
    Column("journey", JSON, nullable=False),
    Column("stored_at", Double, nullable=False),
    PrimaryKeyConstraint("pbx", "call_id", name="pk_calls"),
    Index("ix_calls_started_at", "started_at"),
    Index("ix_calls_outcome_started_at", "outcome", "started_at"),
    Index("ix_calls_caller_started_at", "caller", "started_at"),
    Index("ix_calls_first_queue_started_at", "first_queue", "started_at"),
    Index("ix_calls_worklist", "lost", "recovered", "started_at"),
    Index("ix_calls_caller_key_started_at", "caller_key", "started_at"),
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

# Alerts: the fact, one per call and kind, whatever the channels.  No foreign key to ``calls`` on purpose: an
# alert is raised (and stored) before the asynchronous writer has stored its call.  Ids are made by the daemon
# (from the call and the kind), so the same alert always has the same id.
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(32), nullable=False),
    Column("pbx", String(64), nullable=False),
    Column("call_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # abandoned, timeout, rejected, exited, bounced, long_wait
    Column("queue", String(128), nullable=False, server_default=""),
    Column("caller", String(128), nullable=False, server_default=""),
    Column("decided_at", Double, nullable=False),  # PBX time of the event that decided it
    Column("created_at", Double, nullable=False),  # local time it was recorded
    Column("state", String(16), nullable=False, server_default="open"),  # open, resolved
    Column("resolved_at", Double, nullable=True),
    Column("payload", JSON, nullable=False),
    Column("updated_at", Double, nullable=False),
    PrimaryKeyConstraint("id", name="pk_alerts"),
    UniqueConstraint("pbx", "call_id", "kind", name="uq_alerts_pbx_call_id_kind"),
    Index("ix_alerts_decided_at", "decided_at"),
)

# The outbox: one row per alert and channel, with its delivery state.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("alert_id", String(32), nullable=False),
    Column("channel", String(64), nullable=False),
    # pending, sent, failed (gave up), expired (too old), suppressed (muted, outside hours), cancelled
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Double, nullable=True),
    Column("last_attempt_at", Double, nullable=True),
    Column("sent_at", Double, nullable=True),
    Column("resolved_sent_at", Double, nullable=True),  # a resolve notice went out (Alertmanager)
    Column("last_error", Text, nullable=True),
    Column("idempotency_key", String(80), nullable=False),
    Column("updated_at", Double, nullable=False),
    PrimaryKeyConstraint("alert_id", "channel", name="pk_alert_deliveries"),
    ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE", name="fk_alert_deliveries_alerts"),
    Index("ix_alert_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
)

# The callback worklist: one open entry per caller (several lost calls of one number are one entry).
callbacks = Table(
    "callbacks",
    metadata,
    Column("id", String(32), nullable=False),
    Column("pbx", String(64), nullable=False),
    Column("caller_key", String(64), nullable=False),
    Column("caller", String(128), nullable=False),
    Column("caller_name", String(256), nullable=False, server_default=""),
    Column("queue", String(128), nullable=False, server_default=""),  # queue of the first lost call
    Column("state", String(16), nullable=False, server_default="waiting"),  # waiting, claimed, done
    Column("lost_count", Integer, nullable=False, server_default="1"),
    Column("first_lost_at", Double, nullable=False),
    Column("last_lost_at", Double, nullable=False),
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_at", Double, nullable=True),
    Column("note", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_attempt_at", Double, nullable=True),
    # how it was closed: inbound (called again), outbound (called back), manual (reached or gave up), expired
    Column("resolution", String(16), nullable=True),
    Column("done_reason", Text, nullable=True),
    Column("resolved_by_call", String(64), nullable=True),
    Column("closed_at", Double, nullable=True),
    Column("updated_at", Double, nullable=False),
    PrimaryKeyConstraint("id", name="pk_callbacks"),
    Index("ix_callbacks_state_first_lost_at", "state", "first_lost_at"),
    Index("uq_callbacks_open_caller", "pbx", "caller_key", unique=True,
          sqlite_where=text("closed_at IS NULL"), postgresql_where=text("closed_at IS NULL")),
)

callback_calls = Table(
    "callback_calls",
    metadata,
    Column("callback_id", String(32), nullable=False),
    Column("pbx", String(64), nullable=False),
    Column("call_id", String(64), nullable=False),
    Column("queue", String(128), nullable=False, server_default=""),
    Column("outcome", String(16), nullable=False),
    Column("lost_at", Double, nullable=False),
    PrimaryKeyConstraint("callback_id", "pbx", "call_id", name="pk_callback_calls"),
    ForeignKeyConstraint(["callback_id"], ["callbacks.id"], ondelete="CASCADE", name="fk_callback_calls_callbacks"),
)

callback_attempts = Table(
    "callback_attempts",
    metadata,
    Column("id", String(32), nullable=False),
    Column("callback_id", String(32), nullable=False),
    Column("at", Double, nullable=False),
    Column("by", String(256), nullable=True),  # who called (operator)
    Column("call_id", String(64), nullable=True),  # the outbound call, when made through the PBX
    Column("answered", Boolean, nullable=False, server_default=FALSE),
    PrimaryKeyConstraint("id", name="pk_callback_attempts"),
    ForeignKeyConstraint(["callback_id"], ["callbacks.id"], ondelete="CASCADE",
                         name="fk_callback_attempts_callbacks"),
)

CHILD_TABLES = (queue_visits, operator_legs, transfers)
