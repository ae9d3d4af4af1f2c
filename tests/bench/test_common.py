"""The benchmarks' shared measurement (bench/common.py): CPU from /proc, per-database
statements, load flags and the alternation of repetitions. Real processes and PostgreSQL."""

import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from django.db import connection

from bench import common

# A child that burns about 0.4 s of CPU in a grandchild, reaps it, then waits to be read.
BURNER = """
import os, sys, time
pid = os.fork()
if pid == 0:
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    os._exit(0)
os.waitpid(pid, 0)
print("reaped", flush=True)
sys.stdin.read()
"""


def test_process_ticks_keep_the_cpu_of_reaped_children() -> None:
    child = subprocess.Popen(  # noqa: S603 — this interpreter, our own script
        [sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"reaped"
        ticks = common.process_ticks(child.pid)
        assert ticks is not None
        # The grandchild is gone; its CPU lives on in the child's cutime + cstime.
        assert ticks / os.sysconf("SC_CLK_TCK") >= 0.3
        assert common.process_tree([child.pid]) == {child.pid}
    finally:
        child.communicate(b"")
    assert common.process_ticks(child.pid) is None


def test_process_tree_finds_live_descendants() -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import os, time; os.fork(); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while len(common.process_tree([parent.pid])) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(common.process_tree([parent.pid])) == 2
    finally:
        for pid in common.process_tree([parent.pid]) - {parent.pid}:
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()


@pytest.mark.django_db
def test_side_meter_counts_its_database_only() -> None:
    db = connection.settings_dict["NAME"]
    meter = common.SideMeter(db, {"driver": [os.getpid()]})
    other = psycopg.connect(f"{common.PG}/postgres", autocommit=True)
    mine = psycopg.connect(f"{common.PG}/{db}", autocommit=True)
    try:
        meter.start()
        for i in range(25):
            mine.execute("SELECT %s::int + 1", (i,))
            other.execute("SELECT %s::int + 2", (i,))
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        measured = meter.stop()
    finally:
        other.close()
        mine.close()
        meter.close()
    assert measured["cpu_ms"]["driver"] >= 150
    assert measured["postgres_backends"] >= 1  # `mine`; the meter's own is left out
    if meter.statements:
        # 25 here and none of the 25 sent to the postgres database, nor the meter's own.
        assert measured["pg"]["statements"] == 25
        (top,) = measured["top_statements"]
        assert top["calls"] == 25 and "+ $2" in top["query"]
        assert "+ $2" in common.statements_text(measured, 25)
    else:
        assert measured["pg"]["transactions"] >= 25
    assert measured["load"]["max"] >= measured["load"]["before"] >= 0


def test_statements_text_gives_each_statement_per_event_and_their_share_of_the_cpu() -> None:
    measured = {
        "cpu_ms": {"postgres": 40.0, "worker": 100.0},
        "top_statements": [
            {"calls": 20.0, "plan_ms": 2.0, "exec_ms": 8.0, "wal_bytes": 4000.0, "query": "A\n x"},
            {"calls": 1.0, "plan_ms": 0.5, "exec_ms": 1.5, "wal_bytes": 0.0, "query": "B"},
        ],
    }
    lines = common.statements_text(measured, 10).splitlines()
    assert lines[1].split() == ["2.00", "0.200", "0.800", "400", "A", "x"]
    assert lines[2].split() == ["0.10", "0.050", "0.150", "0", "B"]
    assert lines[3].endswith("1.20 ms per event, of the backends' 4.00 ms CPU per event")
    assert "not loaded" in common.statements_text({"cpu_ms": {}}, 10)


@pytest.mark.django_db
def test_side_meter_starts_each_window_with_the_statistics_autovacuum_would_keep() -> None:
    db = connection.settings_dict["NAME"]
    probe = psycopg.connect(f"{common.PG}/{db}", autocommit=True)
    try:
        probe.execute("DROP TABLE IF EXISTS side_meter_probe")
        probe.execute("CREATE TABLE side_meter_probe (n int)")
        probe.execute("ANALYZE side_meter_probe")  # analyzed empty, then filled
        probe.execute("INSERT INTO side_meter_probe SELECT generate_series(1, 1000)")
        autovacuum = probe.execute("SHOW autovacuum").fetchone() == ("on",)
        meter = common.SideMeter(db, {"driver": [os.getpid()]})
        try:
            meter.start()
            meter.stop()
        finally:
            meter.close()
        counted = probe.execute(
            "SELECT reltuples FROM pg_class WHERE relname = 'side_meter_probe'"
        ).fetchone()
        # Without autovacuum the planner would still think it empty; the window's ANALYZE
        # counted its rows. With autovacuum on, the meter leaves the statistics to it.
        assert meter.analyze is not autovacuum
        if meter.analyze:
            assert counted == (1000,)
    finally:
        probe.execute("DROP TABLE IF EXISTS side_meter_probe")
        probe.close()


def test_load_watch_flags_any_sample_above_the_cores() -> None:
    watch = common.LoadWatch()
    watch.samples = [0.5, common.CORES + 0.5, 0.5]
    assert watch.as_dict()["over_cores"] is True
    assert "LOAD ABOVE CORES" in common.load_text(watch.as_dict())
    watch.samples = [0.5, common.CORES, 0.5]
    assert watch.as_dict()["over_cores"] is False
    assert "LOAD ABOVE CORES" not in common.load_text(watch.as_dict())


def test_interleave_alternates_and_discards_the_warm_up_pair(capsys: Any) -> None:
    calls = []

    def measure(system: str, tag: str) -> dict[str, Any]:
        calls.append(f"{system} {tag}")
        return {"value": (10.0 if system == "careflow" else 5.0) * len(calls)}

    kept = common.interleave(2, ["careflow", "baseline"], measure, lambda s, r: str(r["value"]))
    assert calls == [
        "careflow W",
        "baseline W",
        "careflow 1",
        "baseline 1",
        "careflow 2",
        "baseline 2",
    ]
    assert [r["value"] for r in kept["careflow"]] == [30.0, 50.0]
    assert [r["value"] for r in kept["baseline"]] == [20.0, 30.0]
    assert "[warm-up pair, discarded] careflow: 10.0" in capsys.readouterr().out
    # Pair by pair: 30/20 and 50/30, not the ratio of the medians (40/25).
    line = common.paired_line("x", kept, lambda r: r["value"], "u")
    assert "careflow ÷ baseline 1.58x (min 1.50, max 1.67" in line


CHILD = """
import sys
from bench import common
def echo(command):
    print("passing through", flush=True)
    if command["x"] < 0:
        sys.exit(3)
    return {"got": command["x"] * 2}
common.serve({"echo": echo})
"""


def test_driver_waits_for_set_up_and_answers_each_command(capsys: Any) -> None:
    env = {**os.environ, "PYTHONPATH": str(common.ROOT)}
    driver = common.Driver("echo", [sys.executable, "-c", CHILD], env)
    try:
        assert driver.call("echo", x=2, timeout=60) == {"got": 4}
        assert driver.call("echo", x=5, timeout=60) == {"got": 10}
        assert "  passing through" in capsys.readouterr().out
        with pytest.raises(common.SetupError, match="exit 3"):
            driver.call("echo", x=-1, timeout=60)
    finally:
        driver.close()
