"""The shared captures, re-enacted: one script per capture of ``shared/ami-captures`` (also in ``tests/data``).

Each script gives the calls of a capture and every decision its people took (who answered after how
long, how the talk ended, transfers, a pickup, a key exit, a callback), so that the simulator plays the
same call on the same PBX (:meth:`~.model.SimConfig.default`, in the capture's style).  The tests compare
the result with the capture message by message; the demo can play them as well.

``local`` captures come from the PBX of ``pbx/`` (Local-channel agents, calls originated by a test
driver); ``sip`` captures from ``pbx-sip/`` (a carrier trunk and SIP phones).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .centre import Centre
from .model import SimConfig
from .script import Part, ScriptedCall

__all__ = ["CAPTURES", "CaptureScript", "capture_centre", "capture_config", "capture_script"]


@dataclass(frozen=True)
class CaptureScript:
    style: str
    start: float  # the capture's first Newchannel
    fresh: bool = False  # the capture's PBX had just started (its first queue state change is told)
    max_wait: dict[str, int] = dataclasses.field(default_factory=dict)  # queue -> timeout in the capture


#: every re-enacted capture: its style, start and PBX state
CAPTURES: dict[str, CaptureScript] = {
    "answered": CaptureScript("local", 1795368608.893490, fresh=True),
    "abandoned": CaptureScript("local", 1795368618.918820),
    "short_abandon": CaptureScript("local", 1795368630.933699),
    "ring_no_answer": CaptureScript("local", 1795368635.948389),
    "caller_hangs_up_in_talk": CaptureScript("local", 1795368657.990496),
    "queue_timeout": CaptureScript("local", 1795368747.415468, max_wait={"support": 8}),
    "join_empty": CaptureScript("local", 1795368758.433785),
    "direct_call": CaptureScript("local", 1795368760.444803),
    "blind_transfer": CaptureScript("local", 1795368666.013110),
    "bounced": CaptureScript("local", 1795368684.052969),
    "transfer_then_abandon": CaptureScript("local", 1795368707.106591),
    "attended_transfer": CaptureScript("local", 1795368721.133164),
    "abandon_then_callback": CaptureScript("local", 1795368780.501852),
    "sip_blind_refer": CaptureScript("sip", 1795657755.068583, fresh=True),
    "sip_attended_refer": CaptureScript("sip", 1795656244.791949),
    "call_pickup": CaptureScript("sip", 1795656601.847793),
    "exit_with_key": CaptureScript("sip", 1795656567.799878),
    "outbound_callback": CaptureScript("sip", 1795656360.640051),
    "outbound_callback_unanswered": CaptureScript("sip", 1795656495.351540),
}


def capture_script(name: str) -> list[ScriptedCall]:
    """The calls of capture ``name`` (new objects each time: a run consumes them)."""
    sc = ScriptedCall
    scripts: dict[str, list[ScriptedCall]] = {
        # ---- local ----
        "answered": [sc(0.0, "+3725550101", "Сергей Смирнов", "support", rr_after={"support": "103"},
                        rings={"101": [3]}, parts=[Part("operator", 4.5)])],
        "abandoned": [sc(0.0, "+3725550102", "Kati Kask", "support", rr_after={"support": "101"}, patience=9.0)],
        "short_abandon": [sc(0.0, "+3725550103", "Peeter Mets", "support", rr_after={"support": "103"},
                             patience=2.0)],
        "ring_no_answer": [sc(0.0, "+3725550104", "Liis Lepp", "support", rr_after={"support": "101"},
                              rings={"101": [2]}, parts=[Part("operator", 3.5)])],
        "caller_hangs_up_in_talk": [sc(0.0, "+79161234567", "Ольга Кузнецова", "support",
                                       rr_after={"support": "101"}, rings={"102": [2]},
                                       parts=[Part("caller", 3.0)])],
        "queue_timeout": [sc(0.0, "+3725550108", "Rein Rebane", "support", rr_after={"support": "101"})],
        "join_empty": [sc(0.0, "+3725550109", "Urmas Ots", "empty")],
        "direct_call": [sc(0.0, "+3725550110", "Mati Mägi", direct="201", rings={"201": [2]},
                           parts=[Part("operator", 3.5)])],
        "blind_transfer": [sc(0.0, "+3725550105", "Mart Saar", "support", rr_after={"support": "102"},
                              rings={"101": [1], "201": [2]},
                              parts=[Part("transfer", 2.0, "blind", "ami", "sales"), Part("operator", 3.5)])],
        "bounced": [sc(0.0, "+3725550106", "Tiina Tamm", "support", rr_after={"support": "101"},
                       rings={"102": [1], "201": [1], "301": [1], "101": [1]},
                       parts=[Part("transfer", 2.0, "blind", "ami", "sales"),
                              Part("transfer", 2.0, "blind", "ami", "billing"),
                              Part("transfer", 2.0, "blind", "ami", "support"), Part("ami", 3.0)])],
        "transfer_then_abandon": [sc(0.0, "+79031112233", "Андрей Волков", "support", rr_after={"support": "101"},
                                     rings={"102": [1]}, parts=[Part("transfer", 2.0, "blind", "ami", "sales")],
                                     patience=8.0)],
        "attended_transfer": [sc(0.0, "+3725550107", "Jaan Kivi", "support", rr_after={"support": "102"},
                                 rings={"101": [1], "301": [2]},
                                 parts=[Part("transfer", 2.0, "attended", "feature", "billing", consult_talk=2.0),
                                        Part("caller", 5.0)])],
        "abandon_then_callback": [sc(0.0, "+3725550111", "Helle Kuusk", "support", rr_after={"support": "101"},
                                     patience=7.003),
                                  sc(11.5, "+3725550111", "Helle Kuusk", "support", rings={"101": [2]},
                                     parts=[Part("operator", 3.5)])],
        # ---- sip ----
        "sip_blind_refer": [sc(0.0, "+3725550262", "Urmas Ott", "support", rr_after={"support": "103"},
                               rings={"101": [3], "201": [3], "202": [None]},
                               parts=[Part("transfer", 6.2, "blind", "phone", "sales"), Part("operator", 9.2)])],
        "sip_attended_refer": [sc(0.0, "+3725550231", "Mari Mets", "support", rr_after={"support": "101"},
                                  rings={"101": [3], "301": [2.5]},
                                  parts=[Part("transfer", 6.2, "attended", "phone", "billing", consult_talk=5.6,
                                              hold=2.2), Part("operator", 7.2)])],
        "call_pickup": [sc(0.0, "+3725550258", "Kalle Lepik", "support", rr_after={"support": "103"},
                           pickup=("102", 2.51), parts=[Part("operator", 8.19)])],
        "exit_with_key": [sc(0.0, "+79160001234", "Ольга Смирнова", "support", rr_after={"support": "101"},
                             key_at=8.504, voicemail=11.37)],
        "outbound_callback": [sc(0.0, "+3725550244", "Tiina Saar", "support", rr_after={"support": "101"},
                                 patience=10.006),
                              sc(36.04, "+3725550244", callback=("101", True, 4.007), parts=[Part(talk=6.0)])],
        "outbound_callback_unanswered": [sc(0.0, "+79160007788", "Пётр Кузнецов", "support",
                                            rr_after={"support": "102"}, patience=10.006),
                                         sc(36.045, "+79160007788", callback=("101", False, 22.2))],
    }
    return scripts[name]


def capture_config(name: str, **kw: object) -> SimConfig:
    """The PBX of capture ``name`` at the capture's time (``kw`` overrides, e.g. ``start``)."""
    cap = CAPTURES[name]
    cfg = SimConfig.default(style=cap.style, start=cap.start, uptime=15, fresh=cap.fresh)
    if cap.max_wait:
        cfg = dataclasses.replace(cfg, queues=tuple(dataclasses.replace(q, max_wait=cap.max_wait[q.name])
                                                    if q.name in cap.max_wait else q for q in cfg.queues))
    return dataclasses.replace(cfg, **kw).validate() if kw else cfg  # type: ignore[arg-type]


def capture_centre(name: str, **kw: object) -> Centre:
    """A :class:`Centre` that plays capture ``name``'s calls (``run(calls=len(capture_script(name)))``)."""
    return Centre(capture_config(name, **kw), script=capture_script(name))
