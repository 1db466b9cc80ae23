"""AMI framing and parsing on bytes.

The Asterisk Manager Interface sends ``Key: Value`` lines ended by CRLF; a blank line ends a message.
:class:`AmiFramer` takes raw bytes exactly as read from a socket or a capture file, in chunks of any
size, and yields :class:`AmiMessage` objects.  It never decodes a partial message, so a multi-byte
UTF-8 character split across TCP reads is decoded whole (panoramisk 1.4 drops it).

Speed: most of what Asterisk sends is of no use to onechance (``VarSet`` of dialplan variables, ``Newexten`` of
every dialplan step, events no part of the daemon reads).  Given an :class:`EventFilter` (what the tracker and
the pipeline read, see :meth:`~onechance.journey.tracker.JourneyTracker.interest`), the framer recognises those
messages on the raw bytes (the ``Event:`` line, and for ``VarSet``/``Newexten`` one more header) and only counts
them (:attr:`AmiFramer.skipped`): no decoding, no dict.  Never skipped: anything carrying an ``ActionID`` or a
``Response`` (answers to actions and their list items), ``Shutdown``, ``FullyBooted``, the resync lists' items;
nor a block the raw bytes might read otherwise than the careful parse below (an event name that is not letters
and digits, a ``VarSet``/``Newexten`` with a bare CR or LF or a control character): skipping never loses an
event the line-by-line reading would give the tracker.
The messages that are built go through one C-level split of their lines; any line the fast path cannot take as
``Key: Value`` (no ``": "``, repeated keys, a colon in a key, control characters, a bare CR or LF) sends the
message through the careful line-by-line path, which gives the same result as before for every well-formed
message.

Robustness rules:

* a line without a colon is skipped (the ``Asterisk Call Manager/x.y`` banner is recognised and kept);
* empty values (``Key: ``, ``Key:``) and repeated keys (``ChanVariable``, ``Variable``, ``Output``) are kept:
  ``headers`` holds the first value, ``repeated`` every value;
* a bare CR or LF inside a message ends a line (as CRLF does);
* control characters (NUL, C0 and C1 controls, DEL) are removed from keys and values, a tab becomes a space:
  nothing that reaches a record, the JSON API or the database carries one;
* a ``Timestamp`` that is not a finite number (``nan``, ``inf``, garbage), or not epoch seconds between 0 and
  :data:`MAX_TIMESTAMP` (``1e308``, ``-1``), is removed from the message (:attr:`AmiMessage.ts` is None, as for an
  event without one);
* a block that carries neither ``Event`` nor ``Response`` is malformed: it is counted and skipped,
  and the messages around it are unaffected;
* a message that grows past ``max_message_bytes`` without a terminator is discarded (counted) and the
  framer resynchronises on the next blank line, so a broken peer cannot make memory grow without bound;
* a timestamped message repeated byte for byte among the last :data:`RECENT_MESSAGES` built ones is a
  duplicate (Asterisk stamps every event to the microsecond: two real events never look alike): it is counted in
  :attr:`AmiFramer.duplicates` and dropped, so a repeated ``AgentConnect`` never doubles an operator;
* invalid UTF-8 is replaced, never raised.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat

__all__ = ["ALWAYS_KEPT", "BANNER_PREFIX", "AmiFramer", "AmiMessage", "EventFilter", "block_timestamp", "parse_block"]

TERMINATOR = b"\r\n\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: a ``Timestamp`` is epoch seconds below this (the year 5138): any other value (``1e308``, negative) is no time
#: a PBX could send, and two such values would make differences no JSON can carry (``inf``)
MAX_TIMESTAMP = 1e11
#: timestamped messages remembered to drop an exact repetition (a PBX or proxy sending an event twice)
RECENT_MESSAGES = 512

#: events never skipped, whatever the filter: the link's own (Asterisk stops, login complete) and the items of
#: the resync lists (``CoreShowChannels``, ``QueueStatus``; any ``...Complete`` too)
ALWAYS_KEPT = frozenset({"Shutdown", "FullyBooted", "CoreShowChannel", "QueueParams", "QueueMember", "QueueEntry",
                         "OriginateResponse"})

_split = str.split
_new_message = object.__new__
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: the bytes that read the same on the raw bytes and line by line: all but the C0 controls (a tab aside), DEL and
#: 0xC2 (the first byte of a C1 control in UTF-8); ``block.translate(None, _PLAIN_BYTES)`` leaves the others
_PLAIN_BYTES = bytes(b for b in range(256) if b == 0x09 or (0x20 <= b != 0x7F and b != 0xC2))
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _timestamp(headers: dict[str, str], repeated: dict[str, list[str]] | None) -> float | None:
    """The ``Timestamp`` header as epoch seconds; a value that is not one is removed from the message."""
    text = headers.get("Timestamp")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if 0.0 <= value < MAX_TIMESTAMP:  # not NaN, not an infinity, nor a time no PBX could send
        return value
    del headers["Timestamp"]
    if repeated is not None:
        repeated.pop("Timestamp", None)
    return None


class AmiMessage:
    """One AMI message: an event, a response or a list item.

    ``headers`` maps each key to its first value; ``repeated`` holds every value of keys that appear
    more than once (in order).  Keys keep Asterisk's spelling (``Uniqueid``, ``Linkedid``).  ``ts`` is the
    ``Timestamp`` header as epoch seconds (None when absent or not a time: such a value is removed).
    """

    __slots__ = ("before", "headers", "repeated", "ts")

    def __init__(self, headers: dict[str, str], repeated: dict[str, list[str]] | None = None) -> None:
        self.headers = headers
        self.repeated = repeated
        self.ts = _timestamp(headers, repeated) if "Timestamp" in headers else None
        #: the raw bytes of the last message the framer skipped since the one before this (None: none): time
        #: passed on the PBX between the two, for whoever needs to know it (see block_timestamp)
        self.before: bytes | None = None

    @property
    def event(self) -> str | None:
        return self.headers.get("Event")

    @property
    def response(self) -> str | None:
        return self.headers.get("Response")

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.headers.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.headers[key]

    def __contains__(self, key: object) -> bool:
        return key in self.headers

    def getall(self, key: str) -> list[str]:
        """Every value of ``key`` in order (one element for a plain header, none when absent)."""
        if self.repeated and key in self.repeated:
            return list(self.repeated[key])
        value = self.headers.get(key)
        return [] if value is None else [value]

    def __repr__(self) -> str:
        kind = self.event or self.response
        return f"AmiMessage({kind!r}, {len(self.headers)} headers)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AmiMessage):
            return NotImplemented
        return self.headers == other.headers and (self.repeated or None) == (other.repeated or None)

    __hash__ = None  # type: ignore[assignment]

    def to_bytes(self) -> bytes:
        """Serialise back to the wire format (used by test servers and tools)."""
        lines = []
        for key, value in self.headers.items():
            values = self.repeated.get(key) if self.repeated else None
            for v in values or (value,):
                lines.append(f"{key}: {v}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def block_timestamp(block: bytes) -> float | None:
    """The ``Timestamp`` of a raw message block, as epoch seconds (None when it has none, or not one)."""
    i = block.find(b"\r\nTimestamp:")
    if i < 0:
        return None
    i += 12  # the value, after the colon (float() takes the space after it, or none: ``Timestamp:1.5``)
    j = block.find(b"\r\n", i)
    try:
        value = float(block[i:j] if j >= 0 else block[i:])
    except ValueError:
        return None
    return value if 0.0 <= value < MAX_TIMESTAMP else None


def _clean(text: str) -> str:
    if "\t" in text:
        text = text.replace("\t", " ")
    return _CONTROL.sub("", text)


def _parse_careful(text: str) -> tuple[AmiMessage | None, str | None, int]:
    """Line by line: any line ending, control characters, lines without a colon, repeated keys."""
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] | None = None
    banner = None
    bad_lines = 0
    for line in _LINE_BREAK.split(text):
        key, sep, value = line.partition(":")
        if not sep:
            if line.startswith(BANNER_PREFIX):
                banner = _clean(line)
            elif line:
                bad_lines += 1
            continue
        if value[:1] == " ":
            value = value[1:]
        if not key.isprintable():
            key = _clean(key)
        if not value.isprintable():
            value = _clean(value)
        if key in headers:
            if repeated is None:
                repeated = {}
            bucket = repeated.get(key)
            if bucket is None:
                repeated[key] = [headers[key], value]
            else:
                bucket.append(value)
        else:
            headers[key] = value
    if "Event" not in headers and "Response" not in headers:
        return None, banner, bad_lines
    return AmiMessage(headers, repeated), banner, bad_lines


def parse_block(text: str) -> tuple[AmiMessage | None, str | None, int]:
    """Parse one message block (without its terminator).

    Returns ``(message or None, banner or None, number of lines without a colon)``.
    """
    # The fast path, all in C: each line split once on ": ".  Exact: a line without ": " raises, a repeated
    # key shows in the count, a colon before the ": " in a key, a control character or a bare CR or LF
    # anywhere send the block the careful way (which gives the same for everything the fast path takes).
    lines = text.split("\r\n")
    try:
        headers = dict(map(_split, lines, repeat(": "), repeat(1)))
    except ValueError:
        return _parse_careful(text)
    if (len(headers) != len(lines) or not ("Event" in headers or "Response" in headers)
            or not "".join(lines).isprintable() or ":" in "".join(headers)):
        return _parse_careful(text)
    return AmiMessage(headers), None, 0


class EventFilter:
    """The events worth building into messages: every other one is only counted (see the module's doc).

    ``events``: names always built.  ``conditions``: names built only when one header has one of some values
    (``{"VarSet": ("Variable", {"QUEUESTATUS"})}``).  :data:`ALWAYS_KEPT` and ``...Complete`` events are always
    built, and so is anything with an ``ActionID``."""

    __slots__ = ("conditions", "events")

    def __init__(self, events: Iterable[str], conditions: Mapping[str, tuple[str, Iterable[str]]] | None = None
                 ) -> None:
        conditions = dict(conditions or {})
        self.events = frozenset(e.encode() for e in (*events, *ALWAYS_KEPT) if e not in conditions)
        self.conditions = {name.encode(): (f"\r\n{field}:".encode(), frozenset(v.encode() for v in values))
                           for name, (field, values) in conditions.items()}

    def names(self) -> frozenset[str]:
        """Every event name that may be built (conditionally or not)."""
        return frozenset(n.decode() for n in (*self.events, *self.conditions))

    def wanted(self, block: bytes) -> bool:
        """Build this block into a message?  (What :meth:`AmiFramer.iter_feed` decides, inline, for each block.)"""
        framer = AmiFramer(event_filter=self)
        list(framer.iter_feed(block + TERMINATOR))
        return framer.skipped == 0


class AmiFramer:
    """Incremental AMI framer: ``feed(bytes)`` returns the complete messages found so far.

    ``messages`` counts every well-formed message, built or ``skipped`` (by the :class:`EventFilter`)."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 event_filter: EventFilter | None = None) -> None:
        self._buf = b""
        self._discarding = False
        self.max_message_bytes = max_message_bytes
        self.event_filter = event_filter
        self.banner: str | None = None
        self.messages = 0
        self.skipped = 0
        self.duplicates = 0
        self.bad_messages = 0
        self.bad_lines = 0
        self._recent: set[bytes] = set()
        self._recent_order: deque[bytes] = deque()
        self._skipped_last: bytes | None = None  # the last block skipped since the last message built

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished message kept for the next read."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[AmiMessage]:
        return list(self.iter_feed(data))

    def iter_feed(self, data: bytes) -> Iterator[AmiMessage]:
        if not data:
            return
        buf = self._buf + data if self._buf else data
        if self._discarding:
            end = buf.find(TERMINATOR)
            if end < 0:
                # keep the last 3 bytes: a terminator may straddle two reads
                self._buf = buf[-3:]
                return
            buf = buf[end + 4 :]
            self._discarding = False
        blocks = buf.split(TERMINATOR)
        rest = blocks.pop()
        if len(rest) > self.max_message_bytes:
            self.bad_messages += 1
            self._discarding = True
            self._buf = rest[-3:]
        else:
            self._buf = rest
        flt = self.event_filter
        events, conditions = (flt.events, flt.conditions) if flt is not None else (None, None)
        sep, one = repeat(": "), repeat(1)
        new = _new_message
        last = self._skipped_last
        try:
            for block in blocks:
                if events is not None and conditions is not None and block[:7] == b"Event: ":
                    # the event name on the raw bytes: build only what someone reads
                    end = block.find(b"\r\n", 7)
                    name = block[7:end] if end >= 0 else block[7:]
                    if name not in events:
                        condition = conditions.get(name)
                        if condition is not None:
                            field, values = condition
                            i = block.find(field)
                            if i < 0:
                                value = None
                            else:
                                i += len(field)
                                j = block.find(b"\r\n", i)
                                value = block[i:j] if j >= 0 else block[i:]
                                if value[:1] == b" ":
                                    value = value[1:]
                            # a block with a bare CR or LF or a control character may read otherwise line by
                            # line (a value ended early, a field after a bare LF): the careful parse decides
                            if (value not in values and b"\r\nActionID:" not in block
                                    and not block.translate(None, _PLAIN_BYTES).replace(b"\r\n", b"")):
                                self.messages += 1
                                self.skipped += 1
                                last = block
                                continue
                        elif name.isalnum() and not name.endswith(b"Complete") and b"\r\nActionID:" not in block:
                            self.messages += 1
                            self.skipped += 1
                            last = block
                            continue
                # parse_block's fast path, inline (the hot loop of the whole daemon)
                text = block.decode("utf-8", "replace")
                lines = text.split("\r\n")
                try:
                    headers: dict[str, str] | None = dict(map(_split, lines, sep, one))
                except ValueError:
                    headers = None
                if (headers is None or len(headers) != len(lines)
                        or not ("Event" in headers or "Response" in headers)
                        or not "".join(lines).isprintable() or ":" in "".join(headers)):
                    msg = self._parse(block, text)
                    if msg is None:
                        continue
                else:
                    self.messages += 1
                    msg = new(AmiMessage)
                    msg.headers = headers
                    msg.repeated = None
                    msg.before = None
                    msg.ts = _timestamp(headers, None) if "Timestamp" in headers else None
                if msg.ts is not None and not self._fresh(block):
                    continue
                if last is not None:
                    msg.before = last
                    last = None
                yield msg
        finally:
            self._skipped_last = last

    def _fresh(self, block: bytes) -> bool:
        """Not a repetition of a recent timestamped message (remembered from now on)."""
        recent = self._recent
        if block in recent:
            self.duplicates += 1
            return False
        recent.add(block)
        order = self._recent_order
        order.append(block)
        if len(order) > RECENT_MESSAGES:
            recent.discard(order.popleft())
        return True

    def _parse(self, block: bytes, text: str) -> AmiMessage | None:
        msg, banner, bad_lines = parse_block(text)
        if msg is None:
            if not block.strip():
                return None
            if banner is not None:
                self.banner = banner
            self.bad_lines += bad_lines
            if banner is None or text.strip() != banner:
                self.bad_messages += 1
            return None
        if banner is not None:
            self.banner = banner
        self.bad_lines += bad_lines
        self.messages += 1
        return msg

    def finish(self) -> bool:
        """Call at end of input: True when no partial message was left (a clean end of stream)."""
        clean = not self._buf.strip() and not self._discarding
        if not clean and self._buf.strip():
            self.bad_messages += 1
        self._buf = b""
        self._discarding = False
        return clean
