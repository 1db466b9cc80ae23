"""AMI framing and parsing on bytes.

The Asterisk Manager Interface sends ``Key: Value`` lines ended by CRLF; a blank line ends a message.
:class:`AmiFramer` takes raw bytes exactly as read from a socket or a capture file, in chunks of any
size, and yields :class:`AmiMessage` objects.  It never decodes a partial message, so a multi-byte
UTF-8 character split across TCP reads is decoded whole (panoramisk 1.4 drops it).

Robustness rules:

* a line without a colon is skipped (the ``Asterisk Call Manager/x.y`` banner is recognised and kept);
* empty values (``Key: ``) and repeated keys (``ChanVariable``, ``Variable``, ``Output``) are kept;
* a block that carries neither ``Event`` nor ``Response`` is malformed: it is counted and skipped,
  and the messages around it are unaffected;
* a message that grows past ``max_message_bytes`` without a terminator is discarded (counted) and the
  framer resynchronises on the next blank line, so a broken peer cannot make memory grow without bound;
* invalid UTF-8 is replaced, never raised.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["BANNER_PREFIX", "AmiFramer", "AmiMessage", "parse_block"]

TERMINATOR = b"\r\n\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class AmiMessage:
    """One AMI message: an event, a response or a list item.

    ``headers`` maps each key to its first value; ``repeated`` holds every value of keys that appear
    more than once (in order).  Keys keep Asterisk's spelling (``Uniqueid``, ``Linkedid``).
    """

    __slots__ = ("headers", "repeated")

    def __init__(self, headers: dict[str, str], repeated: dict[str, list[str]] | None = None) -> None:
        self.headers = headers
        self.repeated = repeated

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


def parse_block(text: str) -> tuple[AmiMessage | None, str | None, int]:
    """Parse one message block (without its terminator).

    Returns ``(message or None, banner or None, number of lines without a colon)``.
    """
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] | None = None
    banner = None
    bad_lines = 0
    for line in text.split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            if line.startswith(BANNER_PREFIX):
                banner = line
            elif line:
                bad_lines += 1
            continue
        if value[:1] == " ":
            value = value[1:]
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


class AmiFramer:
    """Incremental AMI framer: ``feed(bytes)`` returns the complete messages found so far."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._buf = b""
        self._discarding = False
        self.max_message_bytes = max_message_bytes
        self.banner: str | None = None
        self.messages = 0
        self.bad_messages = 0
        self.bad_lines = 0

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
        for block in blocks:
            msg = self._parse(block)
            if msg is not None:
                yield msg
        if len(rest) > self.max_message_bytes:
            self.bad_messages += 1
            self._discarding = True
            self._buf = rest[-3:]
        else:
            self._buf = rest

    def _parse(self, block: bytes) -> AmiMessage | None:
        if not block.strip():
            return None
        text = block.decode("utf-8", "replace")
        msg, banner, bad_lines = parse_block(text)
        if banner is not None:
            self.banner = banner
        self.bad_lines += bad_lines
        if msg is None:
            if banner is None or text.strip() != banner:
                self.bad_messages += 1
            return None
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
