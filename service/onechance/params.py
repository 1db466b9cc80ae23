"""Query parameters of the HTTP API: one way to read times, lists, booleans and numbers everywhere.

* a multi-valued parameter (a filter) may be repeated or comma-separated, alike: ``?queue=a&queue=b`` is
  ``?queue=a,b``; a call matches when it matches any of the values (:func:`multi`, :func:`multi_bool`);
* a single-valued parameter (a bound, a limit) given twice is an error (:func:`single`);
* a parameter the route does not know is an error (:func:`check_known`);
* times are epoch seconds or ISO 8601 (:func:`parse_time`); booleans ``true``/``false``/``1``/``0``.

Every error is a :class:`BadRequest` whose one-line message names the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["BadRequest", "check_known", "multi", "multi_bool", "parse_int", "parse_time", "single"]

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class BadRequest(ValueError):
    """A bad query parameter or body; the message is shown to the client."""


def _values(query: Mapping[str, str] | Any, key: str) -> list[str]:
    return list(query.getall(key, [])) if hasattr(query, "getall") else ([query[key]] if key in query else [])


def multi(query: Mapping[str, str] | Any, key: str) -> list[str]:
    """Repeated and comma-separated values alike: ``?state=a&state=b`` == ``?state=a,b``."""
    return [v.strip() for value in _values(query, key) for v in value.split(",") if v.strip()]


def single(query: Mapping[str, str] | Any, key: str) -> str | None:
    """A parameter that takes one value (None when absent or empty); given twice is an error."""
    values = _values(query, key)
    if len(values) > 1:
        raise BadRequest(f"{key}: give it once")
    return (values[0].strip() or None) if values else None


def check_known(query: Mapping[str, str] | Any, allowed: Collection[str]) -> None:
    """Every parameter is one the route knows."""
    unknown = sorted(set(query.keys()) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def multi_bool(query: Mapping[str, str] | Any, key: str) -> bool | None:
    """A boolean filter: ``true``/``1`` or ``false``/``0`` (any case); None when absent, or when both were
    given (a call is either, so it matches any)."""
    seen: set[bool] = set()
    for value in multi(query, key):
        low = value.lower()
        if low in _TRUE:
            seen.add(True)
        elif low in _FALSE:
            seen.add(False)
        else:
            raise BadRequest(f"{key}: expected true or false (or 1 or 0), not {value!r}")
    return seen.pop() if len(seen) == 1 else None


def parse_int(text: str, name: str, low: int, high: int) -> int:
    """A whole number within ``[low, high]``."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest(f"{name}: expected a whole number from {low} to {high}")
    return value


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
