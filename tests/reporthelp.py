"""Helpers of the report tests: real captures' records moved in time, renamed, stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from onechance.journey import CallPolicy, CallRecord
from onechance.store import store_journeys
from onechance.store.report import Report, build_report

from .storehelp import final_records


def shift(value: Any, delta: float) -> Any:
    """A journey dict with every time (``*_at``, a leg's ``talk_from``, a transfer's ``at``) moved by ``delta``."""
    if isinstance(value, dict):
        return {k: (v + delta if is_time(k) and isinstance(v, float) else shift(v, delta)) for k, v in value.items()}
    if isinstance(value, list):
        return [shift(v, delta) for v in value]
    return value


def is_time(key: str) -> bool:
    return key.endswith("_at") or key in ("at", "talk_from")


def moved(record: CallRecord, first_join: float, *, suffix: str = "", pbx: str | None = None) -> CallRecord:
    """``record`` moved so that its first queue visit joins at ``first_join``, its call id made unique with
    ``suffix`` (and its PBX renamed)."""
    d = shift(dict(record.to_json()), first_join - record.queues[0].joined_at)
    d["call_id"] = f"{record.call_id}{suffix}"
    if pbx is not None:
        d["pbx"] = pbx
    return CallRecord.from_json(d)


def capture_at(name: str, first_join: float, *, suffix: str = "", pbx: str | None = None) -> list[CallRecord]:
    """Every call of a capture, moved together so that its earliest queue visit joins at ``first_join``."""
    records = final_records(name)
    base = min(r.queues[0].joined_at for r in records if r.queues)
    out = []
    for r in records:
        d = shift(dict(r.to_json()), first_join - base)
        d["call_id"] = f"{r.call_id}{suffix}"
        if pbx is not None:
            d["pbx"] = pbx
        out.append(CallRecord.from_json(d))
    return out


async def stored_report(engine: AsyncEngine, records: list[CallRecord], start: float = 0.0, end: float = 4e9,
                        **options: Any) -> Report:
    """Store ``records`` and build the report of ``[start, end)`` (service level 20 s)."""
    await store_journeys(engine, records, stored_at=0.0)
    options.setdefault("policy", CallPolicy.with_defaults(service_level_seconds=20.0))
    return await build_report(engine, start, end, **options)
