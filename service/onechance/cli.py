"""The ``onechance`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .journey import CallPolicy, CallRecord, QueueRule
from .replay import ReplayError, replay_files


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _table(records: Sequence[CallRecord]) -> str:
    head = ("started (UTC)", "caller", "name", "outcome", "queues", "operators", "wait", "talk", "alerts")
    rows = [head]
    for j in records:
        d = j.to_json()
        outcome = d["outcome"] + (" (short)" if d["short_abandon"] else "")
        if d["recovered"]:
            outcome += " recovered"
        if d["uncertain"]:
            outcome += " ?"
        rows.append(
            (
                _fmt_time(j.started_at),
                d["caller"] or "-",
                d["caller_name"] or "-",
                outcome,
                " > ".join(q["queue"] for q in d["queues"]) or "-",
                ", ".join(d["operators"]) or "-",
                f"{d['wait_seconds']:.0f}s",
                f"{d['talk_seconds']:.0f}s",
                ",".join(d["alerts"]) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _replay_policy(args: argparse.Namespace) -> tuple[CallPolicy, object] | None:
    """The policy and tracker settings of the configuration (``--config``, ``ONECHANCE_*``), with the command
    line's ``--short-abandon`` and ``--bounce`` over every queue's rule."""
    import dataclasses

    from .config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"onechance replay: {exc}", file=sys.stderr)
        return None
    policy = CallPolicy.from_settings(settings)
    changes: dict[str, object] = {}
    if args.short_abandon is not None:
        changes["short_abandon_seconds"] = args.short_abandon
    if args.bounce is not None:
        changes["bounce_transfers"] = args.bounce
    if changes:
        def over(rule: QueueRule) -> QueueRule:
            return dataclasses.replace(rule, **changes)  # type: ignore[arg-type]

        policy = CallPolicy(over(policy.default), {q: over(r) for q, r in policy.queues.items()})
    return policy, settings.tracker_settings()


def cmd_replay(args: argparse.Namespace) -> int:
    found = _replay_policy(args)
    if found is None:
        return 2
    policy, tracker_settings = found
    try:
        result = replay_files(args.files, policy, tracker_settings, pbx=args.pbx)  # type: ignore[arg-type]
    except ReplayError as exc:
        print(f"onechance replay: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout
    if args.json:
        for j in result.journeys:
            out.write(json.dumps(j.to_json(), ensure_ascii=False) + "\n")
    else:
        out.write(_table(result.journeys) + "\n")
        out.write(
            f"\n{len(result.journeys)} calls, {result.events} AMI messages, "
            f"{result.bad_messages} malformed, from {len(result.files)} file(s)\n"
        )
    if result.events and not result.timed_events:
        print("onechance replay: warning: no event carries a Timestamp (Asterisk's manager.conf has "
              "timestampevents = no): waits and talk times cannot be known from this capture", file=sys.stderr)
    if result.tracker_errors:
        print(f"onechance replay: {result.tracker_errors} event(s) could not be applied; last: "
              f"{result.last_error}", file=sys.stderr)
    out.flush()
    if getattr(args, "store", False):
        from .store.commands import store_replayed  # imported on use (slow imports)

        return store_replayed(result.journeys, args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onechance",
        description="Follows every Asterisk queue call over AMI and makes lost callers visible at once.",
    )
    parser.add_argument("--version", action="version", version=f"onechance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("replay", help="replay AMI capture files and print the call journeys")
    p.add_argument("files", nargs="+", metavar="FILE", help="raw AMI stream(s), as recorded from port 5038")
    p.add_argument("--json", action="store_true", help="one JSON object per call, one per line")
    p.add_argument("--short-abandon", type=float, default=None, metavar="SECONDS",
                   help="abandons shorter than this are short abandons, in every queue (default: the "
                        "configuration's [journey] and [queues.*] rules, 5 s unless set)")
    p.add_argument("--bounce", type=int, default=None, metavar="N",
                   help="a call is bounced at its N-th transfer, in every queue (default: the configuration's, "
                        "2 unless set)")
    p.add_argument("--config", metavar="FILE",
                   help="TOML settings file (default: $ONECHANCE_CONFIG): its [journey] and [queues.*] rules "
                        "judge the calls, as in the daemon")
    p.add_argument("--pbx", default="", help="PBX name to stamp on the journeys")
    p.add_argument("--store", action="store_true",
                   help="also write the journeys into the configured database (ONECHANCE_DATABASE__URL)")
    p.set_defaults(func=cmd_replay)

    _add_daemon_commands(sub)
    _add_store_commands(sub)
    return parser


# ---- daemon commands (run, check-config) -------------------------------------------------------------
def _add_daemon_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``onechance run`` and ``onechance check-config``."""

    def load(args: argparse.Namespace, command: str):  # type: ignore[no-untyped-def]
        import os

        from .config import CONFIG_ENV, ConfigError, config_file_warnings, load_settings, unknown_environment

        for warning in unknown_environment():
            print(f"onechance {command}: warning: {warning}", file=sys.stderr)
        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            print(f"onechance {command}: {exc}", file=sys.stderr)
            return None
        for warning in config_file_warnings(args.config or os.environ.get(CONFIG_ENV)):
            print(f"onechance {command}: warning: {warning}", file=sys.stderr)
        return settings

    def cmd_check_config(args: argparse.Namespace) -> int:
        from .config import ConfigError
        from .redact import redact, secret_values

        settings = load(args, "check-config")
        if settings is None:
            return 2
        try:
            out = settings.masked()
        except ConfigError as exc:  # e.g. database.password_file cannot be read
            print(f"onechance check-config: {exc}", file=sys.stderr)
            return 2
        try:
            out["followed_pbxs"] = [p.name for p in settings.followed_pbxs()]
        except ConfigError as exc:
            if settings.pbx or settings.ami.host:  # a PBX without its secret
                print(f"onechance check-config: {exc}", file=sys.stderr)
                return 2
            out["followed_pbxs"] = []
            out["note"] = str(exc)
        # masked field by field above; and whatever else might carry a secret, replaced all the same
        print(redact(json.dumps(out, indent=2, ensure_ascii=False), secret_values(settings)))
        return 0

    def serve(settings: Any, command: str, demo: bool) -> int:
        import logging

        from .compose import run_daemon
        from .config import ConfigError
        from .redact import install
        from .store import StoreConfigError

        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        logging.basicConfig(level=settings.log_level, stream=sys.stderr, format=fmt)
        install(settings, fmt)  # every configured secret replaced by *** in every line, tracebacks included
        # quiet unless something is wrong (apprise and urllib3 print request URLs, tokens included, at DEBUG)
        for noisy in ("alembic", "aiosqlite", "asyncio", "aiohttp.access", "apprise", "urllib3"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
        try:
            return run_daemon(settings, demo=demo)
        except (ConfigError, StoreConfigError) as exc:
            print(f"onechance {command}: {exc}", file=sys.stderr)
            return 2

    def cmd_run(args: argparse.Namespace) -> int:
        from .config import ConfigError

        settings = load(args, "run")
        if settings is None:
            return 2
        try:
            settings.followed_pbxs()
        except ConfigError as exc:
            print(f"onechance run: {exc}", file=sys.stderr)
            return 2
        return serve(settings, "run", demo=False)

    def cmd_demo(args: argparse.Namespace) -> int:
        from pathlib import Path

        settings = load(args, "demo")
        if settings is None:
            return 2
        demo = settings.demo.model_copy(update={k: v for k, v in (("speed", args.speed), ("seed", args.seed))
                                                if v is not None})
        data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir / "demo"
        return serve(settings.model_copy(update={"demo": demo, "data_dir": data_dir}), "demo", demo=True)

    help_config = "TOML settings file (default: $ONECHANCE_CONFIG); ONECHANCE_* variables override it"
    p = sub.add_parser("run", help="follow the PBX(s) over AMI and serve /metrics, the API and /callbacks",
                       description="Run the daemon against the Asterisk of ami.host (ONECHANCE_AMI__HOST) or of the "
                                   "[[pbx]] tables; without one it refuses to start (exit 2): `onechance demo` runs "
                                   "without an Asterisk.")
    p.add_argument("--config", metavar="FILE", help=help_config)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("demo", help="run the daemon on a simulated call centre: nothing else needed",
                       description="The daemon, following an embedded simulated Asterisk (endless, realistic "
                                   "traffic), with a data directory of its own (<data_dir>/demo) and a local receiver "
                                   "that logs the alerts.  Open the URLs it prints.")
    p.add_argument("--config", metavar="FILE", help=help_config)
    p.add_argument("--speed", type=float, default=None, help="simulated time per real second (default: demo.speed)")
    p.add_argument("--seed", type=int, default=None, help="the simulation's seed (default: demo.seed)")
    p.add_argument("--data-dir", default=None, help="where the demo keeps its database (default: <data_dir>/demo)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("check-config", help="validate the settings and print them, secrets masked")
    p.add_argument("--config", metavar="FILE", help=help_config)
    p.set_defaults(func=cmd_check_config)


# ---- store commands (db, report) -----------------------------------------------------------------------
def _cmd_db(args: argparse.Namespace) -> int:
    from .store.commands import cmd_db  # imported on use: SQLAlchemy and Alembic are slow to import

    return cmd_db(args)


def _cmd_db_partition(args: argparse.Namespace) -> int:
    from .store.partition import cmd_db_partition

    return cmd_db_partition(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from .store.commands import cmd_report

    return cmd_report(args)


def _cmd_import_queue_log(args: argparse.Namespace) -> int:
    from .store.queue_log import cmd_import_queue_log

    return cmd_import_queue_log(args)


def _add_store_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``onechance db ...`` and ``onechance report`` (handlers in ``onechance.store.commands``)."""
    config_help = ("TOML settings file (default: $ONECHANCE_CONFIG); the database URL is [database] url "
                   "or ONECHANCE_DATABASE__URL")
    db = sub.add_parser("db", help="manage the database schema (upgrade, downgrade, current, partition)")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_sub.add_parser("upgrade", help="create the tables or upgrade them to the newest revision")
    up.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    down = db_sub.add_parser("downgrade", help="downgrade the schema to REV ('base' drops every table)")
    down.add_argument("revision", metavar="REV")
    cur = db_sub.add_parser("current", help="print the revision the database is at")
    for p in (up, down, cur):
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
        p.set_defaults(func=_cmd_db)
    part = db_sub.add_parser("partition", help="PostgreSQL: keep the journey tables in one partition per month "
                                               "(converts them once; run again monthly to add the months ahead)",
                             description="Partition calls, queue_visits, operator_legs and transfers by month of the "
                                         "call id (Asterisk's Linkedid epoch), or add the missing months; "
                                         "docs/database.md, 'Partitioning by month'.")
    part.add_argument("--ahead", type=int, default=3, metavar="N",
                      help="create the months up to N months after the present (default 3)")
    part.add_argument("--from", dest="first", metavar="YYYY-MM",
                      help="first month to have (default: the oldest call's month, or the first month there is)")
    part.add_argument("--until", dest="last", metavar="YYYY-MM",
                      help="last month to have (default: the present month plus --ahead)")
    part.add_argument("--sql", action="store_true", help="print the SQL (one transaction, for psql) and change nothing")
    part.add_argument("--lock-timeout", type=float, default=30.0, metavar="SECONDS",
                      help="give up when the tables cannot be locked within this (default 30)")
    part.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
    part.set_defaults(func=_cmd_db_partition)

    rp = sub.add_parser("report", help="queue figures per hour, day, week or month: offered, answered, lost, "
                                       "recovered, service level... (and per operator)",
                        description="Queue figures per period from the journey store, with totals; "
                                    "docs/reports.md defines every figure.")
    rp.add_argument("--from", dest="date_from", metavar="DAY",
                    help="first day, YYYY-MM-DD (or a date-time YYYY-MM-DDTHH:MM); default: today")
    rp.add_argument("--to", dest="date_to", metavar="DAY",
                    help="last day, included (default: the day of --from)")
    rp.add_argument("--by", default="day", metavar="PERIOD",
                    help="hour, day (default), week (ISO weeks, from Monday) or month, in the report's time zone")
    rp.add_argument("--queue", help="only this queue")
    rp.add_argument("--pbx", help="only this PBX (by default every PBX, one row per PBX when there are several)")
    rp.add_argument("--operators", action="store_true",
                    help="add per-operator figures: calls answered, talk time, AHT, transfers, bounced calls "
                         "passed on")
    rp.add_argument("--format", default="table", metavar="FORMAT",
                    help="table (default), csv, json, or html (a self-contained page with charts)")
    rp.add_argument("--output", metavar="FILE", help="write the report to FILE instead of the standard output")
    rp.add_argument("--tz", default=None, metavar="ZONE",
                    help="time zone of the periods, e.g. Europe/Tallinn (default: [report] timezone in the "
                         "configuration, else the machine's own zone)")
    rp.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
    rp.set_defaults(func=_cmd_report)

    ip = sub.add_parser("import-queue-log", help="fill the database with past calls from Asterisk's queue_log",
                        description="Import calls from queue_log files (plain or .gz) or a realtime queue_log table "
                                    "(docs/import.md).  Idempotent; never overwrites a call recorded live.")
    ip.add_argument("files", nargs="*", metavar="FILE", help="queue_log file(s), e.g. /var/log/asterisk/queue_log*")
    ip.add_argument("--from-db", metavar="URL", help="read a realtime queue_log table from this database instead "
                                                     "(sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB)")
    ip.add_argument("--table", default="queue_log", help="the realtime table's name (default: queue_log)")
    ip.add_argument("--db-tz", metavar="ZONE", help="time zone of the table's times (default: this machine's local "
                                                    "time, as Asterisk writes them)")
    ip.add_argument("--pbx", help="PBX name of the imported calls (default: the configured one)")
    ip.add_argument("--dry-run", action="store_true", help="read and count, write nothing")
    ip.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
    ip.set_defaults(func=_cmd_import_queue_log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
