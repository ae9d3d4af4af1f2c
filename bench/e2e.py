"""End-to-end: order saved as shipped → SMS accepted by the sandbox, careflow vs baseline.

    .venv/bin/python bench/e2e.py            # N=2000 flood + 400 paced at 20/s, 3 runs each
    .venv/bin/python bench/e2e.py --quick    # smoke run, < 1 min

Throughput: N orders changed to shipped from this driver, one transaction each, as fast as
it can (a flood); events/s = N / (first commit → last sandbox receipt).
Latency: orders shipped at a fixed pace (default 20/s); per order, commit time (taken by an
on_commit callback registered before the save) → the sandbox's `received_at`, matched by
the order number in the body. Both clocks are this machine's wall clock.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import SetupError

NUMBER = re.compile(r"order (\S+) has shipped")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--events", type=int, default=2000, help="flood size (default 2000)")
    p.add_argument("--paced-events", type=int, default=400, help="paced events per run")
    p.add_argument("--rate", type=float, default=20.0, help="pace of the latency runs (events/s)")
    p.add_argument(
        "--sender-rate",
        type=float,
        default=1000.0,
        help="careflow sender rate (segments/s) when the throttle exists; default 1000 (its "
        "maximum), so the figure is the pipeline, not Twilio's per-number limit",
    )
    p.add_argument("--quick", action="store_true", help="1 run, 200 flood, 60 paced")
    p.add_argument("--only", choices=["careflow", "baseline"])
    p.add_argument("--keep-db", action="store_true", help="do not drop the bench databases")
    p.add_argument("--child", choices=["careflow", "baseline"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.runs, args.events, args.paced_events = 1, 200, 60
    return args


# --- child: runs inside one system's Django settings, kept running --------------------------


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    from django.conf import settings

    from bench import fixtures

    sandbox = common.Sandbox.__new__(common.Sandbox)
    sandbox.url = settings.TWILIO_API_BASE_URL
    system = args.child
    total = (args.runs + 1) * (args.events + args.paced_events) + 20
    if system == "careflow":
        org = fixtures.careflow_clinic(sender_rate=args.sender_rate)
        print(
            f"careflow: sender rate field {fixtures.rate_field()!r} = {args.sender_rate:g}/s"
            if fixtures.rate_field()
            else "careflow: no sender rate field (no throttle)",
            flush=True,
        )
        patients = fixtures.careflow_patients(org, min(total, 5000))

        def make(count: int, prefix: str) -> list[int]:
            return fixtures.careflow_orders(org, patients, count, prefix)
    else:

        def make(count: int, prefix: str) -> list[int]:
            return fixtures.baseline_orders(count, prefix)

    db = settings.DATABASES["default"]["NAME"]
    meters: dict[str, common.SideMeter] = {}

    def measure(ids: list[int], rate: float | None, pids: dict[str, list[int]] | None) -> dict:
        drained = common.broker_drain(settings.CELERY_BROKER_URL)
        if drained > 2:
            print(f"{system}: waited {drained:.1f}s for leftover queued tasks to drain", flush=True)
        sandbox.reset()
        meter = None
        if pids is not None:
            if "meter" not in meters:
                meters["meter"] = common.SideMeter(db, {**pids, "driver": [os.getpid()]})
            meter = meters["meter"]
            meter.start()
        committed = fixtures.ship(system, ids, rate)
        stats = sandbox.wait_accepted(len(ids), timeout=900, stall=60)
        measured = meter.stop() if meter else None
        received = {}
        for message in sandbox.messages():
            match = NUMBER.search(message["body"])
            if match:
                received.setdefault(match.group(1), message["received_at"])
        latencies = [(received[n] - t) * 1000 for n, t in committed.items() if n in received]
        first_commit = min(committed.values())
        last_receipt = max(received.values()) if received else float("nan")
        return {
            "sent": len(ids),
            "received": len(received),
            "stats": stats,
            "throughput": len(received) / (last_receipt - first_commit) if received else 0.0,
            "commit_span_s": max(committed.values()) - first_commit,
            "latencies_ms": latencies,
            "measured": measured,
        }

    # Setup check: worker processes import, connect and open their Twilio pools.
    warm = measure(make(20, "S"), None, None)
    print(f"{system}: set-up check {warm['received']}/20 received", flush=True)
    if warm["received"] < 20:
        raise SetupError(
            f"{system}: set-up messages did not all reach the sandbox: {warm['stats']}"
        )

    def repetition(command: dict) -> dict:
        tag, pids = command["tag"], command["pids"]
        flood = measure(make(args.events, f"F{tag}-"), None, pids)
        flood.pop("latencies_ms")
        pace = measure(make(args.paced_events, f"P{tag}-"), args.rate, pids)
        lat = pace.pop("latencies_ms")
        pace.update(
            p50=common.percentile(lat, 0.50),
            p95=common.percentile(lat, 0.95),
            p99=common.percentile(lat, 0.99),
            max=max(lat) if lat else float("nan"),
        )
        return {"flood": flood, "paced": pace, "measured": flood["measured"]}

    return common.serve({"repetition": repetition})


# --- orchestrator ------------------------------------------------------------------------------


def describe(system: str, r: dict) -> str:
    f, p = r["flood"], r["paced"]
    return (
        f"flood {f['received']}/{f['sent']} = {f['throughput']:.1f} ev/s "
        f"(commits took {f['commit_span_s']:.1f}s), {common.cost_text(f['measured'], f['received'])}"
        f"\n    paced {p['received']}/{p['sent']}: p50 {p['p50']:.1f} ms, p95 {p['p95']:.1f} ms, "
        f"p99 {p['p99']:.1f} ms, max {p['max']:.1f} ms; "
        f"{common.cost_text(p['measured'], p['received'])}"
    )


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    systems = [args.only] if args.only else ["careflow", "baseline"]
    common.print_header(
        "e2e: order shipped → SMS accepted by the sandbox",
        {
            **common.WORKER_SETTINGS,
            "careflow queues": "events,runs,sends + separate beat",
            "TWILIO_HTTP_TIMEOUT": 10,
            "sandbox": "own process (shared by both), status callbacks off",
            "repetitions": f"{args.runs} pairs after a warm-up pair, alternating "
            + common.alternation(systems),
            "flood N": args.events,
            "paced": f"{args.paced_events} at {args.rate:g}/s",
            "careflow sender rate": f"{args.sender_rate:g} segments/s (if the throttle exists)",
        },
    )
    load_before, logdir = common.measured_start(
        "both systems' workers, beat and drivers are started once and kept; each "
        "repetition (flood, then paced) goes to one system while the other's processes idle "
        "with empty queues, and the idle side's CPU is counted to neither. Restarting per "
        "repetition would put a cold start (imports, connections, Twilio pools) in every "
        "figure; a warm-up pair warms both instead.",
        "e2e",
    )
    sandbox = common.Sandbox(logdir).start()
    env_of = {"careflow": common.careflow_env, "baseline": common.baseline_env}

    def argv_of(system: str) -> list[str]:
        return common.child_argv(
            __file__,
            system,
            runs=args.runs,
            events=args.events,
            paced_events=args.paced_events,
            rate=args.rate,
            sender_rate=args.sender_rate,
        )

    try:
        with common.systems_started(
            systems, logdir, lambda s: env_of[s](sandbox.url), argv_of, keep_db=args.keep_db
        ) as started:

            def measure(system: str, tag: str) -> dict:
                procs, driver, _ = started[system]
                return driver.call(
                    "repetition", tag=tag, pids=common.side_pids(procs, sandbox), timeout=3600
                )

            kept = common.interleave(args.runs, systems, measure, describe)
    finally:
        sandbox.stop()
    report(kept)
    print("\n" + common.load_summary(load_before, common.load_flags(kept)))
    incomplete = [
        s
        for s, reps in kept.items()
        for r in reps
        for x in (r["flood"], r["paced"])
        if x["received"] < x["sent"]
    ]
    if incomplete:
        print(f"\nWARNING: messages missing at the sandbox for: {sorted(set(incomplete))}")
        return 1
    return 0


def _cpu(group: str | None) -> Callable[[dict], float]:
    def value(r: dict) -> float:
        f = r["flood"]
        e = common.per_event(f["measured"], f["received"])
        return e["cpu_total_ms"] if group is None else e["cpu_ms"].get(group, 0.0)

    return value


def _pg(key: str) -> Callable[[dict], float]:
    return lambda r: common.per_event(r["flood"]["measured"], r["flood"]["received"]).get(
        key, float("nan")
    )


def report(kept: dict[str, list[dict]]) -> None:
    print("\n--- results: median (min/max) of the kept repetitions; ratios pair by pair ---")
    if len(kept) < 2:
        statements_report(kept)
        for system, reps in kept.items():
            for label, value, unit in (
                ("throughput", lambda r: r["flood"]["throughput"], "events/s"),
                ("CPU per event", _cpu(None), "ms"),
                ("latency p99", lambda r: r["paced"]["p99"], "ms"),
            ):
                print(
                    f"{system} {label}: {common.fmt(common.summary([value(r) for r in reps]), unit, 2)}"
                )
        return
    lines = [
        ("flood throughput", lambda r: r["flood"]["throughput"], "events/s", 1),
        ("flood CPU per event, all processes (redis apart)", _cpu(None), "ms", 2),
    ]
    groups = sorted(
        {g for reps in kept.values() for r in reps for g in r["flood"]["measured"]["cpu_ms"]}
    )
    lines += [(f"  of which {g}", _cpu(g), "ms", 2) for g in groups]
    lines.append(("  redis (machine-wide, not in the total)", _pg("redis_machine_cpu_ms"), "ms", 2))
    source = kept["careflow"][0]["flood"]["measured"]["statements_source"]
    if source == "pg_stat_statements":
        lines += [
            (
                "flood statements per event (pg_stat_statements, this db)",
                _pg("statements"),
                "statements",
                2,
            ),
            ("  of which BEGIN/COMMIT", _pg("txn_statements"), "statements", 2),
            ("flood WAL bytes per event (pg_stat_statements, this db)", _pg("wal_bytes"), "B", 0),
            ("  full-page images per event (after each checkpoint)", _pg("wal_fpi"), "FPI", 2),
        ]
    else:
        lines += [
            (
                "flood transactions per event (pg_stat_database, this db)",
                _pg("transactions"),
                "transactions",
                2,
            ),
            (
                "flood WAL bytes per event (MACHINE-WIDE pg_current_wal_lsn)",
                _pg("machine_wal_bytes"),
                "B",
                0,
            ),
        ]
    lines += [
        ("paced latency p50", lambda r: r["paced"]["p50"], "ms", 1),
        ("paced latency p95", lambda r: r["paced"]["p95"], "ms", 1),
        ("paced latency p99", lambda r: r["paced"]["p99"], "ms", 1),
        (
            "paced CPU per event, all processes",
            lambda r: common.per_event(r["paced"]["measured"], r["paced"]["received"])[
                "cpu_total_ms"
            ],
            "ms",
            2,
        ),
    ]
    for label, value, unit, digits in lines:
        print(common.paired_line(label, kept, value, unit, digits))
    statements_report(kept)


def statements_report(kept: dict[str, list[dict]]) -> None:
    """Where each side's PostgreSQL time went in its last kept flood, statement by statement."""
    for system, reps in kept.items():
        flood = reps[-1]["flood"]
        print(f"\n--- {system}: costliest statements of its last flood, per event ---")
        print(common.statements_text(flood["measured"], flood["received"]))


if __name__ == "__main__":
    common.guarded(main)
