"""One-chance alerts: raised from the call records, kept in a persisted outbox, delivered to channels."""
