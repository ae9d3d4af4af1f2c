"""Burst shaping: 10,000 order.shipped events for ONE sender configured at 50 segments/s.

    .venv/bin/python bench/burst.py                 # 10,000 events, 1 run per system
    .venv/bin/python bench/burst.py --events 2000   # smaller
    .venv/bin/python bench/burst.py --quick         # 500 events

careflow: the clinic's Integration gets the per-integration rate (looked up at run time:
`settings.segments_per_second`). If no such field exists the script says so
and measures the unshaped rate instead. Baseline: the same task with Celery's own
`rate_limit="50/s"` (a per-worker-node token bucket; one node here).
Measured at the sandbox: achieved rate (messages/s, every body is 1 segment) over all messages
and over the steady middle 80 %, the busiest 1-second window, and the sandbox's error answers
(429s). The sandbox itself enforces no rate, so 0 errors is necessary, not sufficient; the
busiest-second figure shows what a real per-sender limit would have seen.
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10000)
    p.add_argument("--rate", type=float, default=50.0, help="segments/s of the one sender")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="500 events")
    p.add_argument(
        "--warmup-events",
        type=int,
        default=50,
        help="events of the discarded warm-up pair's bursts (default 50: the baseline's "
        "rate_limit sends about 1/s)",
    )
    p.add_argument("--only", choices=["careflow", "baseline"])
    p.add_argument(
        "--max-wait",
        type=float,
        default=300.0,
        help="seconds a run may take beyond the time its rate needs before it is stopped and "
        "measured as it stands (default 300; Celery's rate_limit runs at about 1/s here)",
    )
    p.add_argument("--child", choices=["careflow", "baseline"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.events, args.runs = 500, 1
    return args


def analyse(times: list[float], target: float) -> dict:
    times = sorted(times)
    n = len(times)
    if n < 2:
        return {"count": n}
    lo, hi = int(n * 0.1), max(int(n * 0.9) - 1, int(n * 0.1) + 1)
    busiest = max(bisect.bisect_right(times, t + 1.0) - i for i, t in enumerate(times))
    overall = (n - 1) / (times[-1] - times[0])
    steady = (hi - lo) / (times[hi] - times[lo]) if times[hi] > times[lo] else float("inf")
    return {
        "count": n,
        "span_s": times[-1] - times[0],
        "rate": overall,
        "steady_rate": steady,
        "busiest_1s": busiest,
        "within_5pct": abs(steady - target) <= 0.05 * target,
    }


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    from django.conf import settings

    from bench import fixtures

    sandbox = common.Sandbox.__new__(common.Sandbox)
    sandbox.url = settings.TWILIO_API_BASE_URL
    system = args.child
    note = ""
    if system == "careflow":
        field = fixtures.rate_field()
        if field:
            note = f"shaped: Integration.{field} = {args.rate:g}"
        else:
            note = "NO per-integration rate field in integrations/models.py: measuring UNSHAPED"
        print(f"careflow: {note}", flush=True)
        org = fixtures.careflow_clinic(sender_rate=args.rate)
        total = (args.events + args.warmup_events + 10) * (args.runs + 1) + 20
        patients = fixtures.careflow_patients(org, min(total, 5000))

        def make(count: int, prefix: str) -> list[int]:
            return fixtures.careflow_orders(org, patients, count, prefix)
    else:
        note = f"Celery task rate_limit={settings.BENCH_RATE_LIMIT}"
        print(f"baseline: {note}", flush=True)

        def make(count: int, prefix: str) -> list[int]:
            return fixtures.baseline_orders(count, prefix)

    db = settings.DATABASES["default"]["NAME"]

    def repetition(command: dict) -> dict:
        """One burst on freshly started workers; the warm-up pair's is `--warmup-events`."""
        events = args.warmup_events if command["tag"] == "W" else args.events
        ids = make(events, f"B{command['tag']}-")
        meter = common.SideMeter(db, {**command["pids"], "driver": [os.getpid()]})
        # The workers were just restarted: 10 untimed messages import and connect them.
        sandbox.reset()
        fixtures.ship(system, make(10, f"S{command['tag']}-"), None)
        sandbox.wait_accepted(10, timeout=120, stall=60)
        sandbox.reset()
        time.sleep(2)  # an idle sender's bucket is full: start every burst from there
        meter.start()
        t0 = time.time()
        committed = fixtures.ship(system, ids, None)
        commit_s = time.time() - t0
        expected_s = events / args.rate
        stats = sandbox.wait_accepted(events, timeout=expected_s + args.max_wait, stall=120)
        measured = meter.stop()
        meter.close()
        times = [m["received_at"] for m in sandbox.messages()]
        result = analyse(times, args.rate)
        result.update(
            sent=events,
            stopped_after_s=None if len(times) >= events else time.time() - t0,
            stats=stats,
            commit_s=commit_s,
            first_commit_to_first_receipt_s=min(times) - min(committed.values()) if times else None,
            measured=measured,
            note=note,
        )
        return result

    return common.serve({"repetition": repetition})


def describe(system: str, r: dict) -> str:
    rate = r.get("steady_rate", float("nan"))
    stopped = (
        f" STOPPED unfinished after {r['stopped_after_s']:.0f} s" if r["stopped_after_s"] else ""
    )
    return (
        f"{r['count']}/{r['sent']} received{stopped}, steady {rate:.2f} msg/s, busiest second "
        f"{r.get('busiest_1s', 0)}, 429s {r['stats']['errors']}; "
        f"{common.cost_text(r['measured'], r['count'])}"
    )


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    systems = [args.only] if args.only else ["careflow", "baseline"]
    common.print_header(
        f"burst: {args.events} events, one sender at {args.rate:g} segments/s",
        {
            **common.WORKER_SETTINGS,
            "sandbox": "own process, status callbacks off, no rate enforcement",
            "repetitions": f"{args.runs} pairs after a warm-up pair of {args.warmup_events} "
            "events, alternating " + common.alternation(systems),
        },
    )
    load_before, logdir = common.measured_start(
        "each system's database and driver are set up once; its workers (and careflow's "
        "beat) are restarted on a flushed broker before each of its repetitions, both sides "
        "alike, because Celery's rate_limit run is stopped unfinished with thousands of tasks "
        "still queued or reserved, which would spill into the next one.",
        "burst",
    )
    sandbox = common.Sandbox(logdir).start()

    def env_of(system: str) -> dict[str, str]:
        if system == "careflow":
            return common.careflow_env(sandbox.url)
        return common.baseline_env(sandbox.url, BENCH_RATE_LIMIT=f"{args.rate:g}/s")

    def argv_of(system: str) -> list[str]:
        return common.child_argv(
            __file__,
            system,
            events=args.events,
            warmup_events=args.warmup_events,
            rate=args.rate,
            runs=args.runs,
            max_wait=args.max_wait,
        )

    try:
        with common.systems_started(systems, logdir, env_of, argv_of) as started:

            def measure(system: str, tag: str) -> dict:
                procs, driver, env = started[system]
                common.stop_all(reversed(procs))
                common.flush_redis(env["CELERY_BROKER_URL"])
                start = common.careflow_worker if system == "careflow" else common.baseline_worker
                procs[:] = start(env, logdir)
                return driver.call(
                    "repetition", tag=tag, pids=common.side_pids(procs, sandbox), timeout=7200
                )

            kept = common.interleave(args.runs, systems, measure, describe)
    finally:
        sandbox.stop()
    report(kept, args)
    print("\n" + common.load_summary(load_before, common.load_flags(kept)))
    return 0


def report(kept: dict[str, list[dict]], args: argparse.Namespace) -> None:
    print("\n--- results: median (min/max) of the kept repetitions ---")
    agg = {}
    for system, runs in kept.items():
        agg[system] = {
            k: common.summary([x.get(k, float("nan")) for x in runs])
            for k in ("rate", "steady_rate", "busiest_1s")
        }
        errors = sum(x["stats"]["errors"] for x in runs)
        received = sum(x["count"] for x in runs)
        sent = sum(x["sent"] for x in runs)
        print(f"{system}: {runs[0]['note']}")
        print(f"  received {received}/{sent}; sandbox error answers (429s): {errors}")
        stopped = [x["stopped_after_s"] for x in runs if x.get("stopped_after_s")]
        if stopped:
            print(
                f"  stopped unfinished after {max(stopped):.0f} s (--max-wait {args.max_wait:g}): "
                "the rates below are of what had arrived by then"
            )
        print(f"  achieved rate, first→last receipt: {common.fmt(agg[system]['rate'], 'msg/s', 2)}")
        print(
            f"  steady rate (middle 80 %):          {common.fmt(agg[system]['steady_rate'], 'msg/s', 2)}"
        )
        print(
            f"  busiest 1-second window:            {common.fmt(agg[system]['busiest_1s'], 'msgs', 0)}"
        )
        steady = agg[system]["steady_rate"]["median"]
        print(
            f"  within ±5 % of {args.rate:g}/s: {'yes' if abs(steady - args.rate) <= 0.05 * args.rate else 'NO'}"
            f" ({(steady / args.rate - 1) * 100:+.1f} %)"
        )
    if len(kept) == 2:

        def cost(key: str) -> Callable[[dict], float]:
            return lambda r: common.per_event(r["measured"], r["count"])[key]

        print(
            common.paired_line("steady rate", kept, lambda r: r.get("steady_rate", 0.0), "msg/s", 2)
        )
        print(
            common.paired_line(
                "CPU per event, all processes (redis apart)", kept, cost("cpu_total_ms"), "ms", 2
            )
        )
        if kept["careflow"][0]["measured"]["statements_source"] == "pg_stat_statements":
            print(
                common.paired_line(
                    "statements per event (this db)", kept, cost("statements"), "statements", 2
                )
            )
            print(
                common.paired_line("WAL bytes per event (this db)", kept, cost("wal_bytes"), "B", 0)
            )
        else:
            print(
                common.paired_line(
                    "transactions per event (pg_stat_database)",
                    kept,
                    cost("transactions"),
                    "transactions",
                    2,
                )
            )


if __name__ == "__main__":
    common.guarded(main)
