"""``onechance db ...``, ``onechance report`` and ``onechance replay --store``.

Every failure is one line on stderr and a non-zero exit status: 2 for configuration problems (bad
URL, bad dates), 1 when the database cannot be reached or used.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ..journey import CallPolicy
from .engine import SQLITE, StoreConfigError, describe, is_unavailable, make_engine, mask_url, normalize_url
from .migrate import current_revision, downgrade, head_revision, upgrade
from .report import FORMATS, PERIODS, ReportError, build_report, local_zone, parse_bound, render, zone
from .spool import SpoolError
from .writer import JourneyWriter

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..config import Settings
    from ..journey import CallRecord


class CommandError(Exception):
    """A failure to report in one line, with an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def command_settings(args: argparse.Namespace) -> Settings:
    from ..config import ConfigError, load_settings

    try:
        return load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        raise CommandError(str(exc), 2) from None


def command_engine(settings: Settings, must_exist: bool = False) -> AsyncEngine:
    from ..config import ConfigError

    try:
        url = settings.database_url()
    except ConfigError as exc:
        raise CommandError(str(exc), 2) from None
    try:
        parsed = normalize_url(url)
        if must_exist and parsed.drivername == SQLITE:
            db = parsed.database or ""
            if db != ":memory:" and not db.startswith("file:") and not Path(db).expanduser().exists():
                raise CommandError(f"no database at {db} (run `onechance db upgrade` to create it)")
        return make_engine(parsed)
    except StoreConfigError as exc:
        raise CommandError(str(exc), 2) from None


def run_command(prog: str, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(main())
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.status
    except (SpoolError, StoreConfigError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if is_unavailable(exc):
            print(f"{prog}: database unavailable: {describe(exc)}", file=sys.stderr)
        else:
            print(f"{prog}: database error: {describe(exc)}", file=sys.stderr)
        return 1


async def _schema_check(engine: AsyncEngine) -> None:
    current = await current_revision(engine)
    if current is None:
        raise CommandError("the database has no onechance tables yet (run `onechance db upgrade`)")


# ---- db ------------------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    """``onechance db upgrade|downgrade REV|current``."""
    prog = f"onechance db {args.db_command}"

    async def main() -> int:
        settings = command_settings(args)
        engine = command_engine(settings, must_exist=args.db_command != "upgrade")
        url = mask_url(settings.database_url())
        try:
            head = head_revision()
            if args.db_command == "upgrade":
                await upgrade(engine, args.revision)
                rev = await current_revision(engine)
                print(f"{url}: at revision {rev}{' (head)' if rev == head else ''}")
            elif args.db_command == "downgrade":
                await downgrade(engine, args.revision)
                rev = await current_revision(engine)
                print(f"{url}: at revision {rev or 'base (no onechance tables)'}")
            else:
                rev = await current_revision(engine)
                if rev is None:
                    print(f"{url}: no onechance schema (run `onechance db upgrade`); head is {head}")
                elif rev == head:
                    print(f"{url}: at revision {rev} (head)")
                else:
                    print(f"{url}: at revision {rev}; head is {head} (run `onechance db upgrade`)")
        finally:
            await engine.dispose()
        return 0

    return run_command(prog, main)


# ---- report --------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    """``onechance report [--from DAY] [--to DAY] [--by hour|day|week|month] [--queue Q] [--pbx P] [--operators]
    [--format table|csv|json|html] [--output FILE] [--tz ZONE]``."""
    prog = "onechance report"

    async def main() -> int:
        settings = command_settings(args)
        by = args.by
        if by not in PERIODS:
            raise CommandError(f"unknown --by {by!r} (hour, day, week or month)", 2)
        fmt = args.format
        if fmt not in FORMATS:
            raise CommandError(f"unknown --format {fmt!r} ({', '.join(FORMATS)})", 2)
        try:
            # the zone: --tz, else [report] timezone, else the machine's own
            tz = zone(args.tz) if args.tz else (zone(settings.report.timezone) if settings.report.timezone
                                                 else local_zone())
            today = datetime.now(tz).date().isoformat()  # the days of the report are days in its zone
            first = args.date_from or today
            start = parse_bound(first, tz)
            # without --to: to the end of the --from day (also when --from is a date-time)
            last = args.date_to or datetime.fromtimestamp(start, tz).date().isoformat()
            end = parse_bound(last, tz, end=True)
        except ReportError as exc:
            raise CommandError(str(exc), 2) from None
        if end <= start:
            raise CommandError(f"--to {last} is before --from {first}", 2)
        output = Path(args.output) if args.output else None
        if output is not None and not output.parent.is_dir():
            raise CommandError(f"--output {output}: no directory {output.parent}", 2)
        engine = command_engine(settings, must_exist=True)
        try:
            await _schema_check(engine)
            report = await build_report(engine, start, end, by=by, tz=tz, queue=args.queue, pbx=args.pbx,
                                        policy=CallPolicy.from_settings(settings), operator_figures=args.operators)
        finally:
            await engine.dispose()
        text = render(report, fmt)
        if output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return 0
        try:
            partial = output.with_name(f".{output.name}.partial")
            partial.write_text(text, encoding="utf-8")
            partial.replace(output)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise CommandError(f"--output {output}: {exc.strerror or exc}", 1) from None
        return 0

    return run_command(prog, main)


# ---- replay --store ------------------------------------------------------------------------------------
def store_replayed(journeys: Sequence[CallRecord], args: argparse.Namespace) -> int:
    """Write replayed calls into the configured database (status 0), or keep them in the spool
    when it is unavailable (status 1, with the reason)."""
    prog = "onechance replay"

    async def main() -> int:
        settings = command_settings(args)
        engine = command_engine(settings)
        url = mask_url(settings.database_url())
        writer = JourneyWriter.from_settings(settings, engine, CollectorRegistry(), flush_interval=0.05)
        try:
            await writer.start()
            for j in journeys:
                writer.submit(j)
            stored = await writer.flush()
            await writer.close(timeout=None)
        finally:
            await engine.dispose()
        if stored and not writer.spooled:
            print(f"{prog}: stored {len(journeys)} journeys in {url}", file=sys.stderr)
            return 0
        reason = writer.last_error or "unknown error"
        print(f"{prog}: database unavailable ({reason}): {writer.spooled} journeys kept in the spool "
              f"{writer.spool_dir}; they are written at the next start with a reachable database",
              file=sys.stderr)
        return 1

    return run_command(prog, main)
