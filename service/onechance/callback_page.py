"""The callback page: ``/callbacks`` for on-call staff, its login, and the landing page ``/``.

Server-rendered (aiohttp-jinja2, autoescape on), plain HTML forms, no JavaScript needed (a few lines of plain
JS only hold the automatic refresh back while someone types).

=====================================  ===============================================================
``GET  /``                             the landing page: links to the page, the metrics, the API, the docs
``GET  /callbacks``                    who waits for a call back, oldest first; ``?queue=``, ``?pbx=``
``POST /callbacks/{id}/claim``         ``by``: who calls back (remembered in the ``oc_name`` cookie)
``POST /callbacks/{id}/note``          ``note``
``POST /callbacks/{id}/done``          ``reason`` (``reached`` | ``gave_up``), ``note`` (optional)
``POST /callbacks/{id}/call``          ``extension``: "call back now" (only with ``callbacks.originate``)
``GET  /login``, ``POST /login``       the token form (only when ``http.token`` is set)
``POST /logout``                       ends the session
``GET  /static/page.css|page.js``      the style sheet and the refresh script
=====================================  ===============================================================

Sessions.  When a token is configured the page asks for it once: ``POST /login`` compares it in constant time
and sets the ``oc_session`` cookie (``HttpOnly``, ``SameSite=Strict``, ``Path=/``, ``Secure`` over https,
``Max-Age`` = ``callbacks.session_hours``).  The cookie holds ``expiry.nonce.mac``: an HMAC-SHA256 of the
expiry and a random nonce under a key derived from the token -- never the token; changing the token ends every
session.  Without a token the page is open (like the API) and an anonymous session is handed out on the first
visit (under a key made at start): it only ties the forms to the browser.  The cookie never opens ``/api/*``
(bearer only).

Cross-site requests.  Every POST must come with a valid session and, except the login itself, a form field
``csrf`` = HMAC(key, session); an ``Origin`` (or, without one, ``Referer``) naming another host, or
``Sec-Fetch-Site: cross-site``, is refused.  Any failure: 403.  After a POST the browser is sent (303) back to
``/callbacks`` with a short signed message in the query string, so a refresh never submits again.

Everything a browser can send is answered with a page: an unknown entry or route 404, a wrong method 405, a
bad form value 400, a form larger than 16 KiB 413, bytes that are not UTF-8 400, a store that does not answer
503; never a 500 for a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from importlib import resources
from typing import Any, NoReturn, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .config import CallbacksSettings, ConfigError
from .worklist import Entry, NotFound, Worklist, WorklistError

__all__ = ["Originate", "OriginateLink", "add_callback_page", "originate_through"]

log = logging.getLogger("onechance.page")

SESSION_COOKIE = "oc_session"
NAME_COOKIE = "oc_name"
EXT_COOKIE = "oc_ext"
REMEMBER = 365 * 86400  # the name and extension cookies
MAX_FORM = 16 * 1024  # bytes of one form
MAX_FIELDS = 16
MAX_NAME = 128
MAX_NOTE = 2000
MAX_FLASH = 300
EXTENSION = re.compile(r"[0-9]{1,15}")
DIALLABLE = re.compile(r"\+?[0-9]{1,20}")
E164 = re.compile(r"\+[0-9]{3,20}")
ACTION_TIMEOUT = 15.0  # a store that does not answer must not hold a request
ORIGINATE_TIMEOUT = 45.0  # Asterisk rings the operator's phone up to 30 s (the action's Timeout) before it answers
CLOSED_WINDOW = 86400.0  # the "closed" section shows entries closed in the last 24 hours
CLOSED_SHOWN = 50
REVOKED_MAX = 10000
RESOLUTIONS = {
    "inbound": "called again and was answered",
    "outbound": "called back and answered",
    "expired": "expired: nobody closed it in time",
}
DONE_REASONS = {"reached": "reached", "gave_up": "gave up"}
STATIC = {"page.css": "text/css", "page.js": "text/javascript"}
PAGE_ENV = web.AppKey("onechance.page.jinja", jinja2.Environment)


class Originate(Protocol):
    """Have Asterisk on ``pbx`` ring ``channel`` (the operator's phone), then dial ``exten`` in ``context``."""

    def __call__(self, pbx: str, *, channel: str, context: str, exten: str,
                 caller_id: str) -> Awaitable[None]: ...


class OriginateLink(Protocol):
    async def originate(self, channel: str, context: str, exten: str, caller_id: str) -> None: ...


def originate_through(links: Mapping[str, OriginateLink]) -> Originate:
    """The "call back now" action over each PBX's AMI link (by the entry's PBX name)."""

    async def originate(pbx: str, *, channel: str, context: str, exten: str, caller_id: str) -> None:
        link = links.get(pbx)
        if link is None:
            raise LookupError(f"no AMI link to the PBX {pbx!r}")
        await link.originate(channel, context, exten, caller_id)

    return originate


class PageError(Exception):
    """A request the page refuses: rendered as an error page with ``status`` and the message."""

    def __init__(self, status: int, message: str, *, login: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.login = login  # offer the login link


def _refuse(status: int, message: str, *, login: bool = False) -> NoReturn:
    raise PageError(status, message, login=login)


# ---- text for people ----------------------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """``2 h 14 min``, ``3 d 4 h``, ``5 min``, ``less than a minute``."""
    s = int(max(0.0, seconds))
    if s < 60:
        return "less than a minute"
    minutes, hours, days = s // 60 % 60, s // 3600 % 24, s // 86400
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


def when(at: float | None, now: float) -> str:
    """A time in the server's local zone: ``today 17:30``, ``yesterday 09:05``, ``2026-11-22 17:30``."""
    if at is None:
        return ""
    t, today = time.localtime(at), time.localtime(now)
    clock = time.strftime("%H:%M", t)
    if t[:3] == today[:3]:
        return f"today {clock}"
    if time.localtime(now - 86400)[:3] == t[:3]:
        return f"yesterday {clock}"
    return time.strftime("%Y-%m-%d %H:%M", t)


def iso(at: float | None) -> str:
    return "" if at is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(at))


def dialled(number: str) -> str:
    """The number as dialled: without spaces."""
    return "".join(number.split())


def tel_href(entry: Entry) -> str | None:
    """``tel:`` with the ``+`` form when the number is known as one; None when it is no phone number."""
    if E164.fullmatch(entry.caller_key):
        return "tel:" + entry.caller_key
    number = dialled(entry.caller)
    return "tel:" + number if DIALLABLE.fullmatch(number) else None


def caller_id_for(entry: Entry) -> str:
    """The CallerID the operator's phone shows while it rings: letters, digits and a few marks of the name only
    (the name came from the caller's network: no quote, angle bracket or line break may reach the action)."""
    name = "".join(ch for ch in entry.caller_name if ch.isalnum() or ch in " .-'")
    name = " ".join(name.split())[:40]
    number = dialled(entry.caller)
    label = f"Callback {name}".strip() if name else "Callback"
    return f'"{label}" <{number}>' if DIALLABLE.fullmatch(number) else f'"{label}"'


def resolution_text(entry: Entry) -> str:
    if entry.resolution == "manual":
        return "marked done: " + DONE_REASONS.get(entry.done_reason or "", entry.done_reason or "done")
    return RESOLUTIONS.get(entry.resolution or "", entry.resolution or "closed")


def card(entry: Entry, now: float) -> dict[str, Any]:
    """What one entry shows (every text is escaped by the template)."""
    view = entry.view(now)
    return {
        "id": entry.id,
        "pbx": entry.pbx,
        "name": entry.caller_name,
        "number": dialled(entry.caller),
        "tel": tel_href(entry),
        "queue": entry.queue,
        "state": view["state"],
        "lost_count": view["lost_count"],
        "waiting": duration(view["waiting_seconds"]),
        "first_lost": when(entry.first_lost_at, now),
        "first_lost_iso": iso(entry.first_lost_at),
        "last_lost": when(entry.last_lost_at, now) if view["lost_count"] > 1 else "",
        "attempts": [{"at": when(a["at"], now), "at_iso": iso(a["at"]), "by": a["by"] or "someone",
                      "answered": a["answered"]} for a in view["attempts"]],
        "claimed_by": entry.claimed_by,
        "claimed_since": when(entry.claimed_at, now),
        "claimed_for": duration(now - entry.claimed_at) if entry.claimed_at else "",
        "note": entry.note,
        "closed": when(entry.closed_at, now),
        "resolution": resolution_text(entry),
        "diallable": DIALLABLE.fullmatch(dialled(entry.caller)) is not None,
    }


# ---- sessions ---------------------------------------------------------------------------------------------
class Sessions:
    """Signed, expiring session values (stateless but for logged-out nonces), the forms' CSRF tokens and the
    flash messages' signatures; all under one key derived from the token (or made at start without one)."""

    def __init__(self, token: str | None, hours: float, clock: Callable[[], float] = time.time) -> None:
        secret = token.encode("utf-8") if token is not None else secrets.token_bytes(32)
        self._key = hmac.new(secret, b"onechance callback page session v1", hashlib.sha256).digest()
        self._token_digest = hashlib.sha256(secret).digest() if token is not None else None
        self.login_required = token is not None
        self.lifetime = int(hours * 3600) or 1
        self._clock = clock
        self._revoked: dict[str, int] = {}  # nonce -> expiry of sessions logged out

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self._key, f"{purpose}\0{text}".encode(), hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        if self._token_digest is None:
            return False
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def new(self) -> str:
        expiry = int(self._clock()) + self.lifetime
        body = f"{expiry}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._mac('session', body)}"

    def valid(self, value: str | None) -> str | None:
        """The session value when it is ours, unexpired and not logged out, else None."""
        if not value or len(value) > 200:
            return None
        expiry, _sep, rest = value.partition(".")
        nonce, _sep, mac = rest.partition(".")
        if not expiry.isdigit() or not nonce or not mac:
            return None
        if not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"),
                                   self._mac("session", f"{expiry}.{nonce}").encode()):
            return None
        if int(expiry) <= self._clock() or nonce in self._revoked:
            return None
        return value

    def revoke(self, value: str) -> None:
        expiry, _sep, rest = value.partition(".")
        now = self._clock()
        for nonce in [n for n, exp in self._revoked.items() if exp <= now]:
            del self._revoked[nonce]
        if len(self._revoked) < REVOKED_MAX:
            self._revoked[rest.partition(".")[0]] = int(expiry)

    def csrf(self, session: str) -> str:
        return self._mac("csrf", session)

    def csrf_ok(self, session: str, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.csrf(session).encode())

    def sign(self, message: str) -> str:
        return self._mac("flash", message)[:32]

    def signed(self, message: str, signature: str) -> bool:
        return hmac.compare_digest(signature.encode("utf-8", "surrogateescape"), self.sign(message).encode())


# ---- requests -------------------------------------------------------------------------------------------
def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site (Origin, Referer, Sec-Fetch-Site)."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return False
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if source is None:
        return True  # no header (an old browser, a script): the CSRF token decides
    try:
        netloc = urlsplit(source).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == request.host.lower()


async def read_form(request: web.Request) -> dict[str, str]:
    """A urlencoded form of at most :data:`MAX_FORM` bytes, UTF-8, each field once."""
    if request.content_type != "application/x-www-form-urlencoded":
        _refuse(400, "expected a form (application/x-www-form-urlencoded)")
    if request.charset and request.charset.lower() not in ("utf-8", "utf8"):
        _refuse(400, "the form must be sent as UTF-8")
    if request.content_length is not None and request.content_length > MAX_FORM:
        _refuse(413, f"the form is larger than {MAX_FORM // 1024} KiB")
    body = await request.read()  # read whole by the HTTP front already, within http.max_body_size
    if len(body) > MAX_FORM:
        _refuse(413, f"the form is larger than {MAX_FORM // 1024} KiB")
    try:
        pairs = parse_qsl(bytes(body).decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        _refuse(400, "the form is not valid UTF-8")
    except ValueError:
        _refuse(400, f"the form has more than {MAX_FIELDS} fields")
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            _refuse(400, f"the form field {key[:40]!r} is given twice")
        form[key] = value
    return form


def query_text(request: web.Request, name: str, limit: int = 200) -> str | None:
    """A query parameter (None when absent or empty); 400 when it is not UTF-8 or too long."""
    raw = request.rel_url.raw_query_string
    if not raw:
        return None
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=32)
    except UnicodeDecodeError:
        _refuse(400, "the address is not valid UTF-8")
    except ValueError:
        _refuse(400, "the address has too many parameters")
    for key, value in pairs:
        if key == name:
            if len(value) > limit:
                _refuse(400, f"{name}: longer than {limit} characters")
            return value or None
    return None


def field(form: Mapping[str, str], name: str, label: str, limit: int, *, required: bool) -> str:
    value = form.get(name, "").strip()
    if required and not value:
        _refuse(400, f"{label}: this field is required")
    if len(value) > limit:
        _refuse(400, f"{label}: at most {limit} characters")
    return value


def remembered(request: web.Request, name: str, limit: int) -> str:
    value = unquote(request.cookies.get(name, ""), errors="replace")
    return "".join(ch for ch in value if ch.isprintable())[:limit]


# ---- the page -------------------------------------------------------------------------------------------
class CallbackPage:
    """The handlers of the page; one per application (no module state)."""

    def __init__(self, worklist: Worklist, *, token: str | None, settings: CallbacksSettings,
                 originate: Originate | None, version: str) -> None:
        self.worklist = worklist
        self.settings = settings
        self.originate = originate
        self.version = version
        self.sessions = Sessions(token, settings.session_hours, worklist.now)
        if originate is not None:
            check_channel(settings.originate_channel)
        files = resources.files("onechance").joinpath("templates", "static")
        self.static_files = {name: files.joinpath(name).read_text("utf-8") for name in STATIC}

    # ---- rendering ----
    def render(self, request: web.Request, template: str, context: dict[str, Any], status: int = 200,
               session: str | None = None) -> web.Response:
        ctx = {"version": self.version, "login_required": self.sessions.login_required, "session": session,
               "csrf": self.sessions.csrf(session) if session else "", **context}
        response = aiohttp_jinja2.render_template(template, request, ctx, app_key=PAGE_ENV, status=status)
        secure_headers(response)
        return response

    def error_page(self, request: web.Request, status: int, message: str, *, login: bool = False,
                   headers: Mapping[str, str] | None = None) -> web.Response:
        response = self.render(request, "error.html", {"status": status, "reason": web_reason(status),
                                                       "message": message, "offer_login": login}, status)
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def set_session(self, request: web.Request, response: web.StreamResponse, value: str) -> None:
        response.set_cookie(SESSION_COOKIE, value, max_age=self.sessions.lifetime, path="/", httponly=True,
                            samesite="Strict", secure=request.secure)

    def remember(self, request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
        response.set_cookie(name, quote(value, safe=""), max_age=REMEMBER, path="/callbacks", httponly=True,
                            samesite="Strict", secure=request.secure)

    def back(self, filters: Mapping[str, str], message: str, anchor: str = "") -> web.Response:
        """303 to the list (keeping its filter), with a signed message."""
        message = message[:MAX_FLASH]
        params = {**filters, "msg": message, "sig": self.sessions.sign(message)}
        return web.Response(status=303, headers={"Location": f"/callbacks?{urlencode(params)}{anchor}",
                                                 "Cache-Control": "no-store"})

    def session_of(self, request: web.Request) -> str | None:
        return self.sessions.valid(request.cookies.get(SESSION_COOKIE))

    def checked_post(self, request: web.Request) -> str:
        """The session of a POST that comes from our own page (else 403)."""
        if not same_origin(request):
            _refuse(403, "refused: this request comes from another site")
        session = self.session_of(request)
        if session is None:
            _refuse(403, "your session has expired or cookies are off: open the page again"
                    + (" and log in" if self.sessions.login_required else ""), login=self.sessions.login_required)
        return session

    def check_csrf(self, session: str, form: Mapping[str, str]) -> None:
        if not self.sessions.csrf_ok(session, form.get("csrf", "")):
            _refuse(403, "refused: the form is not from this page (or it is too old): open the page again")

    # ---- handlers ----
    async def index(self, request: web.Request) -> web.Response:
        return self.render(request, "index.html", {"token_set": self.sessions.login_required})

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            _refuse(404, "no such file")
        return web.Response(text=self.static_files[name], content_type=STATIC[name], charset="utf-8",
                            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})

    async def list_page(self, request: web.Request) -> web.Response:
        session = self.session_of(request)
        fresh = None
        if session is None:
            if self.sessions.login_required:
                return web.Response(status=303, headers={"Location": "/login", "Cache-Control": "no-store"})
            session = fresh = self.sessions.new()
        queue, pbx = query_text(request, "queue"), query_text(request, "pbx")
        message, signature = query_text(request, "msg", 2 * MAX_FLASH), query_text(request, "sig")
        flash = message if message and signature and self.sessions.signed(message, signature) else None
        now = self.worklist.now  # each entry's waits in its own PBX's clock
        waiting = self.worklist.entries(("waiting", "claimed"), queue, pbx)
        closed = [e for e in self.worklist.entries(("done",), queue, pbx)
                  if (e.closed_at or 0.0) >= now(e.pbx) - CLOSED_WINDOW]
        closed.sort(key=lambda e: (e.closed_at or 0.0, e.id), reverse=True)
        everything = self.worklist.entries(("waiting", "claimed", "done"))
        queues = sorted({*self.worklist.queue_names(), *(e.queue for e in everything)} - {""})
        pbxs = sorted({e.pbx for e in everything})
        filters = {k: v for k, v in (("queue", queue), ("pbx", pbx)) if v}
        suffix = f"?{urlencode(filters)}" if filters else ""
        oldest = duration(now(waiting[0].pbx) - waiting[0].first_lost_at) if waiting else ""
        response = self.render(request, "callbacks.html", {
            "entries": [card(e, now(e.pbx)) for e in waiting],
            "closed": [card(e, now(e.pbx)) for e in closed[:CLOSED_SHOWN]],
            "closed_total": len(closed),
            "oldest": oldest,
            "flash": flash,
            "queue": queue or "",
            "pbx": pbx or "",
            "queues": queues,
            "pbxs": pbxs,
            "suffix": suffix,
            "refresh": self.settings.page_refresh,
            "refresh_url": "/callbacks" + suffix,
            "name": remembered(request, NAME_COOKIE, MAX_NAME),
            "extension": remembered(request, EXT_COOKIE, 15),
            "originate": self.originate is not None,
            "now": when(self.worklist.now(), self.worklist.now()),
        }, session=session)
        if fresh is not None:
            self.set_session(request, response, fresh)
        return response

    async def act(self, request: web.Request) -> web.Response:
        filters = {k: v for k in ("queue", "pbx") if (v := query_text(request, k))}  # checked before acting
        session = self.checked_post(request)
        form = await read_form(request)
        self.check_csrf(session, form)
        entry_id, action = request.match_info["id"], request.match_info["action"]
        try:
            entry = self.worklist.get(entry_id)
        except NotFound:
            _refuse(404, "no such caller on the worklist (closed more than a day ago, or never there)")
        anchor = f"#e-{entry.id}"
        remember: tuple[str, str] | None = None
        try:
            if action == "claim":
                by = field(form, "by", "Your name", MAX_NAME, required=True)
                await self._bounded(self.worklist.claim(entry.id, by))
                message, remember = f"Claimed by {by}.", (NAME_COOKIE, by)
            elif action == "note":
                note = field(form, "note", "Note", MAX_NOTE, required=False)
                await self._bounded(self.worklist.note(entry.id, note))
                message = "Note saved." if note else "Note removed."
            elif action == "done":
                reason = form.get("reason", "")
                if reason not in DONE_REASONS:
                    _refuse(400, "Result: choose reached or gave up")
                note = field(form, "note", "Note", MAX_NOTE, required=False)
                await self._bounded(self.worklist.done(entry.id, reason, note or None))
                message, anchor = f"Done ({DONE_REASONS[reason]}).", ""
            else:  # "call": the route exists only with an originate callable
                extension = form.get("extension", "").strip()
                if not EXTENSION.fullmatch(extension):
                    _refuse(400, "Your extension: digits only, 1 to 15 of them")
                message, remember = await self._call(entry, extension), (EXT_COOKIE, extension)
        except WorklistError as exc:  # e.g. closed meanwhile by someone else or by a call
            message = f"Not done: {exc}"
        response = self.back(filters, message, anchor)
        if remember is not None:
            self.remember(request, response, *remember)
        return response

    async def _call(self, entry: Entry, extension: str) -> str:
        """Asterisk rings ``extension`` (digits, checked), then dials the caller's number (checked)."""
        assert self.originate is not None
        if not entry.open:
            raise WorklistError("this caller is no longer waiting")
        number = dialled(entry.caller)
        if not DIALLABLE.fullmatch(number):
            return "Not called: this caller's number cannot be dialled from here."
        try:
            await self._bounded(self.originate(
                entry.pbx, channel=self.settings.originate_channel.format(extension=extension),
                context=self.settings.originate_context, exten=number, caller_id=caller_id_for(entry)),
                ORIGINATE_TIMEOUT)
        except PageError:
            raise
        except TimeoutError:
            return ("The PBX has not confirmed the call yet: if your phone rings, answer it and the PBX dials the "
                    "caller; else try again.")
        except Exception as exc:
            log.warning("call back now through PBX %s failed: %s", entry.pbx, one_line(exc))
            return f"Not called: {one_line(exc)}"
        return f"Calling your phone ({extension}): answer it and the PBX dials the caller."

    async def _bounded(self, work: Awaitable[Any], limit: float = ACTION_TIMEOUT) -> Any:
        bound = asyncio.timeout(limit)
        try:
            async with bound:
                return await work
        except TimeoutError:
            if bound.expired():  # our own limit (a TimeoutError of the work itself passes)
                _refuse(503, f"no answer within {limit:g} s (the store or the PBX): try again")
            raise

    async def login_form(self, request: web.Request) -> web.Response:
        if not self.sessions.login_required or self.session_of(request) is not None:
            return web.Response(status=303, headers={"Location": "/callbacks"})
        return self.render(request, "login.html", {"error": None})

    async def login(self, request: web.Request) -> web.Response:
        if not self.sessions.login_required:
            return web.Response(status=303, headers={"Location": "/callbacks"})
        if not same_origin(request):
            _refuse(403, "refused: this request comes from another site")
        form = await read_form(request)
        if not self.sessions.token_ok(form.get("token", "")):
            log.info("page login refused: wrong token")
            return self.render(request, "login.html", {"error": "That is not the token."}, status=403)
        response = web.Response(status=303, headers={"Location": "/callbacks", "Cache-Control": "no-store"})
        self.set_session(request, response, self.sessions.new())
        return response

    async def logout(self, request: web.Request) -> web.Response:
        session = self.checked_post(request)
        self.check_csrf(session, await read_form(request))
        self.sessions.revoke(session)
        target = "/login" if self.sessions.login_required else "/"
        response = web.Response(status=303, headers={"Location": target, "Cache-Control": "no-store"})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    @web.middleware
    async def errors(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Every page answer is a page: refusals, unknown routes, wrong methods, too large bodies."""
        if request.path.startswith("/api/"):
            return await handler(request)
        try:
            return await handler(request)
        except PageError as exc:
            return self.error_page(request, exc.status, exc.message, login=exc.login)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            message = {404: "there is no such page here", 405: "this address does not take that method",
                       413: "the request is too large"}.get(exc.status, exc.reason)
            return self.error_page(request, exc.status, message, headers=allow)
        except Exception:
            log.exception("the callback page failed on %s %s", request.method, request.path)
            return self.error_page(request, 500, "something went wrong on our side; it is in the log")


def web_reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def secure_headers(response: web.StreamResponse) -> None:
    response.headers.update({
        "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    })


def check_channel(template: str) -> None:
    """``callbacks.originate_channel`` must take ``{extension}`` and nothing else (a configuration error)."""
    try:
        channel = template.format(extension="100")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"callbacks.originate_channel {template!r}: use {{extension}} as the only "
                          f"placeholder, e.g. PJSIP/{{extension}} ({one_line(exc)})") from None
    if "{extension}" not in template or not channel.isprintable() or not channel.strip():
        raise ConfigError(f"callbacks.originate_channel {template!r}: must contain {{extension}}, e.g. "
                          "PJSIP/{extension}")


def add_callback_page(app: web.Application, worklist: Worklist, *, token: str | None, settings: CallbacksSettings,
                      originate: Originate | None = None, version: str = "") -> None:
    """Add ``/``, ``/callbacks``, the login and the static files to ``app`` (before it starts).  ``token``: the
    API token (the page then asks for it once); ``originate``: the "call back now" action, given only when
    ``callbacks.originate`` is on.  Raises :class:`ConfigError` for an unusable ``originate_channel``."""
    page = CallbackPage(worklist, token=token, settings=settings, originate=originate, version=version)
    aiohttp_jinja2.setup(app, app_key=PAGE_ENV, default_helpers=False,
                         loader=jinja2.PackageLoader("onechance", "templates"),
                         autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    app.middlewares.append(page.errors)
    actions = "claim|note|done|call" if originate is not None else "claim|note|done"
    app.router.add_get("/", page.index)
    app.router.add_get("/callbacks", page.list_page)
    app.router.add_post(r"/callbacks/{id}/{action:" + actions + "}", page.act)
    app.router.add_get("/login", page.login_form)
    app.router.add_post("/login", page.login)
    app.router.add_post("/logout", page.logout)
    app.router.add_get("/static/{name}", page.static)
