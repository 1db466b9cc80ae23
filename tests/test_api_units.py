"""The API's small pieces on their own: CSV cells safe from formula injection, cursors, content negotiation,
the bearer check, the parameter readers."""

from __future__ import annotations

import csv
import io

import pytest
from multidict import MultiDict

from onechance.api_calls import (
    csv_cell,
    decode_cursor,
    encode_cursor,
    iso,
    parse_filter,
    render_csv,
    wants_csv,
    with_iso,
)
from onechance.http import authorized
from onechance.params import BadRequest, multi, multi_bool, single
from onechance.replay import replay_files

from .storehelp import DATA


@pytest.mark.parametrize("text, cell", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+3725550111", "'+3725550111"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tcmd", "'\tcmd"),
    ("\rcmd", "'\rcmd"),
    ("Анна =1", "Анна =1"),
    ("3725550111", "3725550111"),
    ("", ""),
])
def test_text_a_spreadsheet_would_run_is_quoted(text, cell):
    assert csv_cell(text) == cell


def test_numbers_booleans_and_none_are_plain():
    assert [csv_cell(v) for v in (-1.5, 0, True, False, None)] == ["-1.5", "0", "true", "false", ""]


def test_a_hostile_caller_name_cannot_become_a_formula():
    (call,) = replay_files([str(DATA / "answered.ami")]).journeys
    hostile = dict(call.to_json())
    hostile["caller_name"] = '=cmd|" /C calc"!A0'
    hostile["caller"] = "@evil"
    (row,) = list(csv.DictReader(io.StringIO(render_csv([hostile]), newline="")))
    assert row["caller_name"] == "'" + hostile["caller_name"] and row["caller"] == "'@evil"


def test_iso_times_are_utc_with_milliseconds():
    assert iso(1795368792.013847) == "2026-11-22T17:33:12.013Z"
    assert iso(None) is None and iso(float("nan")) is None
    (call,) = replay_files([str(DATA / "answered.ami")]).journeys
    shown = with_iso(call.to_json())
    assert shown["started_at_iso"] == iso(call.started_at) and shown["ended_at_iso"] == iso(call.ended_at)
    assert {k: v for k, v in shown.items() if not k.endswith("_iso")} == call.to_json()


@pytest.mark.parametrize("key", [(1795368792.013847, "1795368792.100", "tartu"), (0.0, "", ""),
                                 (1e-9, "ä,=&?/#", "p b")])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_cursors_round_trip(order, key):
    cursor = encode_cursor(order, key)
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (order, key)


@pytest.mark.parametrize("cursor", ["", "!!", "e30", "WyJ1cCIsMSwiYSIsImIiXQ", "WyJhc2MiLCJ4IiwiYSIsImIiXQ",
                                    "WyJhc2MiLHRydWUsImEiLCJiIl0", "WyJhc2MiLDEsMiwiYiJd", "8J-Ygg"])
def test_anything_else_is_not_a_cursor(cursor):
    with pytest.raises(BadRequest, match=r"^cursor: "):
        decode_cursor(cursor)


def test_accept_picks_csv_only_when_preferred():
    assert wants_csv("text/csv") and wants_csv("text/csv, application/json;q=0.9") and wants_csv("text/*")
    assert not wants_csv("") and not wants_csv("*/*") and not wants_csv("application/json, text/csv")
    assert not wants_csv("text/csv;q=0") and not wants_csv("text/csv;q=zero, application/json")
    assert wants_csv("TEXT/CSV")


def test_the_bearer_check():
    token = b"s3cret"
    assert authorized("Bearer s3cret", token) and authorized("bearer s3cret", token)
    assert authorized("BEARER   s3cret ", token)
    for header in ("", "Bearer", "Bearer ", "s3cret", "Basic s3cret", "Bearer s3cre", "Bearer s3cret2",
                   "Bearers3cret", "Bearer s3cret extra", "Bearer \udcff"):
        assert not authorized(header, token), header


def test_parameters_read_the_same_way_everywhere():
    q = MultiDict([("queue", "a,b"), ("queue", " c "), ("queue", ""), ("lost", "true"), ("lost", "1")])
    assert multi(q, "queue") == ["a", "b", "c"] and multi(q, "none") == []
    assert multi_bool(q, "lost") is True
    assert multi_bool(MultiDict([("lost", "TRUE,0")]), "lost") is None
    assert single(MultiDict([("limit", " 5 ")]), "limit") == "5"
    with pytest.raises(BadRequest, match=r"^limit: give it once$"):
        single(MultiDict([("limit", "5"), ("limit", "6")]), "limit")
    flt = parse_filter(MultiDict([("outcome", "answered"), ("outcome", "abandoned,timeout"), ("pbx", "x")]))
    assert flt.outcomes == frozenset({"answered", "abandoned", "timeout"}) and flt.pbxs == frozenset({"x"})
    assert parse_filter(MultiDict([("caller", "5550111")]), "EE").callers == frozenset({"+3725550111"})
    assert parse_filter(MultiDict([("outcome", "")])).outcomes is None  # empty: no filter
