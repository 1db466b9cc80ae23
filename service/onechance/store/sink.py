"""The store as a sink: every finished call and every recovery goes to the writer."""

from __future__ import annotations

from ..journey import Recovered, Update, UpdateKind
from .writer import JourneyWriter

__all__ = ["StoreSink"]


class StoreSink:
    """Hands the writer each call's record when it ends (again when a resync took it up and it ended later),
    and each recovery; never blocks (``JourneyWriter.submit``)."""

    def __init__(self, writer: JourneyWriter) -> None:
        self.writer = writer

    def handle(self, update: Update) -> None:
        if isinstance(update, Recovered):
            self.writer.submit(update)
        elif update.kind == UpdateKind.ENDED:
            self.writer.submit(update.record)
