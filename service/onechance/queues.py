"""The queues each PBX has: from the configuration, ``QueueStatus`` and the calls seen; bounded in number.

Queue names come from the PBX: a broken or hostile PBX could send thousands of them, and each one is a label
value of every per-queue metric.  Past ``limit`` names per PBX, new names are counted under ``"other"`` (and a
warning is logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["OTHER", "QueueCatalog"]

log = logging.getLogger(__name__)

OTHER = "other"


class QueueCatalog:
    def __init__(self, configured: Iterable[str] = (), limit: int = 200) -> None:
        self.configured = list(dict.fromkeys(configured))
        self.limit = max(limit, len(self.configured))
        self._by_pbx: dict[str, dict[str, None]] = {}
        self._warned: set[str] = set()

    def add_pbx(self, pbx: str) -> None:
        if pbx not in self._by_pbx:
            self._by_pbx[pbx] = dict.fromkeys(self.configured)

    def label(self, pbx: str, queue: str) -> str:
        """The label value for a queue of ``pbx`` (the queue itself, learnt now if new; ``other`` past the
        limit).  '' (a call that visited no queue) stays ''."""
        if not queue:
            return queue
        known = self._by_pbx.get(pbx)
        if known is None:
            self.add_pbx(pbx)
            known = self._by_pbx[pbx]
        if queue in known:
            return queue
        if len(known) >= self.limit:
            if pbx not in self._warned:
                self._warned.add(pbx)
                log.warning("%s: more than %d queue names: the new ones are counted as %r in the metrics", pbx,
                            self.limit, OTHER)
            known.setdefault(OTHER, None)
            return OTHER
        known[queue] = None
        return queue

    def queues(self, pbx: str) -> list[str]:
        return list(self._by_pbx.get(pbx, ()))

    def pbxs(self) -> list[str]:
        return list(self._by_pbx)
