"""The quick version of ``bench/fuzz.py`` (issue 12): the same harness (``tests/fuzzhelp.py``: inputs and invariants)
run by atheris for a few thousand coverage-guided inputs in a subprocess, and by hypothesis; and the invariant checks
themselves shown to catch what they are meant to catch."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onechance.replay import replay_files

from .fuzzhelp import (
    CAPTURES,
    MAX_WINDOW,
    Corpus,
    Harness,
    InvariantError,
    blocks,
    check_record,
    raw_input,
    seeds,
    structured_input,
)

ROOT = Path(__file__).resolve().parent.parent
RUNS = 2000


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


def figure(out: str, name: str) -> str:
    m = re.search(rf"^fuzz: {re.escape(name)}: (.*)$", out, re.M)
    assert m, f"no '{name}' figure in:\n{out[-3000:]}"
    return m[1]


def test_atheris_runs_the_harness_over_a_few_thousand_inputs_without_a_crash(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), f"--runs={RUNS}", "--max-seconds=300", "--quiet",
         f"--keep={tmp_path}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert figure(out, "crashes") == "0"
    assert int(figure(out, "runs")) == RUNS  # the time limit is far: every input ran
    assert float(figure(out, "exec/s").split()[0]) > 0
    cov = re.fullmatch(r"(\d+) edges \(cov\), (\d+) features \(ft\), corpus (\d+) inputs", figure(out, "coverage"))
    assert cov, out[-2000:]
    edges, features, corpus = map(int, cov.groups())
    # instrumented: the seeds alone reach several hundred edges of the framer and the tracker, and the fuzzer
    # keeps inputs that reach more
    assert edges > 500 and features > edges and corpus > 0
    assert 0 < float(figure(out, "peak RSS").split()[0]) < 1024
    rss = re.search(r"growth ([+-]\d+\.\d) MB", figure(out, "RSS at 10% of the runs"))
    assert rss and float(rss[1]) < 64, out[-2000:]
    assert not any((tmp_path / "artifacts").iterdir())  # no crash input written
    assert len(list((tmp_path / "corpus").iterdir())) > len(list(seeds(Corpus.load())))  # the corpus grew


def test_the_seeds_are_every_capture_s_real_messages_and_hold_every_invariant(harness: Harness) -> None:
    seen = set()
    for name, data in seeds(harness.corpus):
        capture = name.split("-")[0]
        real = set(blocks((CAPTURES / f"{capture}.ami").read_bytes()))
        got = blocks(harness.case(data).stream)
        assert got and set(got) <= real, name  # unmutated: whole messages of that capture
        harness(data)
        seen.add(capture)
    assert seen == {p.stem for p in CAPTURES.glob("*.ami")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(
    st.builds(structured_input, st.integers(0, 255), st.integers(0, 65535), st.integers(0, MAX_WINDOW - 1),
              st.integers(0, 31), st.binary(max_size=400)),
    st.builds(raw_input, st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=15)),
    st.binary(max_size=2000),
))
def test_hypothesis_finds_no_input_that_breaks_an_invariant(harness: Harness, data: bytes) -> None:
    harness(data)


def test_the_invariants_catch_what_they_are_meant_to_catch() -> None:
    (record,) = replay_files([str(CAPTURES / "answered.ami")]).journeys
    check_record(record, "answered")
    visit, leg = record.queues[0], record.legs[0]
    bad = {
        "not JSON": dataclasses.replace(record, started_at=float("nan")),
        "not JSON ": dataclasses.replace(record, ended_at=float("inf")),
        "not a documented word": dataclasses.replace(record, outcome="lost in space"),  # type: ignore[arg-type]
        "control character": dataclasses.replace(record, caller_name="Anna\x00Tamm"),
        "control character ": dataclasses.replace(record, legs=(dataclasses.replace(leg, operator="\x1b[31m"),)),
        "negative wait": dataclasses.replace(record, queues=(dataclasses.replace(visit, wait_seconds=-1.0),)),
        "negative wait or talk in a visit": dataclasses.replace(record, legs=(
            dataclasses.replace(leg, talk_seconds=-2.0), dataclasses.replace(leg, talk_seconds=5.0))),
    }
    for why, r in bad.items():
        with pytest.raises(InvariantError, match=why.strip()):
            check_record(r, "test")
