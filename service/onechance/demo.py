"""An embedded demo PBX: a fake Asterisk manager interface that plays a recorded AMI capture, or the
simulated call centre of :mod:`onechance.sim`, over TCP.

``onechance run`` starts it when no Asterisk is configured and connects to it exactly as to a real one;
the tests use it as their fake Asterisk.  It behaves like Asterisk 22 where the daemon cares:

* the ``Asterisk Call Manager/11.0.0`` banner, then ``Login`` (accepted, or refused after a delay with
  ``Authentication failed`` and the socket closed), ``Ping`` (``Ping: Pong`` and the PBX clock in
  ``Timestamp``), ``Logoff`` (``Goodbye`` and close), ``Permission denied`` before login, ``Invalid/unknown
  command`` otherwise;
* ``CoreShowChannels`` and ``QueueStatus`` answered like Asterisk (``Response: Success`` + ``EventList:
  start``, the items with the ActionID echoed, then ``...Complete`` with ``ListItems``) from a live model
  of the PBX (:class:`PbxState`) that follows the capture up to the current position, so a client that
  reconnects in the middle of the capture sees the calls that are live at that point;
* the capture itself is streamed after login, as recorded (stale responses to the recording tool's own
  actions, e.g. ``ActionID: drv-1``, included), paced by its ``Timestamp`` headers divided by ``speed``
  (0: as fast as possible), optionally in random 1-64 byte writes.

While nobody is logged in the stream waits (a real PBX would go on; the tests inject explicit gaps
instead, see :class:`Cut` and :class:`Silence`).  With ``loop=True`` the capture is played again and again,
every pass with times moved to the present and Uniqueids/Linkedids moved by the same whole seconds, so
each pass is a fresh set of calls.

Where the messages come from is a :class:`MessageSource`: :class:`CaptureSource` (a capture, the default)
or :class:`SimSource` (the simulator: endless, or ``calls`` calls per pass), both paced the same way.  A
source may know the PBX's queues up front (the simulator does): ``QueueStatus`` then lists every queue
(``QueueParams`` with its strategy and length limit) and its members from the start, as Asterisk does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .ami.parser import BANNER_PREFIX, TERMINATOR, AmiMessage, parse_block

if TYPE_CHECKING:
    from .sim import Centre, SimConfig

__all__ = ["CAPTURE", "CaptureSource", "Cut", "DemoPbx", "Hold", "MessageSource", "PbxState", "QueueInfo",
           "Recorded", "Restart", "Silence", "SimSource", "load_capture"]

log = logging.getLogger(__name__)

CAPTURE = Path(__file__).parent / "data" / "demo.ami"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
CHANNEL_FIELDS = ("Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
                  "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context", "Exten",
                  "Priority", "Uniqueid", "Linkedid")
CHANNEL_PREFIXES = ("", "Dest", "Transferer", "Transferee", "TransferTarget", "OrigTransferer",
                    "SecondTransferer", "LocalOne", "LocalTwo", "Source")
MEMBER_FIELDS = ("StateInterface", "Membership", "Penalty", "CallsTaken", "LastCall", "LastPause", "LoginTime",
                 "InCall", "Status", "Paused", "PausedReason", "Wrapuptime")
_ID_RE = re.compile(rb"(?im)^([a-z]*(?:uniqueid|linkedid)): (\d{9,11})\.(\d+)(\r?)$")
_TS_RE = re.compile(rb"(?m)^Timestamp: (\d+(?:\.\d+)?)(\r?)$")


@dataclass(slots=True)
class Recorded:
    """One message of a capture: its bytes (without the blank line), parsed headers and timestamp."""

    raw: bytes
    msg: AmiMessage
    ts: float | None


def load_capture(data: bytes) -> list[Recorded]:
    """Split a raw capture (banner included or not) into its messages."""
    if data.startswith(BANNER_PREFIX.encode()):
        data = data.partition(b"\r\n")[2]
    out = []
    for block in data.split(TERMINATOR):
        if not block.strip():
            continue
        msg, _banner, _bad = parse_block(block.decode("utf-8", "replace"))
        if msg is None:
            continue
        ts_text = msg.headers.get("Timestamp")
        try:
            ts = float(ts_text) if ts_text else None
        except ValueError:
            ts = None
        out.append(Recorded(block, msg, ts))
    return out


def shift_times(rec: Recorded, seconds: int) -> Recorded:
    """The same message ``seconds`` later: Timestamp and every Uniqueid/Linkedid moved together."""
    if not seconds:
        return rec
    raw = _TS_RE.sub(lambda m: b"Timestamp: %.6f%s" % (float(m.group(1)) + seconds, m.group(2)), rec.raw)
    raw = _ID_RE.sub(lambda m: b"%s: %d.%s%s" % (m.group(1), int(m.group(2)) + seconds, m.group(3), m.group(4)),
                     raw)
    msg, _b, _n = parse_block(raw.decode("utf-8", "replace"))
    assert msg is not None
    return Recorded(raw, msg, rec.ts + seconds if rec.ts is not None else None)


def _recorded(block: bytes) -> Recorded:
    """One message (bytes without the blank line) as a :class:`Recorded`."""
    msg, _banner, _bad = parse_block(block.decode("utf-8", "replace"))
    assert msg is not None
    ts_text = msg.headers.get("Timestamp")
    try:
        ts = float(ts_text) if ts_text else None
    except ValueError:
        ts = None
    return Recorded(block, msg, ts)


# ---- where the messages come from ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue the PBX has from the start (queues.conf): ``QueueStatus`` lists it before any event names it.
    ``members``: (interface, member name, state interface) of its static members."""

    name: str
    strategy: str = "ringall"
    maxlen: int = 0
    members: tuple[tuple[str, str, str], ...] = ()
    login_time: int = 0


class MessageSource:
    """The messages a :class:`DemoPbx` plays, pass by pass.  The player asks for them in order
    (``get(i)``, the same ``i`` again allowed); ``None`` ends the pass."""

    def get(self, i: int) -> Recorded | None:
        raise NotImplementedError

    def next_pass(self) -> None:
        """Start the next pass (``loop=True``), with fresh ids and times after the last pass's."""
        raise NotImplementedError

    def start_at_present(self, earlier: float = 0.0) -> None:
        """Move the times (and ids) to the present (``earlier`` seconds before it: see
        :meth:`DemoPbx.warm_up`); call before the first message."""

    def queues(self) -> list[QueueInfo]:
        """The queues known up front (none for a capture: they are learnt from its events)."""
        return []


class CaptureSource(MessageSource):
    """A recorded capture (see :func:`load_capture`); each pass after the first is moved to the present."""

    def __init__(self, recorded: list[Recorded]) -> None:
        self.recorded = recorded
        self.shift = 0

    def get(self, i: int) -> Recorded | None:
        if i >= len(self.recorded):
            return None
        return shift_times(self.recorded[i], self.shift)

    def _span(self) -> tuple[float, float] | None:
        stamps = [r.ts for r in self.recorded if r.ts is not None]
        return (stamps[0], max(stamps)) if stamps else None

    def next_pass(self) -> None:
        span = self._span()
        if span is not None:
            first, last = span
            self.shift = max(int(time.time() - first), self.shift + int(last - first) + 2)

    def start_at_present(self, earlier: float = 0.0) -> None:
        span = self._span()
        if span is not None:
            self.shift = int(time.time() - earlier - span[0])


class SimSource(MessageSource):
    """The simulated call centre of ``config`` (:class:`onechance.sim.SimConfig`): endless, or ``calls``
    calls per pass (each later pass with the next seed, starting 2 s after the last one ended).
    ``keep_truths`` keeps every call's truth in ``centre.truths`` (for tests; it grows without bound)."""

    def __init__(self, config: SimConfig, *, calls: int | None = None, keep_truths: bool = False) -> None:
        from .sim import Centre

        self._centre_cls = Centre
        self.config = config.validate()
        self.calls = calls
        self.keep_truths = keep_truths
        self.centre: Centre | None = None
        self.passes = 0
        self._it: Iterator[bytes] | None = None
        self._i = -1
        self._cur: Recorded | None = None

    def _begin(self) -> Centre:
        centre = self._centre_cls(self.config, keep_truths=self.keep_truths)
        if self.calls is not None:
            centre.max_calls = self.calls
        self.centre = centre
        self._it = centre.messages()
        return centre

    def get(self, i: int) -> Recorded | None:
        if i == self._i:
            return self._cur
        if i != self._i + 1:
            raise ValueError(f"the simulator plays its messages in order: asked for {i} after {self._i}")
        if self._it is None:
            self._begin()
        assert self._it is not None
        raw = next(self._it, None)
        self._i = i
        self._cur = None if raw is None else _recorded(raw[: -len(TERMINATOR)])
        return self._cur

    def next_pass(self) -> None:
        assert self.centre is not None
        end = int(self.centre.pbx.now) + 2
        self.passes += 1
        self.config = dataclasses.replace(self.config, seed=self.config.seed + 1, start=float(end))
        self._i = -1
        self._cur = None
        self._begin()

    def start_at_present(self, earlier: float = 0.0) -> None:
        if self.centre is not None:
            raise RuntimeError("start_at_present() must come before the first message")
        self.config = dataclasses.replace(self.config, start=float(int(time.time() - earlier)))

    def queues(self) -> list[QueueInfo]:
        cfg = self.config
        names = {op.ext: op.name for op in cfg.operators}
        login = int(cfg.start - cfg.uptime)
        out = []
        for q in cfg.queues:
            members = tuple((f"Local/{ext}@agents/n", names[ext],
                             f"PJSIP/{ext}" if cfg.style == "sip" else f"Local/{ext}@agents/n") for ext in q.members)
            out.append(QueueInfo(q.name, q.strategy, q.maxlen, members, login))
        return out


# ---- faults the tests inject -------------------------------------------------------------------------------
@dataclass(slots=True)
class Cut:
    """Drop the TCP connection (in the middle of the next message when ``partial``); the next ``gap``
    messages happen while nobody listens and are lost."""

    gap: int = 0
    partial: bool = True


@dataclass(slots=True)
class Silence:
    """Stop sending and answering on the current connection (a half-open link) until a new client logs in;
    the next ``gap`` messages are lost."""

    gap: int = 0


@dataclass(slots=True)
class Restart:
    """Asterisk restarts: ``Shutdown`` event, socket closed, not listening for ``down_for`` seconds, then a
    fresh PBX (no channels) playing ``capture`` (the rest of the current one when None)."""

    capture: bytes | None = None
    down_for: float = 0.5


@dataclass(slots=True)
class Hold:
    """Stop streaming (the connection stays up and answers actions) until :meth:`DemoPbx.release`."""


Fault = Cut | Silence | Restart | Hold


# ---- the live model ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Chan:
    fields: dict[str, str]
    created: float
    app: str = ""
    appdata: str = ""
    bridge: str = ""


@dataclass(slots=True)
class _Entry:
    uid: str
    joined: float
    fields: dict[str, str]


@dataclass
class PbxState:
    """What is live on the PBX after the messages applied so far: channels, queue callers, members."""

    channels: dict[str, _Chan] = field(default_factory=dict)
    queues: dict[str, dict[str, _Entry]] = field(default_factory=dict)
    members: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    clock: float = 0.0
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # queue -> QueueParams known up front
    max_dead: int = 100_000  # hung-up ids remembered (so late events do not revive them), the oldest forgotten
    _dead_order: collections.deque[str] = field(default_factory=collections.deque, repr=False)

    def reset(self) -> None:
        self.channels.clear()
        self.queues.clear()
        self.dead.clear()
        self._dead_order.clear()
        for name in self.params:
            self.queues[name] = {}

    def configure(self, queues: list[QueueInfo]) -> None:
        """The queues (and their static members) the PBX has from the start (queues.conf)."""
        for q in queues:
            self.params[q.name] = {"Max": str(q.maxlen), "Strategy": q.strategy}
            self.queues.setdefault(q.name, {})
            for interface, name, state_interface in q.members:
                self.members.setdefault((q.name, interface), {
                    "MemberName": name, "StateInterface": state_interface, "Membership": "static",
                    "Penalty": "0", "CallsTaken": "0", "LastCall": "0", "LastPause": "0",
                    "LoginTime": str(q.login_time), "InCall": "0", "Status": "1", "Paused": "0",
                    "PausedReason": "", "Wrapuptime": "0"})

    def forget_dead(self) -> None:
        self.dead.clear()
        self._dead_order.clear()

    def _bury(self, uid: str) -> None:
        if uid in self.dead:
            return
        self.dead.add(uid)
        self._dead_order.append(uid)
        if len(self._dead_order) > self.max_dead:
            self.dead.discard(self._dead_order.popleft())

    def apply(self, msg: AmiMessage) -> None:
        h = msg.headers
        ev = h.get("Event")
        if ev is None:
            return
        ts_text = h.get("Timestamp")
        if ts_text:
            with contextlib.suppress(ValueError):
                self.clock = max(self.clock, float(ts_text))
        if ev == "Hangup":
            uid = h.get("Uniqueid") or ""
            self.channels.pop(uid, None)
            self._bury(uid)
            for entries in self.queues.values():
                entries.pop(uid, None)
            return
        for prefix in CHANNEL_PREFIXES:
            block_uid = h.get(prefix + "Uniqueid")
            if not block_uid or block_uid == "none" or block_uid in self.dead:
                continue
            ch = self.channels.get(block_uid)
            if ch is None:
                ch = self.channels[block_uid] = _Chan({}, self.clock)
            for key in CHANNEL_FIELDS:
                value = h.get(prefix + key)
                if value is not None:
                    ch.fields[key] = value
        uid = h.get("Uniqueid") or ""
        ch = self.channels.get(uid)
        queue = h.get("Queue") or ""
        if ev == "Newexten" and ch is not None:
            ch.app, ch.appdata = h.get("Application") or "", h.get("AppData") or ""
        elif ev == "BridgeEnter" and ch is not None:
            ch.bridge = h.get("BridgeUniqueid") or ""
        elif ev == "BridgeLeave" and ch is not None and ch.bridge == h.get("BridgeUniqueid"):
            ch.bridge = ""
        elif ev == "Rename" and ch is not None:
            ch.fields["Channel"] = h.get("Newname") or ch.fields.get("Channel", "")
        elif ev == "QueueCallerJoin" and ch is not None:
            self.queues.setdefault(queue, {})[uid] = _Entry(uid, self.clock, dict(h))
        elif ev == "QueueCallerLeave":
            self.queues.setdefault(queue, {}).pop(uid, None)
        elif ev in ("QueueMemberStatus", "QueueMemberAdded", "QueueMemberPause", "AgentCalled", "AgentConnect"):
            interface = h.get("Interface")
            if interface:
                member = self.members.setdefault((queue, interface), {"MemberName": interface})
                member["MemberName"] = h.get("MemberName") or member["MemberName"]
                for key in MEMBER_FIELDS:
                    if key in h:
                        member[key] = h[key]
            self.queues.setdefault(queue, {})
        elif ev == "QueueMemberRemoved":
            self.members.pop((queue, h.get("Interface") or ""), None)

    # -- list renderings, like Asterisk 22 (manager.c, app_queue.c) -----------------------------------------
    def core_show_channels(self, now: float) -> list[dict[str, str]]:
        out = []
        for ch in self.channels.values():
            item = {"Event": "CoreShowChannel"}
            item.update({k: ch.fields.get(k, "") for k in CHANNEL_FIELDS})
            secs = max(0, int(now - ch.created))
            item["Application"] = ch.app
            item["ApplicationData"] = ch.appdata
            item["Duration"] = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
            item["BridgeId"] = ch.bridge
            out.append(item)
        return out

    def queue_status(self, now: float) -> list[dict[str, str]]:
        out = []
        names = sorted(set(self.queues) | {q for q, _i in self.members})
        for name in names:
            entries = self.queues.get(name, {})
            params = self.params.get(name, {})
            out.append({"Event": "QueueParams", "Queue": name, "Max": params.get("Max", "0"),
                        "Strategy": params.get("Strategy", "ringall"),
                        "Calls": str(len(entries)), "Holdtime": "0", "TalkTime": "0", "Completed": "0",
                        "Abandoned": "0", "ServiceLevel": "0", "ServicelevelPerf": "0.0",
                        "ServicelevelPerf2": "0.0", "Weight": "0"})
            for (queue, interface), m in self.members.items():
                if queue != name:
                    continue
                item = {"Event": "QueueMember", "Queue": name, "Name": m.get("MemberName", interface),
                        "Location": interface}
                item.update({k: m.get(k, "0" if k != "StateInterface" else interface) for k in MEMBER_FIELDS})
                out.append(item)
            for pos, e in enumerate(sorted(entries.values(), key=lambda e: e.joined), 1):
                ch = self.channels.get(e.uid)
                fields = ch.fields if ch is not None else e.fields
                out.append({"Event": "QueueEntry", "Queue": name, "Position": str(pos),
                            "Channel": fields.get("Channel", ""), "Uniqueid": e.uid,
                            "CallerIDNum": fields.get("CallerIDNum", "<unknown>"),
                            "CallerIDName": fields.get("CallerIDName", "<unknown>"),
                            "ConnectedLineNum": fields.get("ConnectedLineNum", "<unknown>"),
                            "ConnectedLineName": fields.get("ConnectedLineName", "<unknown>"),
                            "Wait": str(max(0, int(now - e.joined))), "Priority": "0"})
        return out


# ---- the server --------------------------------------------------------------------------------------------
def _render(headers: dict[str, str]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode("utf-8")


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.lock = asyncio.Lock()
        self.authenticated = False
        self.silent = False
        self.closed = False

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()


class DemoPbx:
    """A fake AMI server playing ``capture`` (bytes, a path, or the bundled demo capture), or ``source``
    (a :class:`MessageSource`, e.g. ``SimSource(SimConfig.default())``) when given."""

    def __init__(
        self,
        capture: bytes | str | Path | None = None,
        *,
        source: MessageSource | None = None,
        speed: float = 1.0,
        loop: bool = False,
        username: str = "demo",
        secret: str = "demo",
        chunks: tuple[int, int] | None = None,
        seed: int = 0,
        login_fail_delay: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
    ) -> None:
        if source is None:
            data = capture if isinstance(capture, bytes) else Path(capture or CAPTURE).read_bytes()
            source = CaptureSource(load_capture(data))
        elif capture is not None:
            raise ValueError("DemoPbx plays a capture or a source, not both")
        self.source = source
        self.speed = speed
        self.loop = loop
        self.username, self.secret = username, secret
        self.chunks = chunks
        self.rng = random.Random(seed)
        self.login_fail_delay = login_fail_delay
        self.host, self.port = host, port
        self.sock = sock  # a socket already bound (the daemon's composition root knows the port before start)
        if sock is not None:
            self.port = sock.getsockname()[1]
        self.state = PbxState()
        self.plan: dict[int, Fault] = {}  # message index (in the current capture) -> fault before it
        self.refuse_logins = 0  # refuse the next N logins even with the right secret
        self.answer_pings = True
        self.ignore_actions: set[str] = set()  # action names (lower case) read but never answered
        self.deny_actions: set[str] = set()  # action names answered "Permission denied" (missing write=)
        self.position = 0
        self.passes = 0
        self.sent = 0  # messages written in full
        self.skipped = 0  # messages lost in gaps
        self.logins = 0
        self.failed_logins = 0
        self.actions: list[str] = []  # every action name received, in order (for tests)
        self.finished = asyncio.Event()  # the capture was played to its end (not looping)
        self.holding = asyncio.Event()  # a Hold fault is in effect
        self._released = asyncio.Event()
        self._client: _Conn | None = None
        self._client_ready = asyncio.Event()
        self._conns: set[_Conn] = set()
        self._server: asyncio.AbstractServer | None = None
        self._player: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._anchor: tuple[float, float] | None = None  # (wall, capture ts) for pacing

    @property
    def recorded(self) -> list[Recorded]:
        """The capture being played (a :class:`CaptureSource`'s)."""
        if not isinstance(self.source, CaptureSource):
            raise AttributeError("this demo PBX plays no capture")
        return self.source.recorded

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> int:
        self.state.configure(self.source.queues())
        await self._listen()
        self._player = asyncio.create_task(self._play(), name="demo-pbx-player")
        return self.port

    async def _listen(self) -> None:
        if self.sock is not None:
            self._server = await asyncio.start_server(self._accept, sock=self.sock)
            self.sock = None  # the server owns it now (and closes it)
        else:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns):
            conn.abort()

    async def stop(self) -> None:
        if self._player is not None:
            self._player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._player
            self._player = None
        await self._unlisten()  # aborts the connections: their handlers end by themselves
        if self._handlers:
            _done, pending = await asyncio.wait(list(self._handlers), timeout=1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    async def __aenter__(self) -> DemoPbx:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def drop_client(self) -> None:
        """Abort the logged-in client's connection now (the stream goes on with the next client)."""
        conn = self._client
        self._client = None
        self._client_ready.clear()
        if conn is not None:
            conn.abort()

    def release(self) -> None:
        """End a :class:`Hold`."""
        self._released.set()

    @property
    def client_connected(self) -> bool:
        return self._client is not None and not self._client.closed

    def now(self) -> float:
        """The PBX clock: the capture's time at the current position."""
        return self.state.clock

    # ---- writing ---------------------------------------------------------------------------------------
    def _pieces(self, data: bytes) -> Iterator[bytes]:
        if self.chunks is None:
            yield data
            return
        lo, hi = self.chunks
        i = 0
        while i < len(data):
            step = self.rng.randint(lo, hi)
            yield data[i : i + step]
            i += step

    async def _write(self, conn: _Conn, data: bytes) -> None:
        if conn.closed or conn.silent:
            return
        for piece in self._pieces(data):
            conn.writer.write(piece)
        await conn.writer.drain()

    # ---- connections -----------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = _Conn(reader, writer)
        self._conns.add(conn)
        try:
            await self._serve(conn)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # (a cancelled client task must end quietly: asyncio 3.11 logs it otherwise)
        finally:
            self._conns.discard(conn)
            self._handlers.discard(task)
            if self._client is conn:
                self._client = None
                self._client_ready.clear()
            if not conn.closed:
                conn.closed = True
                writer.close()

    async def _read_action(self, conn: _Conn) -> dict[str, str] | None:
        headers: dict[str, str] = {}
        while True:
            line = await conn.reader.readline()
            if not line:
                return None
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                if headers:
                    return headers
                continue
            key, _sep, value = text.partition(":")
            headers.setdefault(key.strip().lower(), value.strip())

    async def _serve(self, conn: _Conn) -> None:
        async with conn.lock:
            await self._write(conn, BANNER)
        while True:
            action = await self._read_action(conn)
            if action is None or conn.closed:
                return
            name = action.get("action", "").lower()
            self.actions.append(name)
            if conn.silent or name in self.ignore_actions:
                continue
            aid = action.get("actionid")
            head = {"ActionID": aid} if aid else {}
            if name == "login":
                if not await self._login(conn, action, head):
                    return
            elif name == "logoff":
                await self._send(conn, {"Response": "Goodbye", **head, "Message": "Thanks for all the fish."})
                conn.closed = True
                conn.writer.close()
                return
            elif not conn.authenticated or name in self.deny_actions:
                await self._send(conn, {"Response": "Error", **head, "Message": "Permission denied"})
            elif name == "ping":
                if self.answer_pings:
                    await self._send(conn, {"Response": "Success", **head, "Ping": "Pong",
                                            "Timestamp": f"{self.now():.6f}"})
            elif name == "coreshowchannels":
                await self._list(conn, head, "Channels will follow", "CoreShowChannelsComplete",
                                 lambda: self.state.core_show_channels(self.now()))
            elif name == "queuestatus":
                await self._list(conn, head, "Queue status will follow", "QueueStatusComplete",
                                 lambda: self.state.queue_status(self.now()))
            else:
                await self._send(conn, {"Response": "Error", **head, "Message":
                                        f"Invalid/unknown command: {action.get('action', '')}. Use Action: "
                                        "ListCommands to show available commands."})

    async def _send(self, conn: _Conn, headers: dict[str, str]) -> None:
        async with conn.lock:
            await self._write(conn, _render(headers))

    async def _list(self, conn: _Conn, head: dict[str, str], message: str, complete: str,
                    items_of: Callable[[], list[dict[str, str]]]) -> None:
        async with conn.lock:  # a list is written in one piece: no event comes between its items
            items = items_of()
            out = [_render({"Response": "Success", **head, "EventList": "start", "Message": message})]
            for item in items:
                event = item.pop("Event")
                out.append(_render({"Event": event, **head, **item}))
            out.append(_render({"Event": complete, **head, "EventList": "Complete",
                                "ListItems": str(len(items))}))
            await self._write(conn, b"".join(out))

    async def _login(self, conn: _Conn, action: dict[str, str], head: dict[str, str]) -> bool:
        ok = action.get("username") == self.username and action.get("secret") == self.secret
        if self.refuse_logins > 0:
            self.refuse_logins -= 1
            ok = False
        if not ok:
            self.failed_logins += 1
            await asyncio.sleep(self.login_fail_delay)
            await self._send(conn, {"Response": "Error", **head, "Message": "Authentication failed"})
            conn.closed = True
            conn.writer.close()
            return False
        self.logins += 1
        conn.authenticated = True
        await self._send(conn, {"Response": "Success", **head, "Message": "Authentication accepted"})
        await self._send(conn, {"Event": "FullyBooted", "Privilege": "system,all", "Uptime": "100",
                                "LastReload": "100", "Status": "Fully Booted"})
        old = self._client
        if old is not None and old is not conn:
            old.abort()
        self._client = conn
        self._client_ready.set()
        return True

    # ---- the player ------------------------------------------------------------------------------------
    def _message(self, i: int) -> Recorded | None:
        return self.source.get(i)

    async def _play(self) -> None:
        while True:
            while True:
                i = self.position
                rec = self._message(i)
                if rec is None:
                    break
                fault = self.plan.pop(i, None)
                if fault is not None:
                    await self._inject(fault)
                    continue
                while True:
                    conn = self._client
                    if conn is None or conn.closed:
                        self._anchor = None
                        await self._client_ready.wait()
                        continue
                    await self._pace(rec)
                    if self._client is conn and not conn.closed:
                        break
                async with conn.lock:
                    await self._write(conn, rec.raw + TERMINATOR)
                    self.state.apply(rec.msg)
                self.sent += 1
                self.position += 1
                if self.speed == 0 and self.sent % 8 == 0:
                    await asyncio.sleep(0)
            if not self.loop:
                self.finished.set()
                return
            self._next_pass()

    def _next_pass(self) -> None:
        self.passes += 1
        self.position = 0
        self.state.forget_dead()  # the next pass has fresh ids: keeping these would grow without bound
        self.source.next_pass()

    def start_at_present(self, earlier: float = 0.0) -> None:
        """Move the capture's (or the simulator's) times and ids to the present, or ``earlier`` seconds before
        it; call before :meth:`start`."""
        self.source.start_at_present(earlier)

    def warm_up(self, seconds: float) -> int:
        """Play the first ``seconds`` of the stream into the PBX's own state without sending anything, as if
        it had run before anyone connected (a client then finds calls in progress and callers waiting, through
        ``CoreShowChannels`` and ``QueueStatus``).  With :meth:`start_at_present` ``(earlier=seconds)`` the
        rest of the stream starts at the present.  Call before :meth:`start`; returns the messages played."""
        first: float | None = None
        played = 0
        while True:
            rec = self._message(self.position)
            if rec is None:
                break
            if rec.ts is not None:
                first = rec.ts if first is None else first
                if rec.ts >= first + seconds:
                    break
            self.state.apply(rec.msg)
            self.position += 1
            played += 1
        return played

    async def _pace(self, rec: Recorded) -> None:
        if self.speed <= 0 or rec.ts is None:
            return
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, rec.ts)
            return
        wall0, ts0 = self._anchor
        delay = (rec.ts - ts0) / self.speed - (now - wall0)
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -5.0:  # we fell behind (e.g. a slow client): do not burst to catch up
            self._anchor = (now, rec.ts)

    def _lose(self, n: int) -> None:
        for _ in range(n):
            rec = self._message(self.position)
            if rec is None:
                return
            self.state.apply(rec.msg)
            self.position += 1
            self.skipped += 1

    async def _inject(self, fault: Fault) -> None:
        conn = self._client
        if isinstance(fault, Cut):
            if conn is not None and not conn.closed:
                rec = self._message(self.position) if fault.partial else None
                if rec is not None:
                    raw = rec.raw
                    async with conn.lock:
                        await self._write(conn, raw[: max(1, len(raw) // 2)])
                conn.closed = True
                conn.writer.close()  # FIN after what was written: the client reads up to the cut
            self._client = None
            self._client_ready.clear()
            self._lose(max(fault.gap, 1 if fault.partial else 0))
        elif isinstance(fault, Silence):
            if conn is not None:
                conn.silent = True
            self._client = None
            self._client_ready.clear()
            self._lose(fault.gap)
        elif isinstance(fault, Hold):
            self._released.clear()
            self.holding.set()
            await self._released.wait()
            self.holding.clear()
            self._anchor = None
        elif isinstance(fault, Restart):
            if conn is not None and not conn.closed:
                async with conn.lock:
                    await self._write(conn, _render({
                        "Event": "Shutdown", "Privilege": "system,all", "Timestamp": f"{self.now():.6f}",
                        "Shutdown": "Cleanly", "Restart": "True"}))
            self._client = None
            self._client_ready.clear()
            await self._unlisten()
            self.state.reset()
            if fault.capture is not None:
                self.source = CaptureSource(load_capture(fault.capture))
                self.position = 0  # from now on, plan indexes refer to the new capture
            await asyncio.sleep(fault.down_for)
            await self._listen()
