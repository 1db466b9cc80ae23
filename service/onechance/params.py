"""Query parameters of the HTTP API: one way to read times and lists everywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["BadRequest", "multi", "parse_time"]


class BadRequest(ValueError):
    """A bad query parameter or body; the message is shown to the client."""


def multi(query: Mapping[str, str] | Any, key: str) -> list[str]:
    """Repeated and comma-separated values alike: ``?state=a&state=b`` == ``?state=a,b``."""
    values = query.getall(key, []) if hasattr(query, "getall") else ([query[key]] if key in query else [])
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def parse_time(text: str, name: str = "since") -> float:
    """Epoch seconds, or an ISO 8601 date-time (UTC when it has no offset)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):  # "nan" matched every call in memory and none in the store
            raise BadRequest(f"{name}: expected epoch seconds or an ISO 8601 date-time")
        return value
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: expected epoch seconds or an ISO 8601 date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


