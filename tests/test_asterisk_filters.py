"""asterisk-conf/manager.conf: the onechance manager user's read classes and event filters, applied to
every real capture exactly as Asterisk applies them, cut most of the AMI traffic and change no journey.

The emulation follows Asterisk's ``main/manager.c`` (master, 2025): ``manager_add_filter`` (how an
``eventfilter`` line is parsed), ``filter_cmp_fn``/``match_eventdata`` (how one filter matches one event),
``should_send_event`` (no filters: pass all; include filters: pass an event matching any; exclude
filters applied after) and the ``(send_events & category) == category`` test of ``process_events``
(the user's ``read`` classes ANDed with the Login ``Events:`` mask).  Config lines are read with
``main/config.c``'s comment rules.  Asterisk's own unit-test vectors for the filters
(``eventfilter_test_creation``/``eventfilter_test_matching``) are run against the emulation first.

Only asynchronous events are filtered: they are the messages that start ``Event: X`` then
``Privilege: classes`` (``__manager_event_sessions_va`` writes them so).  Responses and list items
(``CoreShowChannel``, ``QueueMember``..., which carry no ``Privilege``) are never filtered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from onechance.config import AmiSettings, Settings
from onechance.journey import JourneyTracker
from onechance.replay import replay_files

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MANAGER_CONF = ROOT / "asterisk-conf" / "manager.conf"
SHARED_CAPTURES = ROOT.parent / "shared" / "ami-captures"
#: the test captures
CAPTURE_FILES = {p.stem: p for p in sorted(DATA.glob("*.ami"))}
CAPTURES = sorted(CAPTURE_FILES)
USER = "onechance"
#: every event class Asterisk knows (manager.c perms[]), for reading Privilege headers and read=
KNOWN_CLASSES = frozenset({
    "system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf", "reporting", "cdr",
    "dialplan", "originate", "agi", "cc", "aoc", "test", "security", "message",
})
#: list items the tracker reads: answers to onechance's own actions, never subject to filters
LIST_ITEMS = frozenset({"QueueMember", "QueueEntry", "QueueParams", "CoreShowChannel"})


# ---- manager.conf, read as main/config.c reads it ----------------------------------------------------
class ConfError(Exception):
    pass


def _strip_comments(raw: str, in_block: bool) -> tuple[str, bool]:
    line, i, out = raw, 0, []
    while i < len(line):
        if in_block:
            end = line.find("--;", i)
            if end < 0:
                i = len(line)
            else:
                in_block, i = False, end + 3
            continue
        c = line[i]
        if c == "\\" and line[i + 1 : i + 2] == ";":
            out.append(";")
            i += 2
        elif c == ";":
            if line[i : i + 3] == ";--" and line[i + 3 : i + 4] != "-":
                in_block, i = True, i + 3
            else:
                break
        else:
            out.append(c)
            i += 1
    return "".join(out).strip(), in_block


def read_asterisk_conf(text: str, include_dir: Path | None = None) -> dict[str, list[tuple[str, str, int]]]:
    """Sections -> [(name, value, line number)], as main/config.c builds them: ``;`` comments (``\\;`` is
    a literal ``;``), ``;-- --;`` block comments, ``name = value`` and ``name => value``, ``[name](+)``
    (append to an existing section), ``[name](!)`` (a template, not a section of its own),
    ``[name](template)`` (starts with the template's lines) and ``#include "file"`` (from include_dir)."""
    sections: dict[str, list[tuple[str, str, int]]] = {}
    templates: set[str] = set()

    def parse(text: str, where: str) -> None:
        current: str | None = None
        in_block = False
        for lineno, raw in enumerate(text.splitlines(), 1):
            line, in_block = _strip_comments(raw, in_block)
            if not line:
                continue
            m = re.fullmatch(r"\[([^\]]+)\](?:\(([^)]*)\))?", line)
            if m:
                current = m.group(1)
                opts = [o.strip() for o in (m.group(2) or "").split(",") if o.strip()]
                if "+" in opts:
                    if current not in sections:
                        raise ConfError(f"{where}:{lineno}: [{current}](+) but no [{current}] before it")
                    continue
                if current in sections:
                    raise ConfError(f"{where}:{lineno}: [{current}] twice (use [{current}](+) to add to it)")
                sections[current] = []
                for opt in opts:
                    if opt == "!":
                        templates.add(current)
                    elif opt in templates:
                        sections[current].extend(sections[opt])
                    else:
                        raise ConfError(f"{where}:{lineno}: [{current}]({opt}): no template {opt!r} before it")
                continue
            inc = re.fullmatch(r'#include\s+"?([^"]+?)"?', line)
            if inc:
                if include_dir is None:
                    raise ConfError(f"{where}:{lineno}: #include without a directory to read it from")
                path = include_dir / inc.group(1)
                parse(path.read_text(encoding="utf-8"), path.name)
                current = None
                continue
            if "=" not in line or current is None:
                raise ConfError(f"{where}:{lineno}: not 'name = value' inside a section: {raw!r}")
            name, _, value = line.partition("=")
            if value.startswith(">"):
                value = value[1:]
            sections[current].append((name.strip(), value.strip(), lineno))
        if in_block:
            raise ConfError(f"{where}: unterminated ;-- block comment")

    parse(text, "<conf>")
    return {name: lines for name, lines in sections.items() if name not in templates}


# ---- eventfilter: manager_add_filter / filter_cmp_fn / should_send_event ------------------------------
class FilterError(Exception):
    """manager_add_filter's FILTER_FORMAT_ERROR or FILTER_COMPILE_FAIL."""


@dataclass
class EventFilter:
    method: str = "regex"  # regex | exact | starts_with | ends_with | contains | none
    pattern: bytes = b""
    regex: re.Pattern[bytes] | None = None
    name: str | None = None
    header: bytes | None = None  # "Name:" as compared with each line
    exclude: bool = False

    def matches(self, name: str, payload: bytes) -> bool:
        """filter_cmp_fn: the event name first (Asterisk compares hashes of the exact, case-sensitive
        names), then the whole payload or, with a header, the value of each line starting "Header:"."""
        if self.name is not None and self.name != name:
            return False
        if self.header is None:
            return self._data(payload)
        for line in _lines(payload):
            if line.startswith(self.header):
                value = line[len(self.header) :]
                k = 0
                while k < len(value) and value[k] < 33:  # ast_skip_blanks
                    k += 1
                value = value[k:]
                if not value:
                    continue
                if self._data(value):
                    return True
        return False

    def _data(self, data: bytes) -> bool:  # match_eventdata
        if self.method == "regex":
            assert self.regex is not None
            return self.regex.search(data) is not None
        if self.method == "starts_with":
            return data.startswith(self.pattern)
        if self.method == "ends_with":
            return data.endswith(self.pattern)
        if self.method == "contains":
            return self.pattern in data
        if self.method == "exact":
            return data == self.pattern
        return True  # none


def _lines(payload: bytes) -> list[bytes]:
    """ast_read_line_from_buffer: split on LF, drop one CR before it."""
    out = []
    for part in payload.split(b"\n"):
        out.append(part[:-1] if part.endswith(b"\r") else part)
    if payload.endswith(b"\n"):
        out.pop()  # nothing after the last LF: no further line
    return out


def posix_ere(pattern: str) -> re.Pattern[bytes]:
    """regcomp(REG_EXTENDED | REG_NOSUB) as a Python bytes regex: '.' matches a newline and '$' only the
    very end (no REG_NEWLINE); a bracket expression takes backslash literally and ']' first as a
    member.  Constructs with no portable meaning (back-references, \\d, [:class:]) are refused so
    the emulation never silently differs from Asterisk."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise FilterError(f"regex {pattern!r}: trailing backslash")
            nxt = pattern[i + 1]
            if nxt.isalnum():
                raise FilterError(f"regex {pattern!r}: \\{nxt} is not POSIX ERE")
            out.append(re.escape(nxt))
            i += 2
        elif c == "[":
            j = i + 1
            members = []
            if j < n and pattern[j] == "^":
                members.append("^")
                j += 1
            first = True
            while j < n and (pattern[j] != "]" or first):
                ch = pattern[j]
                if ch == "[" and pattern[j + 1 : j + 2] in (":", ".", "="):
                    raise FilterError(f"regex {pattern!r}: [: :] classes are not emulated")
                members.append("\\" + ch if ch in "\\[]&~|" else ch)
                first = False
                j += 1
            if j >= n:
                raise FilterError(f"regex {pattern!r}: unterminated [")
            out.append("[" + "".join(members) + "]")
            i = j + 1
        elif c == "$":
            out.append(r"\Z")
            i += 1
        else:
            out.append(c)
            i += 1
    try:
        return re.compile("".join(out).encode(), re.DOTALL)
    except re.error as exc:
        raise FilterError(f"regex {pattern!r} does not compile: {exc}") from None


def add_filter(criteria: str, pattern: str) -> EventFilter:
    """manager_add_filter: ``criteria`` is the config name (``eventfilter`` or ``eventfilter(...)``),
    ``pattern`` the value."""
    f = EventFilter()
    if not criteria:
        raise FilterError("missing criteria")
    if pattern.startswith("!"):
        f.exclude = True
        pattern = pattern[1:]
    start = criteria.find("(")
    if start < 0 and not pattern:
        raise FilterError(f"{criteria} = {pattern}: legacy filter with no pattern")
    if start >= 0:
        f.method = "none"
        temp = criteria[start + 1 :].strip()
        if not temp or not temp.endswith(")"):
            raise FilterError(f"{criteria}: options not formatted correctly")
        found: set[str] = set()
        for option in (t for t in re.split(r"[ ,)]+", temp) if t):  # strtok_r(" ,)")
            paren = option.find("(")
            arg = option[paren + 1 :].strip() if paren >= 0 else None
            if option.startswith("action"):
                if not arg:
                    raise FilterError(f"{criteria}: 'action' not formatted correctly")
                if arg not in ("include", "exclude"):
                    raise FilterError(f"{criteria}: action '{arg}' is unknown")
                f.exclude = arg == "exclude"
                found.add("action")
            elif option.startswith("name"):
                if not arg:
                    raise FilterError(f"{criteria}: 'name' not formatted correctly")
                f.name = arg
                found.add("name")
            elif option.startswith("header"):
                if not arg:
                    raise FilterError(f"{criteria}: 'header' not formatted correctly")
                f.header = (arg if arg.endswith(":") else arg + ":").encode()
                found.add("header")
            elif option.startswith("method"):
                if not arg:
                    raise FilterError(f"{criteria}: 'method' not formatted correctly")
                if arg not in ("regex", "exact", "starts_with", "ends_with", "contains", "none"):
                    raise FilterError(f"{criteria}: method '{arg}' is unknown")
                f.method = arg
                found.add("method")
            else:
                raise FilterError(f"{criteria}: option '{option}' is unknown")
        if not found:
            raise FilterError(f"{criteria}: no action, name, header or method")
        if not pattern and f.method != "none":
            raise FilterError(f"{criteria}: method '{f.method}' needs a pattern")
        if pattern and f.method == "none":
            raise FilterError(f"{criteria} = {pattern}: method 'none' with a pattern")
        if not found & {"name", "header"} and f.method == "none":
            raise FilterError(f"{criteria}: no name or header and no pattern")
    if pattern:
        if f.method == "regex":
            f.regex = posix_ere(pattern)
        f.pattern = pattern.encode()
    return f


def should_send(includes: list[EventFilter], excludes: list[EventFilter], name: str, payload: bytes) -> bool:
    if not includes and not excludes:
        return True
    if includes and not any(f.matches(name, payload) for f in includes):
        return False
    return not any(f.matches(name, payload) for f in excludes)


def classes(text: str) -> set[str]:
    """get_perm: a comma list of class names ("all" is every class)."""
    names = {c.strip() for c in text.split(",") if c.strip()}
    unknown = names - KNOWN_CLASSES - {"all", "none"}
    if unknown:
        raise ConfError(f"unknown event class(es): {', '.join(sorted(unknown))}")
    return set(KNOWN_CLASSES) if "all" in names else names - {"none"}


def privilege(text: str) -> set[str]:
    """An event's classes from its Privilege header (authority_to_str: its classes, then "all")."""
    names = {c.strip() for c in text.split(",") if c.strip()} - {"all"}
    if not names or names - KNOWN_CLASSES:
        raise ConfError(f"unexpected Privilege header: {text!r}")
    return names


@dataclass
class ManagerUser:
    read: set[str]
    write: set[str]
    includes: list[EventFilter] = field(default_factory=list)
    excludes: list[EventFilter] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_conf(cls, sections: dict[str, list[tuple[str, str, int]]], user: str) -> ManagerUser:
        if user not in sections:
            raise ConfError(f"no [{user}] section")
        u = cls(read=set(), write=set())
        for name, value, lineno in sections[user]:
            if name.startswith("eventfilter"):
                try:
                    f = add_filter(name, value)
                except FilterError as exc:
                    raise ConfError(f"line {lineno}: {exc}") from None
                (u.excludes if f.exclude else u.includes).append(f)
            elif name.lower() == "read":
                u.read = classes(value)
            elif name.lower() == "write":
                u.write = classes(value)
            else:
                u.options[name.lower()] = value
        return u


# ---- a capture through the user's classes and filters --------------------------------------------------
@dataclass
class Cut:
    kept: bytes
    events: int = 0
    by_class: int = 0  # events the read classes / Events mask stop
    by_filter: int = 0  # events the eventfilters stop
    names_kept: set[str] = field(default_factory=set)


def split_messages(data: bytes) -> list[bytes]:
    """Raw messages, each with its terminating blank line; the banner line is a message of its own."""
    out = []
    if data.startswith(b"Asterisk Call Manager/"):
        eol = data.index(b"\r\n") + 2
        out.append(data[:eol])
        data = data[eol:]
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            out.append(data)
            break
        out.append(data[: end + 4])
        data = data[end + 4 :]
    return out


def apply_user(data: bytes, user: ManagerUser, events_mask: set[str]) -> Cut:
    allowed = user.read & events_mask
    kept, cut = [], Cut(b"")
    for msg in split_messages(data):
        m = re.match(rb"Event: ([^\r\n]*)\r\nPrivilege: ([^\r\n]*)\r\n", msg)
        if m is None:  # banner, response or list item: never filtered
            kept.append(msg)
            continue
        name = m.group(1).decode()
        cut.events += 1
        if not privilege(m.group(2).decode()) <= allowed:
            cut.by_class += 1
        elif not should_send(user.includes, user.excludes, name, msg):
            cut.by_filter += 1
        else:
            kept.append(msg)
            cut.names_kept.add(name)
    cut.kept = b"".join(kept)
    return cut


# ---- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conf() -> dict[str, list[tuple[str, str, int]]]:
    return read_asterisk_conf(MANAGER_CONF.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def user(conf) -> ManagerUser:
    return ManagerUser.from_conf(conf, USER)


@pytest.fixture(scope="module")
def events_mask() -> set[str]:
    """The Login Events: mask onechance sends by default."""
    return classes(AmiSettings().events)


@pytest.fixture(scope="module")
def cuts(user, events_mask) -> dict[str, Cut]:
    return {name: apply_user(CAPTURE_FILES[name].read_bytes(), user, events_mask) for name in CAPTURES}


# ---- the emulation against Asterisk's own test vectors ------------------------------------------------
NEWCHANNEL = ("Newchannel", b"Event: Newchannel\r\nChannel: XXX\r\nSomeheader: YYY\r\n")
VARSET = ("VarSet", b"Event: VarSet\r\nChannel: ABC\r\nSomeheader: XXX\r\n")

# manager.c parsing_filter_tests: criteria, pattern, expected error (None: ok), event, sent
CREATION = [
    ("eventfilter", "XXX", None, NEWCHANNEL, True),
    ("eventfilter", "!XXX", None, VARSET, False),
    ("eventfilter(name(VarSet),method(none))", "", None, VARSET, True),
    ("eventfilter(name(Newchannel),method(regex))", "X[XYZ]X", None, NEWCHANNEL, True),
    ("eventfilter(name(Newchannel),method(regex))", "X[abc]X", None, NEWCHANNEL, False),
    ("eventfilter(action(exclude),name(Newchannel),method(regex))", "X[XYZ]X", None, NEWCHANNEL, False),
    ("eventfilter(action(exclude),name(Newchannel),method(regex))", "X[abc]X", None, NEWCHANNEL, True),
    ("eventfilter(action(include),name(VarSet),header(Channel),method(starts_with))", "AB", None, VARSET, True),
    ("eventfilter(action(include),name(VarSet),header(Channel),method(ends_with))", "BC", None, VARSET, True),
    ("eventfilter(action(include),name(VarSet),header(Channel),method(exact))", "ABC", None, VARSET, True),
    ("eventfilter(action(include),name(VarSet),header(Channel),method(exact))", "XXX", None, VARSET, False),
    ("eventfilter(name(VarSet),header(Channel),method(exact))", "!ZZZ", None, VARSET, True),
    ("eventfilter(action(exclude),name(VarSet),header(Channel),method(exact))", "ZZZ", None, VARSET, True),
    ("eventfilter(action(include),name(VarSet),header(Someheader),method(exact))", "!XXX", None, VARSET, True),
    ("eventfilter(action(include)", "", "format", None, None),
    ("eventfilter(action(inlude)", "", "format", None, None),
    ("eventfilter(nnnn(yyy)", "XXX", "format", None, None),
    ("eventfilter(eader(VarSet)", "XXX", "format", None, None),
    ("eventfilter(ethod(contains)", "XXX", "format", None, None),
    ("eventfilter(nnnn(yyy),header(VarSet),method(contains)", "XXX", "format", None, None),
    ("eventfilter(name(yyy),heder(VarSet),method(contains)", "XXX", "format", None, None),
    ("eventfilter(name(yyy),header(VarSet),mehod(contains)", "XXX", "format", None, None),
    ("eventfilter(name(yyy),header(VarSet),method(coains)", "XXX", "format", None, None),
    ("eventfilter(method(yyy))", "XXX", "format", None, None),
    ("eventfilter", "", "format", None, None),
    ("eventfilter", "!", "format", None, None),
    ("eventfilter()", "XXX", "format", None, None),
    ("eventfilter", "XX[X", "compile", None, None),
    ("eventfilter(method(regex))", "XX[X", "compile", None, None),
]


@pytest.mark.parametrize(("criteria", "pattern", "error", "event", "sent"), CREATION)
def test_filter_parsing_and_matching_agree_with_asterisk_vectors(criteria, pattern, error, event, sent):
    if error is not None:
        with pytest.raises(FilterError):
            add_filter(criteria, pattern)
        return
    f = add_filter(criteria, pattern)
    includes, excludes = ([], [f]) if f.exclude else ([f], [])
    assert should_send(includes, excludes, *event) is sent


def test_include_and_exclude_precedence_agree_with_asterisk_vectors():
    """manager.c eventfilter_test_matching: includes first, then excludes over what they let through."""
    lines = [
        ("eventfilter(name(VarSet),method(none))", ""),
        ("eventfilter(name(Newchannel),method(regex))", "X[XYZ]X"),
        ("eventfilter(name(Newchannel),method(regex))", "X[abc]X"),
        ("eventfilter(name(Newchannel),header(Someheader),method(regex))", "ZZZ"),
        ("eventfilter(action(exclude),name(Newchannel),method(regex))", "X[a]X"),
        ("eventfilter(action(exclude),name(Newchannel),method(regex))", "X[Z]X"),
        ("eventfilter(action(exclude),name(VarSet),header(Channel),method(regex))", "YYY"),
    ]
    filters = [add_filter(c, p) for c, p in lines]
    inc = [f for f in filters if not f.exclude]
    exc = [f for f in filters if f.exclude]
    cases = [
        ("Newchannel", b"Event: Newchannel\r\nChannel: XXX\r\nSomeheader: YYY\r\n", True),
        ("Newchannel", b"Event: Newchannel\r\nChannel: XZX\r\nSomeheader: YYY\r\n", False),
        ("Newchannel", b"Event: Newchannel\r\nChannel: XaX\r\nSomeheader: YYY\r\n", False),
        ("Newchannel", b"Event: Newchannel\r\nChannel: XbX\r\nSomeheader: YYY\r\n", True),
        ("Newchannel", b"Event: Newchannel\r\nChannel: XcX\r\nSomeheader: YYY\r\n", True),
        ("Newchannel", b"Event: Newchannel\r\nChannel: YYY\r\nSomeheader: YYY\r\n", False),
        ("Newchannel", b"Event: Newchannel\r\nChannel: YYY\r\nSomeheader: ZZZ\r\n", True),
        ("VarSet", b"Event: VarSet\r\nChannel: XXX\r\nSomeheader: YYY\r\n", True),
        ("VarSet", b"Event: VarSet\r\nChannel: YYY\r\nSomeheader: YYY\r\n", False),
    ]
    assert [should_send(inc, exc, n, p) for n, p, _ in cases] == [want for _, _, want in cases]


def test_header_matching_details():
    """The header value starts after blanks, an empty value never matches, a header name is a line
    prefix ("Channel:" is not "ChannelState:"), regex '$' is the end of the whole data."""
    ev = b"Event: VarSet\r\nChannelState: 6\r\nChannel: PJSIP/1-0\r\nVariable: \r\nValue: QUEUESTATUS\r\n\r\n"
    assert add_filter("eventfilter(header(Channel),method(exact))", "PJSIP/1-0").matches("VarSet", ev)
    assert not add_filter("eventfilter(header(Channel),method(exact))", "6").matches("VarSet", ev)
    assert not add_filter("eventfilter(header(Variable),method(regex))", ".*").matches("VarSet", ev)
    assert add_filter("eventfilter(header(Value:),method(regex))", "^QUEUE(STATUS)?$").matches("VarSet", ev)
    assert not add_filter("eventfilter(method(regex))", "STATUS$").matches("VarSet", ev)  # payload ends CRLF CRLF
    assert add_filter("eventfilter", "Channel: P.*Value: Q").matches("VarSet", ev)  # '.' matches newlines
    assert not add_filter("eventfilter(name(varset))", "").matches("VarSet", ev)  # names are case-sensitive
    with pytest.raises(FilterError):
        add_filter("eventfilter(name(VarSet),method(regex))", r"\d+")


def test_config_reading_rules(tmp_path):
    sections = read_asterisk_conf(
        "[general]\na = 1 ; comment\n;-- block\nb = 2\n--;\nc = x\\;y\n[u]\n[u](+)\neventfilter(name(X)) =  ; why\n"
    )
    assert sections == {"general": [("a", "1", 2), ("c", "x;y", 6)], "u": [("eventfilter(name(X))", "", 9)]}
    (tmp_path / "inc.conf").write_text("[general]\nbindaddr = 127.0.0.1\n", encoding="utf-8")
    sections = read_asterisk_conf(
        '#include "inc.conf"\n[general](+)\nbindaddr = 0.0.0.0\n[t](!)\nx = 1\n[q](t)\ny = 2\n', tmp_path
    )
    assert sections == {"general": [("bindaddr", "127.0.0.1", 2), ("bindaddr", "0.0.0.0", 3)],
                        "q": [("x", "1", 5), ("y", "2", 7)]}
    for bad in ("[v](+)\n", "[w]\n[w]\n", "[z](nosuch)\n", "a = 1\n"):
        with pytest.raises(ConfError):
            read_asterisk_conf(bad)


# ---- the sample itself -----------------------------------------------------------------------------------
def test_manager_user_is_least_privilege(conf, user, events_mask):
    general = {n: v for n, v, _ in conf["general"]}
    assert general.get("timestampevents") == "yes", "waits need Timestamp on every event"
    assert user.read == {"call", "agent", "system", "dialplan", "dtmf"}
    assert user.write == {"system", "reporting"}, "CoreShowChannels needs system or reporting; nothing more"
    assert int(user.options["writetimeout"]) >= 1000, "Asterisk drops readers slower than writetimeout ms"
    assert user.options["secret"] and user.options.get("displayconnects") == "no"
    acl = [(n, v) for n, v, _ in conf[USER] if n in ("deny", "permit")]
    assert acl[0] == ("deny", "0.0.0.0/0.0.0.0"), "deny everyone first, then permit the daemon's host"
    assert [n for n, _ in acl[1:]] and all(n == "permit" and not v.startswith("0.0.0.0") for n, v in acl[1:])
    assert events_mask == user.read, "onechance's Login Events mask and the read classes should agree"


def test_every_eventfilter_line_says_why():
    lines = [ln for ln in MANAGER_CONF.read_text(encoding="utf-8").splitlines() if ln.startswith("eventfilter")]
    assert len(lines) >= 20
    bare = [ln for ln in lines if not re.search(r";\s*\S.{8,}", ln)]
    assert bare == [], "every eventfilter line carries a comment saying why onechance needs it"


def test_every_event_the_tracker_handles_is_let_through(user):
    handlers = JourneyTracker().handled_events()
    named = {f.name for f in user.includes}
    assert None not in named, "an include filter without a name lets every event class through"
    missing = sorted(set(handlers) - LIST_ITEMS - named)
    assert missing == [], f"manager.conf's eventfilters drop events the tracker handles: {missing}"


# ---- every capture through the filters ----------------------------------------------------------------
def test_every_shared_capture_is_replayed_here():
    assert SHARED_CAPTURES.is_dir(), f"{SHARED_CAPTURES} is not there (CI has it beside the checkout)"
    shared = sorted(SHARED_CAPTURES.glob("*.ami"))
    assert shared
    for p in shared:
        copy = CAPTURE_FILES.get(p.stem)
        assert copy is not None, f"{p.name} is not in tests/data: copy it from {p}"
        assert copy.read_bytes() == p.read_bytes(), f"{copy} differs from {p}"


@pytest.mark.parametrize("name", CAPTURES)
def test_filtered_capture_gives_the_same_journeys(name, cuts, tmp_path):
    cut = cuts[name]
    assert cut.by_class + cut.by_filter > 0, "nothing filtered: the filters were not applied"
    filtered = tmp_path / f"{name}.ami"
    filtered.write_bytes(cut.kept)
    full = replay_files([str(CAPTURE_FILES[name])])
    kept = replay_files([str(filtered)])
    assert full.journeys, "a capture without calls compares nothing"
    assert kept.bad_messages == 0
    assert kept.tracker_errors == full.tracker_errors
    assert [j.to_json() for j in kept.journeys] == [j.to_json() for j in full.journeys]


def test_filters_cut_most_of_the_traffic(cuts, capsys):
    total = sum(c.events for c in cuts.values())
    by_class = sum(c.by_class for c in cuts.values())
    by_filter = sum(c.by_filter for c in cuts.values())
    size_full = sum(CAPTURE_FILES[n].stat().st_size for n in cuts)
    size_kept = sum(len(c.kept) for c in cuts.values())
    share = (by_class + by_filter) / total
    with capsys.disabled():
        print(f"\nmanager.conf [{USER}] over {len(cuts)} captures: {total} events; read classes cut {by_class} "
              f"({by_class / total:.0%}), eventfilters {by_filter} ({by_filter / total:.0%}); "
              f"{share:.0%} of events and {1 - size_kept / size_full:.0%} of bytes never sent")
        for name, c in sorted(cuts.items()):
            print(f"  {name:30} {c.events:6} events, {(c.by_class + c.by_filter) / c.events:4.0%} cut")
    assert share >= 0.5, f"the filters cut only {share:.0%} of the events"


# ---- the other Asterisk samples --------------------------------------------------------------------------
ASTERISK_CONF = ROOT / "asterisk-conf"


def settings_of(lines: list[tuple[str, str, int]]) -> dict[str, str]:
    """Last value of each key (how app_queue, logger and manager read repeated scalar options)."""
    return {k: v for k, v, _ in lines}


def test_docker_manager_conf_is_the_sample_opened_to_the_compose_network(user):
    """asterisk-conf/docker/manager.conf includes the sample (mounted as manager_onechance.conf): the same
    user, classes and filters, listening inside the container, with the Docker address pools permitted."""
    include_dir = ASTERISK_CONF / "docker"
    text = (include_dir / "manager.conf").read_text(encoding="utf-8")
    assert '#include "manager_onechance.conf"' in text
    merged = read_asterisk_conf(text.replace('"manager_onechance.conf"', '"../manager.conf"'), include_dir)
    general = settings_of(merged["general"])
    assert general["bindaddr"] == "0.0.0.0" and general["timestampevents"] == "yes"
    docker_user = ManagerUser.from_conf(merged, USER)
    assert (docker_user.read, docker_user.write) == (user.read, user.write)
    assert [(f.name, f.header, f.pattern) for f in docker_user.includes] == [
        (f.name, f.header, f.pattern) for f in user.includes
    ]
    acl = [(n, v) for n, v, _ in merged[USER] if n in ("deny", "permit")]
    assert acl[0] == ("deny", "0.0.0.0/0.0.0.0")
    assert ("permit", "172.16.0.0/255.240.0.0") in acl and ("permit", "192.168.0.0/255.255.0.0") in acl


def test_queues_conf_sample():
    sections = read_asterisk_conf((ASTERISK_CONF / "queues.conf").read_text(encoding="utf-8"))
    general = settings_of(sections.pop("general"))
    assert general["log_membername_as_agent"] == "yes", "queue_log and onechance name operators alike"
    assert general["log-caller-id-name"] == "yes"
    every_key = set(general) | {k for lines in sections.values() for k, _, _ in lines}
    assert not every_key & {"eventwhencalled", "eventmemberstatus"}, "options removed in Asterisk 12"
    # the demo stack runs this file with the test PBX's dialplan: the same queues, members and names
    demo = read_asterisk_conf((ASTERISK_CONF / "test-pbx" / "queues.conf").read_text(encoding="utf-8"))
    demo.pop("general")
    for queue, lines in sections.items():
        opts = settings_of(lines)
        assert float(opts["servicelevel"]) == Settings().journey.service_level_seconds, queue
        assert opts["ringinuse"] == "no" and opts["joinempty"] == "yes", queue
        members = [v for k, v, _ in lines if k == "member"]
        assert members == [v for k, v, _ in demo[queue] if k == "member"], queue
        assert all(len(m.split(",")) >= 3 and m.split(",")[2].strip() for m in members), "members need names"
    assert set(sections) == {"support", "sales", "billing"}
    deploy_toml = (ROOT / "deploy" / "onechance.toml").read_text(encoding="utf-8")
    assert f"service_level_seconds = {int(Settings().journey.service_level_seconds)}" in deploy_toml


def test_logger_conf_sample_writes_queue_log():
    general = settings_of(read_asterisk_conf((ASTERISK_CONF / "logger.conf").read_text(encoding="utf-8"))["general"])
    assert general["queue_log"] == "yes" and general["queue_log_to_file"] == "yes"
