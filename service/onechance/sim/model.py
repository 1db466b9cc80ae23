"""What the simulated call centre is made of: queues, operators, callers, and how they behave.

Everything is a plain dataclass with defaults taken from the PBX of the shared captures (queues
``support`` (rrmemory), ``sales`` and ``billing`` (ringall), ``empty`` (no members, ``joinempty = no``),
member ring timeout 6 s, retry 1 s, ``Queue()`` timeout 120 s).  :func:`SimConfig.default` is that
PBX; :func:`SimConfig.large` builds a big one (many queues and operators) for benchmarks.
Bad values raise :class:`SimConfigError` with a one-line message.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

__all__ = [
    "STYLES",
    "Behaviour",
    "CallerPool",
    "OperatorSpec",
    "QueueSpec",
    "RateProfile",
    "SimConfig",
    "SimConfigError",
    "names_for",
]

#: PBX styles: "sip" (a PJSIP trunk, operators on SIP phones: pbx-sip/ of the captures) or "local"
#: (callers originated as Local channels, operators faked in the dialplan: pbx/ of the captures)
STYLES = ("sip", "local")


class SimConfigError(ValueError):
    """A simulator setting that cannot work.  The message is one line."""


# ---- people ---------------------------------------------------------------------------------------------
_FIRST_LAST: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "estonian": (("Mari", "Jaan", "Kati", "Peeter", "Liis", "Tiina", "Mart", "Rein", "Helle", "Urmas", "Ülle",
                  "Jüri", "Õie", "Ants", "Kärt", "Tõnu", "Mai", "Priit"),
                 ("Tamm", "Saar", "Kask", "Mägi", "Lepik", "Kuusk", "Ots", "Õunapuu", "Pärn", "Kõiv", "Rebane",
                  "Sepp", "Mets", "Kivi", "Lill", "Rätsep", "Käär", "Põld")),
    "latin": (("Jürgen", "Björn", "Anneliese", "Łukasz", "Zofia", "Małgorzata", "François", "Hélène", "Zoé",
               "José", "María", "Iñaki", "Seán", "Siobhán", "Dagný", "Søren", "Åsa", "Jiří", "Ömer", "Ştefan"),
              ("Müller", "Schäfer", "Groß", "Wójcik", "Kowalska", "Dąbrowska", "Lefèvre", "Dubois", "Mercier",
               "Núñez", "Peña", "Ibáñez", "O'Brien", "O'Connor", "Jónsdóttir", "Jørgensen", "Åström", "Dvořák",
               "Yılmaz", "Popescu")),
    "cyrillic": (("Сергей", "Ольга", "Дмитрий", "Мария", "Анна", "Пётр", "Наталья", "Алексей", "Олена", "Іван",
                  "Юлия", "Фёдор"),
                 ("Смирнов", "Кузнецова", "Орлов", "Иванова", "Петрова", "Соколов", "Шевченко", "Коваленко",
                  "Волкова", "Морозов", "Лебедева", "Зайцев")),
    "greek": (("Γιώργος", "Μαρία", "Ελένη", "Νίκος", "Κατερίνα", "Δημήτρης"),
              ("Παπαδόπουλος", "Νικολάου", "Γεωργίου", "Οικονόμου", "Βασιλείου", "Αθανασίου")),
    "cjk": (("伟", "娜", "敏", "静", "太郎", "花子", "민준", "서연"),
            ("王", "李", "张", "刘", "田中", "佐藤", "김", "박")),
    "arabic": (("محمد", "فاطمة", "أحمد", "ليلى", "عمر", "نور"), ("العلي", "الزهراء", "حسن", "منصور", "خليل", "سعيد")),
}
_SCRIPT_WEIGHTS = {"estonian": 5, "latin": 4, "cyrillic": 4, "greek": 1, "cjk": 1, "arabic": 1}


def names_for(rng: random.Random, script: str) -> str:
    """A full name in ``script`` (family name first for CJK, as written there)."""
    first, last = _FIRST_LAST[script]
    f, la = rng.choice(first), rng.choice(last)
    if script == "cjk":
        return f"{la}{f}" if len(la) == 1 and len(f) <= 2 and not ("가" <= f[0] <= "힣") else f"{la} {f}"
    return f"{f} {la}"


@dataclass(frozen=True)
class CallerPool:
    """The outside callers: how many distinct people, their names' scripts and their numbers' formats.

    Number formats: ``e164`` (``+3725551234``), ``intl`` (``003725551234``), ``national`` (``55512345``).
    Operators call back only ``e164`` numbers (the dialplan's ``_+X.`` pattern)."""

    size: int = 5000
    scripts: dict[str, float] = field(default_factory=lambda: dict(_SCRIPT_WEIGHTS))
    formats: dict[str, float] = field(default_factory=lambda: {"e164": 8.0, "intl": 1.0, "national": 1.0})

    def validate(self) -> None:
        if self.size < 1:
            raise SimConfigError("callers.size must be at least 1")
        if not self.scripts or any(s not in _FIRST_LAST for s in self.scripts):
            raise SimConfigError(f"callers.scripts: use some of {', '.join(sorted(_FIRST_LAST))}")
        if not self.formats or any(f not in ("e164", "intl", "national") for f in self.formats):
            raise SimConfigError("callers.formats: use some of e164, intl, national")


_COUNTRIES = (("372", "5", 7, "5", 4.0), ("7", "916", 7, "8916", 2.0), ("49", "151", 8, "0151", 1.0),
              ("358", "40", 7, "040", 1.0), ("30", "69", 8, "69", 0.5), ("86", "139", 8, "139", 0.5))


def make_person(rng: random.Random, pool: CallerPool, index: int) -> tuple[str, str]:
    """The ``index``-th caller of ``pool``: (number, name).  Deterministic for a seeded ``rng``."""
    script = _pick(rng, pool.scripts)
    name = names_for(rng, script)
    cc, prefix, digits, national, _w = _pick(rng, {c: c[4] for c in _COUNTRIES})
    body = f"{index % (10 ** digits):0{digits}d}"
    fmt = _pick(rng, pool.formats)
    if fmt == "e164":
        number = f"+{cc}{prefix}{body}"
    elif fmt == "intl":
        number = f"00{cc}{prefix}{body}"
    else:
        number = f"{national}{body}"
    return number, name


_K = TypeVar("_K")


def _pick(rng: random.Random, weights: Mapping[_K, float]) -> _K:
    """A key of ``weights``, drawn with those weights."""
    total = sum(weights.values())
    x = rng.random() * total
    for key, w in weights.items():
        x -= w
        if x < 0:
            return key
    return key


# ---- the PBX ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorSpec:
    """One operator: extension, member name, talk times and how reliably they answer.

    ``talk`` is the median talk time (seconds, log-normal with ``talk_spread``); ``answer_after`` the ring
    time before answering (uniform range, whole seconds as the phones of the captures); ``no_answer`` the
    chance to let a ring go unanswered (away from the desk, after-call work)."""

    ext: str
    name: str
    talk: float = 120.0
    talk_spread: float = 0.6
    answer_after: tuple[int, int] = (1, 5)
    no_answer: float = 0.1

    def validate(self) -> None:
        if not self.ext.isdigit() or len(self.ext) < 2:
            raise SimConfigError(f"operator {self.ext!r}: the extension must be two or more digits")
        if not self.name.strip():
            raise SimConfigError(f"operator {self.ext}: empty member name")
        if self.talk <= 0 or self.talk_spread < 0:
            raise SimConfigError(f"operator {self.ext}: talk must be > 0 and talk_spread >= 0")
        lo, hi = self.answer_after
        if lo < 0 or hi < lo:
            raise SimConfigError(f"operator {self.ext}: answer_after must be a range 0 <= lo <= hi")
        if not 0 <= self.no_answer < 1:
            raise SimConfigError(f"operator {self.ext}: no_answer must be in [0, 1)")


@dataclass(frozen=True)
class QueueSpec:
    """One queue (queues.conf) and the number that reaches it.

    ``members`` are operator extensions (``Local/EXT@agents/n`` interfaces); ``timeout`` is the member
    ring timeout, ``retry`` the pause between ring rounds, ``max_wait`` the ``Queue()`` timeout (120 s in
    the captures' dialplan; another value is set on the way in, as ``QTIMEOUT``), ``maxlen`` 0 for no
    limit; ``exit_key`` lets waiting callers leave by a key (``context=`` in queues.conf, sip style only);
    ``weight`` is the queue's share of inbound calls."""

    name: str
    members: tuple[str, ...] = ()
    strategy: str = "ringall"
    timeout: int = 6
    retry: int = 1
    max_wait: int = 120
    joinempty: bool = True
    maxlen: int = 0
    did: str = ""
    exit_key: bool = False
    weight: float = 1.0

    def validate(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name) or self.name[0].isdigit():
            raise SimConfigError(f"queue {self.name!r}: use letters, digits, '-' and '_', not starting with a digit")
        if self.strategy not in ("ringall", "rrmemory"):
            raise SimConfigError(f"queue {self.name}: strategy must be ringall or rrmemory")
        if self.timeout < 1 or self.retry < 0 or self.max_wait < 1 or self.maxlen < 0:
            raise SimConfigError(f"queue {self.name}: timeout, max_wait >= 1 and retry, maxlen >= 0")
        if self.did and not self.did.isdigit():
            raise SimConfigError(f"queue {self.name}: did must be digits")
        if self.weight < 0:
            raise SimConfigError(f"queue {self.name}: weight must be >= 0")


@dataclass(frozen=True)
class RateProfile:
    """Inbound calls per hour for each hour of the day (local time of ``SimConfig.start``), times ``scale``."""

    per_hour: tuple[float, ...] = (2, 1, 1, 1, 1, 2, 6, 20, 60, 90, 100, 95, 70, 80, 95, 90, 75, 50, 25, 12,
                                   8, 6, 4, 3)
    scale: float = 1.0
    utc_offset_hours: float = 0.0

    def validate(self) -> None:
        if len(self.per_hour) != 24 or any(r < 0 for r in self.per_hour) or not any(self.per_hour):
            raise SimConfigError("rate.per_hour must be 24 non-negative numbers, not all zero")
        if self.scale <= 0:
            raise SimConfigError("rate.scale must be > 0")

    def rate_at(self, epoch: float) -> float:
        """Calls per second at ``epoch`` (linear between hour midpoints)."""
        h = ((epoch / 3600.0) + self.utc_offset_hours) % 24.0
        i = int(h)
        frac = h - i
        a, b = self.per_hour[i], self.per_hour[(i + 1) % 24]
        return (a + (b - a) * frac) * self.scale / 3600.0

    @property
    def peak(self) -> float:
        return max(self.per_hour) * self.scale / 3600.0


@dataclass(frozen=True)
class Behaviour:
    """How callers and operators behave (probabilities are per call unless said otherwise).

    Patience (how long a caller waits before hanging up) is log-normal with median ``patience`` seconds;
    ``impatient`` of the callers hang up within ``short_patience`` seconds (short abandons).  After an
    answer the call ends by the caller (``caller_ends``) or the operator, or the operator transfers it
    (``transfer``: to another queue; ``attended_share`` of transfers attended; ``second_transfer`` the
    chance that a transferred call is transferred again, a bounce).  ``key_exit`` callers press 1 while
    waiting (queues with ``exit_key``); ``direct`` calls dial an operator's extension; ``refused`` calls go
    to a queue that refuses them (``QueueSpec.joinempty = False`` with no member, or full);
    ``ring_back``: a lost caller calls again within ``ring_back_after`` seconds; ``call_back``: an
    operator calls a lost caller back through the trunk (sip style), answered with ``call_back_answered``;
    ``pickup``: another operator's phone picks up a ringing call (sip style)."""

    patience: float = 60.0
    patience_spread: float = 0.8
    impatient: float = 0.05
    short_patience: tuple[float, float] = (1.0, 4.5)
    caller_ends: float = 0.5
    transfer: float = 0.12
    attended_share: float = 0.4
    second_transfer: float = 0.25
    key_exit: float = 0.04
    direct: float = 0.04
    refused: float = 0.01
    ring_back: float = 0.3
    ring_back_after: tuple[float, float] = (20.0, 600.0)
    call_back: float = 0.2
    call_back_after: tuple[float, float] = (20.0, 300.0)
    call_back_answered: float = 0.6
    pickup: float = 0.03
    transfer_methods: dict[str, float] = field(default_factory=lambda: {"phone": 3.0, "ami": 1.0})

    def validate(self) -> None:
        probs = ("impatient", "caller_ends", "transfer", "attended_share", "second_transfer", "key_exit",
                 "direct", "refused", "ring_back", "call_back", "call_back_answered", "pickup")
        for name in probs:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise SimConfigError(f"behaviour.{name} must be in [0, 1]")
        if self.patience <= 0 or self.patience_spread < 0:
            raise SimConfigError("behaviour.patience must be > 0 and patience_spread >= 0")
        for name in ("short_patience", "ring_back_after", "call_back_after"):
            lo, hi = getattr(self, name)
            if lo <= 0 or hi < lo:
                raise SimConfigError(f"behaviour.{name} must be a range 0 < lo <= hi")
        if self.short_patience[1] >= 5.0:
            raise SimConfigError("behaviour.short_patience must end below 5 s (the short-abandon threshold)")
        if not self.transfer_methods or any(m not in ("phone", "ami") for m in self.transfer_methods):
            raise SimConfigError("behaviour.transfer_methods: use phone and/or ami")

    def draw_patience(self, rng: random.Random) -> float:
        if rng.random() < self.impatient:
            return rng.uniform(*self.short_patience)
        return max(5.5, rng.lognormvariate(math.log(self.patience), self.patience_spread))


@dataclass(frozen=True)
class SimConfig:
    """One simulated PBX and its traffic."""

    seed: int = 0
    start: float = 1_800_000_000.0
    style: str = "sip"
    system_name: str = ""
    queues: tuple[QueueSpec, ...] = ()
    operators: tuple[OperatorSpec, ...] = ()
    rate: RateProfile = field(default_factory=RateProfile)
    callers: CallerPool = field(default_factory=CallerPool)
    behaviour: Behaviour = field(default_factory=Behaviour)
    rtcp: bool = True  # RTCPSent/RTCPReceived every 5 s on SIP channels in a call (sip style)
    uptime: float = 600.0  # seconds the PBX has been running at ``start`` (LoginTime of static members)
    fresh: bool = False  # just started: app_queue does not know yet whether each queue has a free member

    def validate(self) -> SimConfig:
        if self.style not in STYLES:
            raise SimConfigError(f"style must be one of {', '.join(STYLES)}, not {self.style!r}")
        if self.start < 1_000_000_000 or self.start > 4_000_000_000:
            raise SimConfigError("start must be an epoch in seconds (2001..2096)")
        if self.system_name and not all(c.isalnum() or c in "-_" for c in self.system_name):
            raise SimConfigError("system_name: letters, digits, '-' and '_' only")
        if not self.queues:
            raise SimConfigError("at least one queue is needed")
        ops: dict[str, OperatorSpec] = {}
        for op in self.operators:
            op.validate()
            if op.ext in ops:
                raise SimConfigError(f"operator {op.ext} is defined twice")
            ops[op.ext] = op
        names = set()
        dids = set()
        for q in self.queues:
            q.validate()
            if q.name in names:
                raise SimConfigError(f"queue {q.name} is defined twice")
            names.add(q.name)
            for ext in q.members:
                if ext not in ops:
                    raise SimConfigError(f"queue {q.name}: member {ext} is not an operator")
            if q.did:
                if q.did in dids or q.did in ops:
                    raise SimConfigError(f"queue {q.name}: number {q.did} is used twice")
                dids.add(q.did)
            if q.exit_key and self.style != "sip":
                raise SimConfigError(f"queue {q.name}: exit_key needs style sip")
        if not any(q.weight > 0 and (q.members or not q.joinempty) for q in self.queues):
            raise SimConfigError("no queue can take calls: give one a weight and members")
        self.rate.validate()
        self.callers.validate()
        self.behaviour.validate()
        return self

    def queue(self, name: str) -> QueueSpec:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)

    @classmethod
    def default(cls, **kw: object) -> SimConfig:
        """The PBX of the shared captures: support, sales, billing, empty; seven operators."""
        ops = (OperatorSpec("101", "Anna Tamm"), OperatorSpec("102", "Boris Petrov"),
               OperatorSpec("103", "Kadri Kuusk"), OperatorSpec("201", "Jüri Õunapuu"),
               OperatorSpec("202", "Дмитрий Орлов"), OperatorSpec("301", "Мария Иванова"),
               OperatorSpec("302", "Laura Lill"))
        queues = (QueueSpec("support", ("101", "102", "103"), "rrmemory", did="7001", weight=3.0,
                            exit_key=kw.get("style", "sip") == "sip"),
                  QueueSpec("sales", ("201", "202"), did="7002", weight=2.0),
                  QueueSpec("billing", ("301", "302"), did="7003", weight=1.5),
                  QueueSpec("empty", (), joinempty=False, did="7009", weight=0.0))
        cfg = cls(queues=queues, operators=ops)
        return replace(cfg, **kw).validate()  # type: ignore[arg-type]

    @classmethod
    def large(cls, queues: int = 60, operators_per_queue: int = 6, **kw: object) -> SimConfig:
        """A big centre for benchmarks: ``queues`` queues of ``operators_per_queue`` operators each (every
        fifth queue ringall, the rest rrmemory), names in every script."""
        rng = random.Random(1234)
        ops = []
        qs = []
        scripts = list(_FIRST_LAST)
        topics = ("support", "sales", "billing", "claims", "orders", "tech", "vip", "returns", "loans", "cards")
        langs = ("et", "en", "ru", "de", "fi", "lv", "lt", "pl", "fr", "es")
        ext = 1000
        for i in range(queues):
            members = []
            for _ in range(operators_per_queue):
                ext += 1
                ops.append(OperatorSpec(str(ext), names_for(rng, scripts[ext % len(scripts)]),
                                        talk=rng.uniform(60, 240), no_answer=rng.uniform(0.02, 0.15)))
                members.append(str(ext))
            name = f"{topics[i % len(topics)]}-{langs[(i // len(topics)) % len(langs)]}"
            if i >= len(topics) * len(langs):
                name += f"-{i}"
            qs.append(QueueSpec(name, tuple(members), "ringall" if i % 5 == 0 else "rrmemory",
                                did=str(70000 + i), weight=rng.uniform(0.5, 2.0)))
        cfg = cls(queues=tuple(qs), operators=tuple(ops))
        return replace(cfg, **kw).validate()  # type: ignore[arg-type]
