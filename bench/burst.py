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
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import SetupError


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10000)
    p.add_argument("--rate", type=float, default=50.0, help="segments/s of the one sender")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="500 events")
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
        patients = fixtures.careflow_patients(org, min(args.events * args.runs + 20, 5000))

        def make(count: int, prefix: str) -> list[int]:
            return fixtures.careflow_orders(org, patients, count, prefix)
    else:
        note = f"Celery task rate_limit={settings.BENCH_RATE_LIMIT}"
        print(f"baseline: {note}", flush=True)

        def make(count: int, prefix: str) -> list[int]:
            return fixtures.baseline_orders(count, prefix)

    # Warm-up, then let the bucket drain so the burst starts from an idle sender.
    ids = make(10, "W")
    sandbox.reset()
    fixtures.ship(system, ids, None)
    if sandbox.wait_accepted(10, timeout=120, stall=60)["accepted"] < 10:
        raise SetupError(f"{system}: warm-up messages did not reach the sandbox")
    time.sleep(2)
    runs = []
    for run in range(args.runs):
        ids = make(args.events, f"B{run}-")
        sandbox.reset()
        t0 = time.time()
        committed = fixtures.ship(system, ids, None)
        commit_s = time.time() - t0
        expected_s = args.events / args.rate
        stats = sandbox.wait_accepted(args.events, timeout=expected_s + args.max_wait, stall=120)
        times = [m["received_at"] for m in sandbox.messages()]
        result = analyse(times, args.rate)
        result.update(
            sent=args.events,
            stopped_after_s=None if len(times) >= args.events else time.time() - t0,
            stats=stats,
            commit_s=commit_s,
            first_commit_to_first_receipt_s=min(times) - min(committed.values()) if times else None,
        )
        print(f"{system} run {run + 1}: {json.dumps(result)}", flush=True)
        runs.append(result)
    print(json.dumps({"runs": runs, "note": note}))
    return 0


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    common.print_header(
        f"burst: {args.events} events, one sender at {args.rate:g} segments/s",
        {
            **common.WORKER_SETTINGS,
            "sandbox": "own process, status callbacks off, no rate enforcement",
            "runs": args.runs,
        },
    )
    common.check_services()
    logdir = Path(tempfile.mkdtemp(prefix="careflow-bench-burst-"))
    print(f"logs: {logdir}", flush=True)
    sandbox = common.Sandbox(logdir).start()
    results = {}
    try:
        for system in [args.only] if args.only else ["careflow", "baseline"]:
            db = common.CAREFLOW_DB if system == "careflow" else common.BASELINE_DB
            if system == "careflow":
                env = common.careflow_env(sandbox.url)
            else:
                env = common.baseline_env(sandbox.url, BENCH_RATE_LIMIT=f"{args.rate:g}/s")
            procs = common.system_start(system, db, env, logdir)
            try:
                results[system] = common.run_child(
                    [
                        common.PY,
                        __file__,
                        "--child",
                        system,
                        "--events",
                        str(args.events),
                        "--rate",
                        str(args.rate),
                        "--runs",
                        str(args.runs),
                        "--max-wait",
                        str(args.max_wait),
                    ],
                    env,
                    timeout=7200,
                )
            finally:
                common.stop_all(reversed(procs))
                common.flush_redis(env["CELERY_BROKER_URL"])
                common.drop_db(db)
    finally:
        sandbox.stop()
    print("\n--- results ---")
    agg = {}
    for system, r in results.items():
        runs = r["runs"]
        agg[system] = {
            k: common.summary([x.get(k, float("nan")) for x in runs])
            for k in ("rate", "steady_rate", "busiest_1s")
        }
        errors = sum(x["stats"]["errors"] for x in runs)
        received = sum(x["count"] for x in runs)
        sent = sum(x["sent"] for x in runs)
        print(f"{system}: {r['note']}")
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
    if len(agg) == 2:
        print(
            f"\ncareflow ÷ baseline steady rate: "
            f"{common.ratio(agg['careflow']['steady_rate']['median'], agg['baseline']['steady_rate']['median'])}"
        )
    return 0


if __name__ == "__main__":
    common.guarded(main)
