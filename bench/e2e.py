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
import json
import re
import sys
import tempfile
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


# --- child: runs inside one system's Django settings -------------------------------------------


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    from django.conf import settings

    from bench import fixtures

    sandbox = common.Sandbox.__new__(common.Sandbox)
    sandbox.url = settings.TWILIO_API_BASE_URL
    system = args.child
    total = args.runs * (args.events + args.paced_events) + 20
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

    def measure(ids: list[int], rate: float | None) -> dict:
        drained = common.broker_drain(settings.CELERY_BROKER_URL)
        if drained > 2:
            print(f"{system}: waited {drained:.1f}s for leftover queued tasks to drain", flush=True)
        sandbox.reset()
        meter = common.CpuMeter()
        meter.start()
        committed = fixtures.ship(system, ids, rate)
        stats = sandbox.wait_accepted(len(ids), timeout=900, stall=60)
        cpu = meter.stop()
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
            "cpu": cpu,
        }

    # Warm-up: worker processes import, connect and open their Twilio pools.
    warm = measure(make(20, "W"), None)
    print(f"{system}: warm-up {warm['received']}/20 received", flush=True)
    if warm["received"] < 20:
        raise SetupError(
            f"{system}: warm-up messages did not all reach the sandbox: {warm['stats']}"
        )
    floods, paced = [], []
    for run in range(args.runs):
        flood = measure(make(args.events, f"F{run}-"), None)
        print(
            f"{system} run {run + 1}: flood {flood['received']}/{flood['sent']} in "
            f"{flood['received'] / flood['throughput'] if flood['throughput'] else 0:.1f}s "
            f"= {flood['throughput']:.1f} ev/s (commits took {flood['commit_span_s']:.1f}s); "
            f"sandbox {flood['stats']}; {common.cpu_text(flood['cpu'])}",
            flush=True,
        )
        floods.append({k: v for k, v in flood.items() if k != "latencies_ms"})
        pace = measure(make(args.paced_events, f"P{run}-"), args.rate)
        lat = pace["latencies_ms"]
        p = {
            "sent": pace["sent"],
            "received": pace["received"],
            "p50": common.percentile(lat, 0.50),
            "p95": common.percentile(lat, 0.95),
            "p99": common.percentile(lat, 0.99),
            "max": max(lat) if lat else float("nan"),
            "commit_span_s": pace["commit_span_s"],
        }
        print(
            f"{system} run {run + 1}: paced {p['received']}/{p['sent']} at {args.rate:g}/s "
            f"(commits over {p['commit_span_s']:.1f}s): p50 {p['p50']:.1f} ms, "
            f"p95 {p['p95']:.1f} ms, p99 {p['p99']:.1f} ms, max {p['max']:.1f} ms",
            flush=True,
        )
        paced.append(p)
    print(json.dumps({"floods": floods, "paced": paced}))
    return 0


# --- orchestrator ------------------------------------------------------------------------------


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    common.print_header(
        "e2e: order shipped → SMS accepted by the sandbox",
        {
            **common.WORKER_SETTINGS,
            "careflow queues": "events,runs,sends + separate beat",
            "TWILIO_HTTP_TIMEOUT": 10,
            "sandbox": "own process, status callbacks off",
            "runs": args.runs,
            "flood N": args.events,
            "paced": f"{args.paced_events} at {args.rate:g}/s",
            "careflow sender rate": f"{args.sender_rate:g} segments/s (if the throttle exists)",
        },
    )
    common.check_services()
    logdir = Path(tempfile.mkdtemp(prefix="careflow-bench-e2e-"))
    print(f"logs: {logdir}", flush=True)
    sandbox = common.Sandbox(logdir).start()
    results = {}
    systems = [args.only] if args.only else ["careflow", "baseline"]
    try:
        for system in systems:
            db = common.CAREFLOW_DB if system == "careflow" else common.BASELINE_DB
            env_of = common.careflow_env if system == "careflow" else common.baseline_env
            env = env_of(sandbox.url)
            procs = common.system_start(system, db, env, logdir)
            try:
                results[system] = common.run_child(
                    [
                        common.PY,
                        __file__,
                        "--child",
                        system,
                        "--runs",
                        str(args.runs),
                        "--events",
                        str(args.events),
                        "--paced-events",
                        str(args.paced_events),
                        "--rate",
                        str(args.rate),
                        "--sender-rate",
                        str(args.sender_rate),
                    ],
                    env,
                    timeout=3600,
                )
            finally:
                common.stop_all(reversed(procs))
                common.flush_redis(env["CELERY_BROKER_URL"])
            if not args.keep_db:
                common.drop_db(db)
    finally:
        sandbox.stop()
    report(results, args)
    incomplete = [
        s for s, r in results.items() for x in r["floods"] + r["paced"] if x["received"] < x["sent"]
    ]
    if incomplete:
        print(f"\nWARNING: messages missing at the sandbox for: {sorted(set(incomplete))}")
        return 1
    return 0


def report(results: dict, args: argparse.Namespace) -> None:
    print("\n--- results (median of runs; min/max in brackets) ---")
    agg = {}
    for system, r in results.items():
        agg[system] = {
            "throughput": common.summary([f["throughput"] for f in r["floods"]]),
            **{q: common.summary([p[q] for p in r["paced"]]) for q in ("p50", "p95", "p99")},
        }
        a = agg[system]
        print(f"{system:9s} throughput  {common.fmt(a['throughput'], 'events/s')}")
        for q in ("p50", "p95", "p99"):
            print(f"{system:9s} latency {q} {common.fmt(a[q], 'ms')}")
    if len(agg) == 2:
        c, b = agg["careflow"], agg["baseline"]
        print(
            f"\ncareflow ÷ baseline: throughput {common.ratio(c['throughput']['median'], b['throughput']['median'])}"
            + "".join(
                f", latency {q} {common.ratio(c[q]['median'], b[q]['median'])}"
                for q in ("p50", "p95", "p99")
            )
        )


if __name__ == "__main__":
    common.guarded(main)
