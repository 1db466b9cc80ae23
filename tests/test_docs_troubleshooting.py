"""docs/troubleshooting.md quotes what onechance really writes: every log line, error line and message fragment it
quotes is one the source can produce (found by reading the source's syntax tree), every metric, route and setting it
names exists, and the /readyz answers and log lines it shows are those of a real daemon in the same situation."""

from __future__ import annotations

import ast
import json
import re
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from onechance.configdoc import tables

from .livehelp import api_for, fake_pbx, pipeline, running, settings_for, wait_until
from .test_metrics_contract import documented

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "service" / "onechance"
DOC = ROOT / "docs" / "troubleshooting.md"

LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR", "exception": "ERROR",
          "critical": "CRITICAL"}
PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdrfgiexXc]")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): (.+)$")


@dataclass(frozen=True)
class Template:
    module: str
    level: str | None  # None: not a log call (an exception's or a command's message)
    regex: re.Pattern[str]
    literal: str  # the text with "\0" where a value goes


def _parts(node: ast.expr, percent: bool) -> list[str | None] | None:
    """The message as literal texts and ``None`` where a value goes (``%s`` of a log call, ``{x}`` of an f-string)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if not percent:
            return [node.value]
        text, out, pos = node.value.replace("%%", "\x01"), [], 0
        for m in PERCENT.finditer(text):
            out += [text[pos:m.start()].replace("\x01", "%"), None]
            pos = m.end()
        return [*out, text[pos:].replace("\x01", "%")]
    if isinstance(node, ast.JoinedStr):
        return [str(p.value) if isinstance(p, ast.Constant) else None for p in node.values]
    return None


def _from_node(node: ast.expr, percent: bool) -> tuple[str, str] | None:
    """``(regex, literal)`` of a message, trailing white space dropped; None when it is no message."""
    parts = _parts(node, percent)
    if parts is None:
        return None
    if parts and isinstance(parts[-1], str):
        parts[-1] = parts[-1].rstrip()
    literal = "".join("\0" if p is None else p for p in parts)
    if len(literal.replace("\0", "").strip()) < 8:  # "%s%s", "{x}: {y}": says nothing of its own
        return None
    return "".join(".+?" if p is None else re.escape(p) for p in parts), literal


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@cache
def source() -> tuple[dict[str, set[str]], tuple[Template, ...]]:
    """Per module, the logger names it uses; every message template of the package."""
    loggers: dict[str, set[str]] = {}
    templates: list[Template] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.value) for n in ast.walk(tree)
                      if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        names = loggers.setdefault(module, set())
        in_calls: set[int] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            attr = node.func.attr
            if attr == "getLogger" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Name) and arg.id == "__name__":
                    names.add(module)
                elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
            owner = ast.unparse(node.func.value)
            if attr in LEVELS and re.search(r"(^|\.)_?log(ger)?$", owner) and node.args:
                found = _from_node(node.args[0], percent=True)
                if found:
                    in_calls.add(id(node.args[0]))
                    templates.append(Template(module, LEVELS[attr], re.compile(found[0], re.S), found[1]))
            elif attr == "failed" and len(node.args) >= 2:  # RateLimitedLog.failed(key, message, exc)
                found = _from_node(node.args[1], percent=False)
                if found:
                    in_calls.add(id(node.args[1]))
                    regex = found[0] + r"(?: \(\d+ more since the last report\))?"
                    templates.append(Template(module, "ERROR", re.compile(regex, re.S), found[1]))
        for node in ast.walk(tree):
            if id(node) in in_calls or id(node) in docstrings or not isinstance(node, ast.Constant | ast.JoinedStr):
                continue
            found = _from_node(node, percent=False)
            if found:
                templates.append(Template(module, None, re.compile(found[0], re.S), found[1]))
    return loggers, tuple(templates)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def log_lines() -> list[str]:
    """Every line of the doc's ```log blocks."""
    out, inside = [], False
    for line in doc_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            inside = stripped == "```log"
            continue
        if inside and stripped:
            out.append(stripped)
    return out


def test_the_doc_quotes_log_lines():
    assert len(log_lines()) >= 15


@pytest.mark.parametrize("line", log_lines())
def test_each_quoted_log_line_is_one_onechance_writes(line):
    m = LOG_LINE.match(line)
    assert m, f"not a log line as onechance writes them (time LEVEL logger: message): {line}"
    level, logger, message = m.groups()
    loggers, templates = source()
    candidates = [t for t in templates if t.level == level and t.regex.fullmatch(message)]
    assert candidates, f"no {level} log call in service/onechance writes: {message}"
    assert any(logger in loggers[t.module] for t in candidates), (
        f"{message!r} is written by {sorted({t.module for t in candidates})}, not through the logger {logger}")


def _matches_a_template(text: str) -> bool:
    """The text is a message of the source, ``...`` standing for what the doc leaves out."""
    _loggers, templates = source()
    return any(t.regex.fullmatch(text) for t in templates) or ("..." in text and _in_source_text(text))


def _in_source_text(fragment: str) -> bool:
    """Every piece of the fragment (between its ``...``), in order, in the literal text of one message."""
    _loggers, templates = source()
    pieces = [p.strip() for p in fragment.split("...") if p.strip()]
    for t in templates:
        pos = 0
        for piece in pieces:
            found = t.literal.find(piece, pos)
            if found < 0:
                break
            pos = found + len(piece)
        else:
            return True
    return False


def _section(title: str) -> str:
    text = doc_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _first_code_spans_of_rows(section: str) -> list[str]:
    out = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("|---") or line.startswith("| standard error"):
            continue
        cell = line[2:].split(" | ", 1)[0]
        m = re.match(r"^(``?)(.+?)\1(?: |$)", cell)
        assert m, line
        out.append(m.group(2).strip())
    return out


def test_the_error_lines_of_a_failed_start_are_onechance_s():
    lines = _first_code_spans_of_rows(_section("It does not start"))
    assert len(lines) >= 5
    for line in lines:
        m = re.match(r"^onechance (run|demo|check-config): (.+)$", line)
        assert m, line
        assert _matches_a_template(m.group(2)), f"no message of service/onechance says: {m.group(2)}"


#: message fragments the doc quotes in its text (each must be in the doc, and in the source)
FRAGMENTS = [
    "no event carries a Timestamp (Asterisk's manager.conf has timestampevents = no)",
    "missing or wrong bearer token",
    "alert deliveries left pending by an earlier run",
    "login refused: Authentication failed",
    "spool directory ... is in use by another onechance process (pid ...); set ONECHANCE_DATABASE__SPOOL_DIR to "
    "another directory",
    "the database schema is at ..., this version needs ...: run `onechance db upgrade` (or set "
    "database.auto_upgrade)",
    "cannot write the spool in /var/lib/onechance/spool: No space left on device; keeping 200 journeys in memory",
    "... refused by the database: ... (kept in ...)",
    "database unavailable: ...",
    "http.listen 127.0.0.1:9648: cannot listen there: ... address already in use",
]


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_each_quoted_message_is_in_the_doc_and_in_the_source(fragment):
    assert fragment in " ".join(doc_text().split()), f"the doc no longer quotes: {fragment}"
    assert _matches_a_template(fragment) or _in_source_text(fragment), f"service/onechance never says: {fragment}"



def test_the_make_run_line_is_the_makefile_s():
    line = "No Asterisk configured (ONECHANCE_CONFIG, ONECHANCE_AMI__HOST): running the simulated call centre."
    assert line in doc_text()
    assert line in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_every_metric_named_is_documented_in_metrics_md():
    families = documented()
    names = set(re.findall(r"\bonechance_[a-z_]+\b", doc_text()))
    assert len(names) >= 10
    for name in names:
        family = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert family in families or name in families, f"{name} is not a metric of docs/metrics.md"


def _routes() -> set[str]:
    routes = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("add_get", "add_post") and node.args
                    and isinstance(node.args[0], ast.Constant)):
                routes.add(str(node.args[0].value))
    return routes


def test_every_route_named_exists():
    routes = _routes()
    named = set(re.findall(r"(?<![\w.:/])(/(?:api/[a-z]+|readyz|healthz|metrics|callbacks))\b", doc_text()))
    assert {"/readyz", "/metrics", "/api/alerts", "/api/calls", "/api/live", "/callbacks"} <= named
    assert named <= routes, named - routes


SETTING = re.compile(r"`((?:ami|http|database|journey|queues|demo|daemon|alerts|callbacks|report)\.[a-z_.<>\[\]]+)`")


@pytest.mark.parametrize("doc", ["troubleshooting.md", "install.md"])
def test_every_setting_named_is_in_the_configuration_reference(doc):
    keys = {e.key for t in tables() for e in t.entries}
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    named = set(SETTING.findall(text))
    assert named, doc
    for key in named:
        assert key in keys, f"{doc}: no setting {key}"


# ---- the same situations, for real ------------------------------------------------------------------------
def _json_block(after: str) -> dict[str, object]:
    """The first ```json block after the line containing ``after``."""
    text = doc_text()
    start = text.index("```json", text.index(after))
    body = text[start + len("```json"):text.index("```", start + 7)].strip()
    return json.loads(body if body.startswith("{") else "{" + body + "}")


def _shape(value: object) -> object:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__ if value is not None else None


def _numbers_out(text: str) -> str:
    return re.sub(r"\d+(?:\.\d+)?", "N", text)


def _doc_line(fragment: str) -> str:
    line = next(x for x in log_lines() if fragment in x)
    m = LOG_LINE.match(line)
    assert m
    return f"{m.group(1)} {m.group(2)}: {m.group(3)}"


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records]


async def test_a_refused_login_looks_as_documented(caplog):
    caplog.set_level("INFO")
    doc = _json_block("## Login refused")
    async with fake_pbx("answered") as pbx:
        pbx.secret = "not-the-daemons"
        async with running(settings_for([("main", pbx.port)])) as app:
            p = pipeline(app, "main")
            async with api_for(app) as api:
                await wait_until(lambda: p.link is not None and p.link.login_failures >= 1, what="a refused login")
                status, body = await api.get("/readyz")
    assert status == 503
    live_pbx, doc_pbx = body["pbx"]["main"], doc["pbx"]["main"]  # type: ignore[index]
    assert _shape(body) == _shape(doc)
    for key in ("state", "error", "ready", "resynced"):
        assert live_pbx[key] == doc_pbx[key], key
    assert body["reason"] == doc["reason"]
    documented_line = _numbers_out(_doc_line("AMI login refused"))
    assert documented_line in {_numbers_out(x) for x in _logged(caplog)}, _logged(caplog)


async def test_an_unreachable_pbx_looks_as_documented(caplog):
    caplog.set_level("INFO")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings_for([("main", port)])
    slow = settings.pbx[0].model_copy(update={"reconnect_min": 30.0, "reconnect_max": 60.0})  # stays down meanwhile
    async with running(settings.model_copy(update={"pbx": [slow]})) as app, api_for(app) as api:
        await wait_until(lambda: any("reconnecting in" in x for x in _logged(caplog)), what="a failed connect")
        status, body = await api.get("/readyz")
    assert status == 503
    assert body["pbx"]["main"]["state"] == "down" and body["reason"] == "main: connection refused"
    assert '"state": "down"' in doc_text()
    # the doc's lines, with its address for ours
    line = _doc_line("connection refused; reconnecting").replace("10.0.0.5:5038", f"127.0.0.1:{port}")
    assert _numbers_out(line) in {_numbers_out(x) for x in _logged(caplog)}, _logged(caplog)


async def test_an_unavailable_database_looks_as_documented(caplog, tmp_path):
    caplog.set_level("INFO")
    doc = _json_block("## The database is unavailable")["store"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+asyncpg://onechance:pw@127.0.0.1:{port}/onechance"
    async with fake_pbx("abandoned") as pbx:
        settings = settings_for([("main", pbx.port)], database={"url": url, "retry_interval": 0.2},
                                data_dir=str(tmp_path))
        async with running(settings) as app, api_for(app) as api:
            await wait_until(lambda: app.status.store is not None and app.status.store.status()["state"]
                             == "unavailable", what="the store unavailable")
            await wait_until(lambda: pipeline(app, "main").ready, what="ready")
            status, body = await api.get("/readyz")
            calls = await api.json("/api/calls")
    assert status == 503, body  # calls are followed, but journeys only reach the spool
    assert body["reason"].startswith("store: database unavailable ("), body
    assert body["reason"].endswith("): journeys go to the spool"), body
    assert _shape(body["store"]) == _shape(doc)
    assert body["store"]["state"] == doc["state"] == "unavailable"
    assert calls["partial"] is True
    logged = "\n".join(_logged(caplog))
    assert "WARNING onechance.store: database unavailable (" in logged
    assert f"journeys go to the spool in {tmp_path / 'spool'}; retrying every 0.2s" in logged


# ---- links: the installer's pages point to each other, and every link lands ------------------------------
def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


LINKED_PAGES = ["README.md", "docs/install.md", "docs/troubleshooting.md", "docs/configuration.md"]


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_every_relative_link_lands(page):
    path = ROOT / page
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"``.*?``|`[^`\n]*`", "", text)  # code is not a link (`[general](+)`)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"^[a-z]+:", link):
            continue  # http(s), mailto
        target, _, anchor = link.partition("#")
        dest = (path.parent / target).resolve() if target else path
        assert dest.exists(), f"{page}: {link}: no such file"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page}: {link}: no such heading in {dest.name}"


def test_readme_and_install_point_to_the_reference_and_troubleshooting():
    for page in ("README.md", "docs/install.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        assert "configuration.md" in text and "troubleshooting.md" in text, page
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{doc.name}" in readme, f"README.md does not link docs/{doc.name}"
