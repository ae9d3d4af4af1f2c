"""Scale-out: careflow with 1, 2 and 4 worker groups, and per-sender shaping across them.

    .venv/bin/python bench/scale.py            # 3,000-event flood per group count, shaping
    .venv/bin/python bench/scale.py --quick    # smoke run: 300 events, 4 s of shaping

A worker group is one `celery -A config worker -Q events,runs,sends -c 2` process with its
own -n name (as one machine would run it); every group count shares one beat (the relay and
the event listener), one sandbox, one PostgreSQL database and one Redis db.

Phase 1, throughput: the same flood (N order.shipped events spread round-robin over several
clinics, each its own Twilio integration sending from its own number at a rate high enough
that the pipeline is the limit) with 1, 2 and 4 groups, the group counts taking turns run by
run. Per group count: events/s = received / (first commit → last sandbox receipt), the
ratio to 1 group, the CPU seconds per event of this run's own processes (from /proc: its
worker sessions, beat, the sandbox, the driver processes saving the orders (4 by default, as
web processes would), and the PostgreSQL backends of its database;
not Redis, a server shared with the rest of the machine), events/s per worker core
(throughput ÷ the cores the workers actually used) and the PostgreSQL sessions each process
held (pg_stat_activity's client ports matched to the processes' sockets).

Phase 2, shaping: several senders, each limited (default 10, 20 and 20 segments/s), flooded
at once with every group consuming. From the sandbox's received_at and From of every
message, each sender's largest number of segments in any one-second sliding window. The
throttle (integrations/throttle.py) is a GCRA bucket per sender shared by all workers
through Redis; sends reserve with burst 1 (integrations/sending.py passes none), so
reserved send starts are at least segments/rate apart and a half-open 1-second window
[t, t+1) holds at most `rate` segments' starts (floor(rate) for a fractional rate; the
window is 1 s less 0.1 ms, the resolution the bucket stores its time at). That is the
allowance: a sender's reservations over it in any window are a FAIL (exit 1). A message is
sent in its slot or, when it comes back to it late, at most SLOT_MISSED_AFTER (0.25 s) after
it; later than that it reserves a new slot (integrations/sending.py). So the receipts of any
1-second window come from the starts of a window 0.25 s wider: at most ceil(rate × 1.25 s)
segments, the receipts' allowance — exceeded only when the HTTP calls' own lags bunch
messages (a FAIL too: it would show at Twilio).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import SetupError
from integrations.throttle import SLOT_MISSED_AFTER

DB = common.CAREFLOW_DB


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    # name, type, default, help (the default is appended)
    options: list[tuple[str, type, Any, str]] = [
        ("--groups", str, "1,2,4", "worker group counts"),
        ("--runs", int, 2, "floods per group count"),
        ("--events", int, 3000, "flood size"),
        ("--senders", int, 4, "clinics (senders) in the flood"),
        ("--sender-rate", float, 1000.0, "each flood sender's segments/s (the maximum)"),
        ("--drivers", int, 4, "processes saving the flood's orders, as web processes would"),
        ("--per-transaction", int, 1, "saves a driver commits together (e2e.py: 1)"),
        ("--shape-rates", str, "10,20,20", "the shaping phase's senders' segments/s"),
        ("--shape-seconds", float, 20.0, "each shaped sender gets rate × this many events"),
        ("--shape-groups", int, 4, "worker groups in the shaping phase"),
    ]
    for name, kind, default, text in options:
        p.add_argument(name, type=kind, default=default, help=f"{text} (default {default})")
    p.add_argument("--skip-flood", action="store_true", help="shaping phase only")
    p.add_argument("--skip-shape", action="store_true", help="throughput phase only")
    p.add_argument("--quick", action="store_true", help="1 run of 300 events, 4 s of shaping")
    p.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    p.add_argument("--child", choices=["flood", "shape", "ship"], help=argparse.SUPPRESS)
    p.add_argument("--ids-file", help=argparse.SUPPRESS)
    p.add_argument("--tag", default="", help=argparse.SUPPRESS)
    p.add_argument("--sessions", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.runs, args.events, args.shape_seconds = 1, 300, 4.0
    return args


def sender_numbers(count: int, first: int) -> list[str]:
    """Distinct approved numbers for the clinics (registered with the sandbox's account)."""
    return [f"+1415300{first + i:04d}" for i in range(count)]


SHAPE_FIRST = 100  # the shaping phase's numbers: fresh buckets, apart from the flood's
# The bucket stores its theoretical arrival time through Lua's tostring (Redis's Lua 5.1:
# "%.14g", so a Unix time to 0.1 ms), so a reserved start may come up to 0.05 ms before its
# exact place: the contract's window is 1 s less that resolution.
WINDOW = 1.0 - 1e-4


def allowance(rate: float) -> int:
    """Segments the throttle's contract lets one sender start in a half-open 1-second window
    (GCRA, burst 1: starts at least 1/rate apart)."""
    return math.floor(rate + 1e-9)


def receipt_allowance(rate: float) -> int:
    """Segments a sender's receipts may hold in one window: starts of a window widened by how
    late a message may still be sent in its slot."""
    late = SLOT_MISSED_AFTER.total_seconds()
    return max(allowance(rate), math.ceil(rate * (WINDOW + late) - 1e-9))


def busiest_window(times: list[float], segments: list[int], width: float = WINDOW) -> int:
    """The most segments received in any half-open window [t, t + width), t a receipt."""
    order = sorted(range(len(times)), key=times.__getitem__)
    ts = [times[i] for i in order]
    cum = [0]
    for i in order:
        cum.append(cum[-1] + segments[i])
    return max(
        (cum[bisect.bisect_left(ts, t + width)] - cum[k] for k, t in enumerate(ts)), default=0
    )


# --- child: the driver, inside careflow's Django settings -----------------------------------


def _clinics(numbers: list[str], rates: list[float], patients_each: int) -> list[tuple]:
    from bench import fixtures

    out = []
    for k, (number, rate) in enumerate(zip(numbers, rates, strict=True)):
        org = fixtures.careflow_clinic(sender_rate=rate, sender=number)
        out.append((org, fixtures.careflow_patients(org, patients_each, start=100000 * k)))
    return out


def _orders(clinics: list[tuple], counts: list[int], prefix: str) -> list[int]:
    """Orders for each clinic, interleaved round-robin so every sender is busy at once."""
    from bench import fixtures

    per = [
        fixtures.careflow_orders(org, patients, count, f"{prefix}S{k}-")
        for k, ((org, patients), count) in enumerate(zip(clinics, counts, strict=True))
    ]
    return [ids[i] for i in range(max(counts, default=0)) for ids in per if i < len(ids)]


def _warm_up(sandbox: common.Sandbox, clinics: list[tuple], tag: str) -> None:
    from bench import fixtures

    ids = _orders(clinics, [5] * len(clinics), f"W{tag}")
    sandbox.reset()
    fixtures.ship("careflow", ids, None)
    stats = sandbox.wait_accepted(len(ids), timeout=120, stall=60)
    if stats["accepted"] < len(ids):
        raise SetupError(f"warm-up messages did not all reach the sandbox: {stats}")


def child_flood(args: argparse.Namespace, sandbox: common.Sandbox) -> dict[str, Any]:
    from django.conf import settings

    sessions = {**json.loads(args.sessions), "driver": os.getpid()}
    each = math.ceil(args.events / args.senders)
    clinics = _clinics(
        sender_numbers(args.senders, 0), [args.sender_rate] * args.senders, min(each, 1000)
    )
    _warm_up(sandbox, clinics, args.tag)
    counts = [min(each, args.events - k * each) for k in range(args.senders)]
    ids = _orders(clinics, counts, f"F{args.tag}")
    common.broker_drain(settings.CELERY_BROKER_URL)
    sandbox.reset()
    meter = common.SessionCpu(sessions, DB)
    with _Drivers(ids, args.drivers, args.per_transaction) as drivers:
        meter.start()
        committed = drivers.ship()
        stats = sandbox.wait_accepted(len(ids), timeout=900, stall=60)
        # While the drivers still run: their CPU and their backends' count only while alive.
        cpu, elapsed = meter.stop()
        held = common.pg_sessions_by_process(DB, sessions)
    receipts = [m["received_at"] for m in sandbox.messages()]
    first_commit = min(committed.values())
    span = max(receipts) - first_commit if receipts else float("nan")
    return {
        "sent": len(ids),
        "received": len(receipts),
        "stats": stats,
        "throughput": len(receipts) / span if receipts else 0.0,
        "span_s": span,
        "commit_span_s": max(committed.values()) - first_commit,
        "cpu_s": cpu,
        "elapsed_s": elapsed,
        "pg_sessions": held,
    }


class _Drivers:
    """`count` processes saving the orders (each every count-th one, in this process's
    session, so their CPU counts as the driver's), started and set up before ship() so
    that their start-up is not measured, and kept alive until the block ends so that the
    CPU meter still finds them (and their PostgreSQL backends) when it stops."""

    def __init__(self, ids: list[int], count: int, per_transaction: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="careflow-bench-scale-ids-"))
        self.procs = []
        for k in range(count):
            path = self.folder / f"{k}.json"
            path.write_text(json.dumps(ids[k::count]))
            argv = [common.PY, __file__, "--child", "ship", "--ids-file", str(path)]
            self.procs.append(
                subprocess.Popen(
                    [*argv, "--per-transaction", str(per_transaction)],
                    cwd=common.ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )

    def __enter__(self) -> _Drivers:
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SetupError("a driver process did not start")
        return self

    def ship(self) -> dict[str, float]:
        """Let them all go; {order number: commit time} of every save."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        committed: dict[str, float] = {}
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("{"):
                raise SetupError(f"a driver process failed: {line[:300]!r}")
            committed.update(json.loads(line))
        return committed

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.communicate("exit\n", timeout=60)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def child_ship(args: argparse.Namespace) -> None:
    """One driver: set up, say "ready", wait for "go", save its orders as shipped, print
    {order number: commit time}, and wait for "exit"."""
    from bench import fixtures

    ids = json.loads(Path(args.ids_file).read_text())
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(fixtures.ship("careflow", ids, None, args.per_transaction)), flush=True)
    sys.stdin.readline()


def child_shape(args: argparse.Namespace, sandbox: common.Sandbox) -> dict[str, Any]:
    import time

    from bench import fixtures

    rates = [float(r) for r in args.shape_rates.split(",")]
    numbers = sender_numbers(len(rates), SHAPE_FIRST)
    counts = [max(1, round(r * args.shape_seconds)) for r in rates]
    clinics = _clinics(numbers, rates, min(max(counts), 1000))
    _warm_up(sandbox, clinics, args.tag)
    time.sleep(2)  # let the warm-up's reservations pass: the flood starts from idle buckets
    ids = _orders(clinics, counts, f"H{args.tag}")
    sandbox.reset()
    committed = fixtures.ship("careflow", ids, None)
    longest = max(c / r for c, r in zip(counts, rates, strict=True))
    stats = sandbox.wait_accepted(len(ids), timeout=longest + 300, stall=60)
    messages = sandbox.messages()
    slots = _reserved_slots()
    reserved = _reservations()
    senders = []
    for number, rate, count in zip(numbers, rates, counts, strict=True):
        mine = sorted((m for m in messages if m["from"] == number), key=lambda m: m["received_at"])
        times = [m["received_at"] for m in mine]
        segments = [int(m["num_segments"]) for m in mine]
        # Windows over the allowance, each with how many of its messages had been given a
        # slot before the window began (deferred by the throttle and sent late).
        over = []
        for k, t in enumerate(times):
            end = bisect.bisect_left(times, t + WINDOW)
            if sum(segments[k:end]) > receipt_allowance(rate):
                late = sum(1 for m in mine[k:end] if slots.get(m["sid"], t) < t)
                over.append((sum(segments[k:end]), late))
        deferred = [m["received_at"] - slots[m["sid"]] for m in mine if m["sid"] in slots]
        starts = sorted(reserved.get(number, []))
        start_times, start_units = [t for t, _ in starts], [u for _, u in starts]
        starts_over = sum(
            1
            for k, t in enumerate(start_times)
            if sum(start_units[k : bisect.bisect_left(start_times, t + WINDOW)]) > allowance(rate)
        )
        span = times[-1] - times[0] if len(times) > 1 else float("nan")
        senders.append(
            {
                "from": number,
                "rate": rate,
                "sent": count,
                "received": len(mine),
                "segments": sum(segments),
                "allowed_per_window": allowance(rate),
                "receipts_allowed_per_window": receipt_allowance(rate),
                "busiest_window": busiest_window(times, segments),
                "windows_over": len(over),
                "reservations": len(starts),
                "busiest_reserved_window": busiest_window(start_times, start_units),
                "reserved_windows_over": starts_over,
                "worst_over": max(over, default=None),
                "deferred": len(deferred),
                "deferred_slot_to_receipt_s": common.summary(deferred),
                "achieved_rate": (sum(segments) - segments[0]) / span if len(times) > 1 else 0.0,
                "first_commit_to_last_receipt_s": (times[-1] - min(committed.values()))
                if times
                else None,
            }
        )
    return {"stats": stats, "senders": senders}


def _reservations() -> dict[str, list[tuple[float, int]]]:
    """{sender: [(reserved start, segments)]} as the workers' probe recorded them."""
    from bench.scale_probe import SLOTS_KEY
    from common.coordination import coordination_redis

    client = coordination_redis()
    out: dict[str, list[tuple[float, int]]] = {}
    for raw in client.lrange(SLOTS_KEY, 0, -1) if client is not None else []:
        key, start, segments = json.loads(raw)
        out.setdefault(key.rsplit(":", 1)[1], []).append((float(start), int(segments)))
    return out


def _reserved_slots() -> dict[str, float]:
    """{provider SID: the slot the throttle reserved} of the messages it deferred (a slot
    more than INLINE_WAIT_SECONDS ahead: the message went back to the broker with an ETA)."""
    from integrations.models import OutboundMessage

    rows = OutboundMessage.objects.filter(slot_at__isnull=False, provider_sid__isnull=False)
    return {sid: slot.timestamp() for sid, slot in rows.values_list("provider_sid", "slot_at")}


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    from django.conf import settings

    sandbox = common.Sandbox.__new__(common.Sandbox)
    sandbox.url = settings.TWILIO_API_BASE_URL
    if args.child == "ship":
        child_ship(args)
        return 0
    run = child_flood if args.child == "flood" else child_shape
    print(json.dumps(run(args, sandbox)))
    return 0


# --- orchestrator ---------------------------------------------------------------------------


def _phase(
    args: argparse.Namespace,
    env: dict[str, str],
    logdir: Path,
    groups: int,
    argv: list[str],
    include: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Start `groups` worker groups and beat on an empty broker, run one child, stop them."""
    common.flush_redis(env["CELERY_BROKER_URL"])
    procs = common.careflow_worker(env, logdir, groups, include)
    sessions = {
        (f"worker-{i + 1}" if i < groups else "beat"): proc.process.pid
        for i, proc in enumerate(procs)
        if proc.process is not None
    }
    sessions["sandbox"] = args.sandbox_pid
    try:
        return common.run_child(
            [common.PY, __file__, *argv, "--sessions", json.dumps(sessions)], env, timeout=3600
        )
    finally:
        common.stop_all(reversed(procs))
        common.flush_redis(env["CELERY_BROKER_URL"])


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    groups = [int(g) for g in args.groups.split(",")]
    cores = os.cpu_count() or 1
    common.print_header(
        "scale: 1, 2 and 4 worker groups; per-sender shaping across them",
        {
            **common.WORKER_SETTINGS,
            "worker group": f"one `celery -A config worker -Q events,runs,sends -c "
            f"{common.WORKER_CONCURRENCY}` process with its own -n; one beat, one sandbox",
            "groups": args.groups,
            "runs per group count": f"{args.runs} (group counts taking turns)",
            "flood": f"{args.events} events over {args.senders} clinics/senders at "
            f"{args.sender_rate:g} segments/s, saved by {args.drivers} driver processes, "
            f"{args.per_transaction} save(s) per commit",
            "shaping": f"senders at {args.shape_rates} segments/s, rate × "
            f"{args.shape_seconds:g} events each, {args.shape_groups} groups",
        },
    )
    common.check_services()
    logdir = Path(tempfile.mkdtemp(prefix="careflow-bench-scale-"))
    print(f"logs: {logdir}", flush=True)
    sandbox = common.Sandbox(logdir).start()
    sid, token = common.SANDBOX_ACCOUNT
    numbers = sender_numbers(args.senders, 0) + sender_numbers(
        len(args.shape_rates.split(",")), SHAPE_FIRST
    )
    sandbox._call(
        "POST", "/_sandbox/accounts", json={"sid": sid, "token": token, "numbers": numbers}
    )
    args.sandbox_pid = sandbox.proc.process.pid if sandbox.proc.process else 0
    env = common.careflow_env(sandbox.url)
    floods: dict[int, list[dict[str, Any]]] = {g: [] for g in groups}
    shaping: dict[str, Any] | None = None
    loads = [Path("/proc/loadavg").read_text().split()[0]]
    try:
        common.recreate_db(DB)
        common.migrate(env)
        turns = [] if args.skip_flood else [g for _ in range(args.runs) for g in groups]
        for turn, g in enumerate(turns):
            flood = _phase(
                args,
                env,
                logdir,
                g,
                [
                    *("--child", "flood", "--tag", f"{turn}", "--events", str(args.events)),
                    *("--senders", str(args.senders), "--sender-rate", str(args.sender_rate)),
                    *("--per-transaction", str(args.per_transaction)),
                    *("--drivers", str(args.drivers)),
                ],
            )
            floods[g].append(flood)
            loads.append(Path("/proc/loadavg").read_text().split()[0])
            print(f"{g} group(s), run {turn // len(groups) + 1}: {flood_line(flood, cores)}")
            print(f"  load average after: {loads[-1]}", flush=True)
        if not args.skip_shape:
            shaping = _phase(
                args,
                env,
                logdir,
                args.shape_groups,
                [
                    *("--child", "shape", "--tag", "s", "--shape-rates", args.shape_rates),
                    *("--shape-seconds", str(args.shape_seconds)),
                ],
                include=("bench.scale_probe",),
            )
            loads.append(Path("/proc/loadavg").read_text().split()[0])
    finally:
        sandbox.stop()
        if not args.keep_db:
            common.drop_db(DB)
    return report(args, floods, shaping, loads, cores)


def _cores_used(flood: dict[str, Any], roles: str) -> float:
    return sum(s for r, s in flood["cpu_s"].items() if r.startswith(roles)) / flood["elapsed_s"]


def flood_line(flood: dict[str, Any], cores: int) -> str:
    cpu = flood["cpu_s"]
    total = sum(cpu.values())
    # The workers finished within 2 s of the last commit: the saving processes set the pace.
    driver_bound = ": driver-bound" if flood["span_s"] - flood["commit_span_s"] < 2.0 else ""
    per_role = ", ".join(
        f"{role} {seconds / flood['elapsed_s'] * 100:.0f}%"
        for role, seconds in sorted(cpu.items(), key=lambda item: -item[1])
    )
    return (
        f"{flood['received']}/{flood['sent']} in {flood['span_s']:.1f}s = "
        f"{flood['throughput']:.1f} events/s (the drivers' commits took "
        f"{flood['commit_span_s']:.1f}s{driver_bound}); CPU {total / max(flood['received'], 1) * 1000:.1f} "
        f"ms/event, {total / flood['elapsed_s'] * 100:.0f}% of {cores * 100}% ({per_role}); "
        f"worker cores used {_cores_used(flood, 'worker'):.2f}; PostgreSQL sessions "
        f"{sum(flood['pg_sessions'].values())} ({_sessions_text(flood['pg_sessions'])}); "
        f"sandbox {flood['stats']}"
    )


def _sessions_text(held: dict[str, int]) -> str:
    """Sessions per process, prefork children of a group summed as "children (n×k)"."""
    out: dict[str, list[int]] = {}
    for owner, count in held.items():
        role, _, rest = owner.partition(" child ")
        out.setdefault(f"{role} children" if rest else role, []).append(count)
    return ", ".join(
        f"{name} {'+'.join(map(str, counts)) if len(counts) > 1 else counts[0]}"
        for name, counts in out.items()
    )


def report(
    args: argparse.Namespace,
    floods: dict[int, list[dict[str, Any]]],
    shaping: dict[str, Any] | None,
    loads: list[str],
    cores: int,
) -> int:
    code = 0
    print("\n--- throughput by worker groups (median of runs; min/max) ---")
    base = None
    for g, runs in floods.items():
        if not runs:
            continue
        tput = common.summary([r["throughput"] for r in runs])
        cpu_ms = common.summary(
            [sum(r["cpu_s"].values()) / max(r["received"], 1) * 1000 for r in runs]
        )
        worker_cores = common.summary([_cores_used(r, "worker") for r in runs])
        all_cores = common.summary([_cores_used(r, "") for r in runs])
        per_worker_core = common.summary(
            [r["throughput"] / max(_cores_used(r, "worker"), 1e-9) for r in runs]
        )
        per_core = common.summary([r["throughput"] / max(_cores_used(r, ""), 1e-9) for r in runs])
        base = base or tput["median"]
        print(f"{g} group(s) × -c {common.WORKER_CONCURRENCY}:")
        print(f"  throughput          {common.fmt(tput, 'events/s')}")
        print(f"  vs 1 group          {common.ratio(tput['median'], base)} (linear: {g:.2f}x)")
        print(f"  CPU per event       {common.fmt(cpu_ms, 'ms')} (this run's processes)")
        print(
            f"  cores used          workers {common.fmt(worker_cores, '', 2)}; all {common.fmt(all_cores, '', 2)}"
        )
        print(f"  events/s per worker core {common.fmt(per_worker_core, '')}")
        print(f"  events/s per core (all processes) {common.fmt(per_core, '')}")
        print(f"  PostgreSQL sessions {_sessions_text(runs[-1]['pg_sessions'])}")
        missing = sum(r["sent"] - r["received"] for r in runs)
        if missing:
            print(f"  WARNING: {missing} messages missing at the sandbox")
            code = 1
    if any(g > cores for g in floods if floods[g]):
        print(
            f"\nNote: this machine has {cores} cores. Each group runs "
            f"{common.WORKER_CONCURRENCY} prefork children plus its consumer, and PostgreSQL, "
            "beat, the sandbox and the drivers share the same cores, so groups beyond what the "
            "cores can run cannot scale linearly here; the sizing figure is events/s per "
            "worker core (throughput ÷ the CPU the workers actually used)."
        )
    if shaping is not None:
        print(f"\n--- shaping across {args.shape_groups} groups ---")
        print(
            "contract (integrations/throttle.py): a GCRA bucket per sender in Redis shared by "
            "all groups, burst 1 (integrations/sending.py passes none), so reserved send starts "
            "are segments/rate apart: at most floor(rate) segments in any half-open 1-second "
            "window [t, t+1) (less 0.1 ms: the bucket's time is stored to 0.1 ms). Checked on the reservations the workers made (recorded by "
            "bench/scale_probe.py) and on the sandbox's receipts (which add each send's lag)."
        )
        failed = []
        for s in shaping["senders"]:
            reserved_ok = s["reserved_windows_over"] == 0 and s["reservations"] >= s["sent"]
            received_ok = s["windows_over"] == 0 and s["received"] >= s["sent"]
            print(
                f"  {s['from']} at {s['rate']:g}/s: {s['received']}/{s['sent']} received, "
                f"achieved {s['achieved_rate']:.2f} segments/s"
                + (
                    " (under 90 % of its rate: the pipeline, not the throttle, set the pace, "
                    "so this sender's shaping was hardly exercised)"
                    if s["achieved_rate"] < 0.9 * s["rate"]
                    else ""
                )
            )
            print(
                f"    reserved starts: {s['reservations']}, busiest 1-s window "
                f"{s['busiest_reserved_window']} (allowed {s['allowed_per_window']}), windows "
                f"over: {s['reserved_windows_over']} → {'ok' if reserved_ok else 'FAIL'}"
            )
            print(
                f"    receipts at the sandbox: busiest 1-s window {s['busiest_window']} "
                f"(allowed {s['receipts_allowed_per_window']}: starts ≤ 0.25 s late), windows "
                f"over: {s['windows_over']} → "
                f"{'ok' if received_ok else 'FAIL'}"
            )
            lag = s["deferred_slot_to_receipt_s"]
            if s["deferred"]:
                print(
                    f"    deferred by the throttle (broker ETA): {s['deferred']}; their slot → "
                    f"receipt {lag['median']:.3f} s median, {lag['max']:.3f} s max"
                )
            if s["worst_over"]:
                count, late = s["worst_over"]
                print(
                    f"    worst receipt window: {count} segments, {late} of them deferred "
                    "messages whose slot lay before the window"
                )
            if not reserved_ok:
                failed.append(f"{s['from']}: reservations")
            if not received_ok:
                failed.append(f"{s['from']}: receipts")
        print(f"  sandbox {shaping['stats']}")
        if failed:
            code = 1
            print(f"FAIL: over its rate in some window, or messages missing: {', '.join(failed)}")
    print(f"\nload average (1 min) at start and after each phase: {', '.join(loads)}")
    high = [x for x in loads if float(x) > cores]
    if high:
        print(
            f"WARNING: load above the {cores} cores during the run ({', '.join(high)}): "
            "other work shared the machine; figures are what they are"
        )
    return code


if __name__ == "__main__":
    common.guarded(main)
