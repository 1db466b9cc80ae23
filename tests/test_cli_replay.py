"""`onechance replay`: the JSON contract, the table, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

from .truthcheck import DATA, check_truth, load_truth

CLI = [sys.executable, "-m", "onechance.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, encoding="utf-8", timeout=120)


def test_json_lines_follow_the_contract():
    r = run_cli("replay", str(DATA / "bounced.ami"), str(DATA / "join_empty.ami"), "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    objs = [json.loads(line) for line in lines]
    assert len(objs) == 2
    required = {"call_id", "caller", "caller_name", "started_at", "ended_at", "outcome", "short_abandon",
                "queues", "operators", "transfers", "wait_seconds", "talk_seconds", "bounced", "alerts",
                "recovered"}
    for o in objs:
        assert required <= set(o)
        for q in o["queues"]:
            assert {"queue", "wait_seconds", "result", "operator"} <= set(q)
        for t in o["transfers"]:
            assert {"kind", "from", "to"} <= set(t)
    assert objs[0]["started_at"] <= objs[1]["started_at"]
    assert check_truth(load_truth("bounced"), objs[:1]) == []
    assert check_truth(load_truth("join_empty"), objs[1:]) == []
    assert "Мария Иванова" in r.stdout  # not \u-escaped


def test_table_for_people():
    r = run_cli("replay", str(DATA / "transfer_then_abandon.ami"))
    assert r.returncode == 0
    assert "abandoned" in r.stdout and "support > sales" in r.stdout and "Андрей Волков" in r.stdout
    assert "1 calls" in r.stdout


def test_missing_file(tmp_path):
    r = run_cli("replay", str(tmp_path / "nope.ami"))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
    assert r.stdout == ""


def test_not_an_ami_stream(tmp_path):
    p = tmp_path / "x.ami"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10)
    r = run_cli("replay", str(p), "--json")
    assert r.returncode == 1
    assert "not an AMI stream" in r.stderr and "Traceback" not in r.stderr
    empty = tmp_path / "empty.ami"
    empty.write_bytes(b"")
    assert run_cli("replay", str(empty)).returncode == 1


def test_truncated_stream(tmp_path):
    raw = (DATA / "answered.ami").read_bytes()
    p = tmp_path / "cut.ami"
    p.write_bytes(raw[: len(raw) // 2 + 7])
    r = run_cli("replay", str(p), "--json")
    assert r.returncode == 1
    assert "truncated" in r.stderr and "Traceback" not in r.stderr


def test_directory_is_a_clean_error(tmp_path):
    r = run_cli("replay", str(tmp_path))
    assert r.returncode == 1 and "directory" in r.stderr


def test_a_capture_without_timestamps_is_replayed_with_a_warning(tmp_path):
    raw = (DATA / "answered.ami").read_bytes()
    lines = [line for line in raw.split(b"\r\n") if not line.startswith(b"Timestamp: ")]
    p = tmp_path / "untimed.ami"
    p.write_bytes(b"\r\n".join(lines))
    r = run_cli("replay", str(p), "--json")
    assert r.returncode == 0
    assert "timestampevents" in r.stderr
    (call,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert call["outcome"] == "answered" and call["operators"] == ["Anna Tamm"]
    assert "timestampevents" not in run_cli("replay", str(DATA / "answered.ami")).stderr


def test_replay_store_judges_calls_with_the_configured_rules(tmp_path, monkeypatch, capsys):
    """``[queues.support] short_abandon_seconds = 1``: the 2 s abandon of short_abandon.ami is not short, so it
    is a lost caller, as the daemon with the same configuration stores it (replay --store used to ignore
    [journey] and [queues.*] and stored it short and not lost, off the callback worklist)."""
    import sqlite3

    from onechance.cli import main

    conf = tmp_path / "onechance.toml"
    conf.write_text("[queues.support]\nshort_abandon_seconds = 1\n", encoding="utf-8")
    monkeypatch.delenv("ONECHANCE_CONFIG", raising=False)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data"))
    assert main(["replay", str(DATA / "short_abandon.ami"), "--store", "--json", "--config", str(conf)]) == 0
    (printed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed["short_abandon"] is False and printed["lost"] is True and printed["alerts"] == ["abandoned"]
    with sqlite3.connect(tmp_path / "data" / "onechance.db") as db:
        assert db.execute("SELECT short_abandon, lost FROM calls").fetchall() == [(0, 1)]
    # without the rule, the default 5 s threshold makes it short (and not lost)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data2"))
    assert main(["replay", str(DATA / "short_abandon.ami"), "--store", "--json"]) == 0
    (printed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed["short_abandon"] is True and printed["lost"] is False
