"""The on-disk spool: order, durability across reopening, crash leftovers, one owner at a time."""

from __future__ import annotations

import json
import resource
import signal

import pytest

from onechance.store import Spool, SpoolError


def j(n: int) -> dict:
    return {"call_id": f"c{n}", "pbx": "", "updated_at": float(n), "caller_name": "Jüri Õunapuu"}


def drain(spool: Spool, size: int = 7) -> list[dict]:
    out = []
    while (batch := spool.read(size)) is not None:
        out.extend(batch.journeys)
        spool.commit(batch)
    return out


def test_journeys_come_back_in_the_order_they_were_spooled(tmp_path):
    spool = Spool(tmp_path, segment_bytes=300)  # several segments
    spool.open()
    for n in range(0, 50, 5):
        spool.append([j(k) for k in range(n, n + 5)])
    assert spool.journeys == 50
    assert len(list(tmp_path.glob("spool-*.jsonl"))) > 3
    assert drain(spool) == [j(k) for k in range(50)]
    assert spool.journeys == 0 and spool.nbytes == 0
    assert list(tmp_path.glob("spool-*.jsonl")) == []
    spool.close()


def test_appending_while_draining_keeps_the_order(tmp_path):
    spool = Spool(tmp_path)
    spool.open()
    spool.append([j(1), j(2), j(3)])
    batch = spool.read(2)
    spool.append([j(4)])  # goes to a new segment: the one being read is sealed
    spool.commit(batch)
    assert drain(spool) == [j(3), j(4)]
    spool.close()


def test_an_uncommitted_batch_is_read_again(tmp_path):
    spool = Spool(tmp_path)
    spool.open()
    spool.append([j(1), j(2)])
    assert spool.read(10).journeys == [j(1), j(2)]  # the database failed: no commit
    assert spool.read(10).journeys == [j(1), j(2)]
    spool.close()


def test_the_spool_survives_reopening(tmp_path):
    spool = Spool(tmp_path)
    spool.open()
    spool.append([j(1), j(2), j(3)])
    batch = spool.read(1)
    spool.commit(batch)
    spool.close()  # a restart: what was committed in the partly read segment may come back (harmless)
    again = Spool(tmp_path)
    again.open()
    assert again.journeys == 3
    assert drain(again) == [j(1), j(2), j(3)]
    again.close()


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    good = json.dumps(j(1)).encode() + b"\n"
    (tmp_path / "spool-000000000001.jsonl").write_bytes(good + good.replace(b"c1", b"c2")[:20])
    spool = Spool(tmp_path)
    spool.open()
    assert spool.journeys == 1
    spool.append([j(3)])  # never appended to the damaged segment
    assert drain(spool) == [j(1), j(3)]
    spool.close()


def test_a_line_that_is_not_json_goes_to_rejected(tmp_path):
    good = json.dumps(j(1)).encode() + b"\n"
    (tmp_path / "spool-000000000001.jsonl").write_bytes(good + b"{garbage\n" + good.replace(b"c1", b"c2"))
    spool = Spool(tmp_path)
    spool.open()
    assert [x["call_id"] for x in drain(spool)] == ["c1", "c2"]
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [{"reason": "not valid JSON in the spool", "journey": "{garbage"}]
    spool.close()


def test_one_process_at_a_time(tmp_path):
    first = Spool(tmp_path)
    first.open()
    second = Spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another onechance process"):
        second.open()
    first.close()
    second.open()
    second.close()


def test_an_unusable_directory_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match=r"spool directory .*file/spool"):
        Spool(tmp_path / "file" / "spool").open()


def test_a_write_the_disk_refused_halfway_never_damages_later_journeys(tmp_path):
    """The disk fills up in the middle of an append (here: a file size limit, EFBIG): that append
    fails (its journeys stay in the writer's memory), and what is appended once there is room again
    reads back intact, not glued to a torn line."""
    def big(n: int) -> dict:
        return dict(j(n), padding="x" * 20000)  # larger than a write buffer: written partly

    spool = Spool(tmp_path)
    spool.open()
    spool.append([big(1)])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (spool.nbytes + 30000, hard))
    try:
        with pytest.raises(SpoolError, match="cannot write the spool"):
            spool.append([big(2), big(3)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert spool.journeys == 1
    spool.append([big(4)])
    assert spool.journeys == 2
    assert [x["call_id"] for x in drain(spool)] == ["c1", "c4"]
    assert not (tmp_path / "rejected.jsonl").exists()
    assert list(tmp_path.glob("spool-*.jsonl")) == []
    spool.close()
