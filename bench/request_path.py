"""Request-path overhead of a trigger: how long an order save that fires order.shipped takes,
against a plain save of a same-shaped model with no receivers, and against the baseline's
save + on_commit(send_sms.delay).

    .venv/bin/python bench/request_path.py            # 7 rounds x 200 saves per variant
    .venv/bin/python bench/request_path.py --quick    # 3 rounds x 50
    .venv/bin/python bench/request_path.py --profile  # + cProfile of the careflow save

Every save is its own transaction (atomic block, COMMIT and on_commit callbacks included),
on one database connection, in one process (careflow settings + the baseline app, see
bench/baseline/settings_careflow.py). The clinic has 20 enabled workflows on other triggers
plus the order.shipped SMS workflow. No worker runs: published tasks stay in Redis db 10,
which is flushed afterwards. The variants take turns save by save.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DB = common.bench_db("careflow_bench_rp")
VARIANTS = ("careflow", "plain", "baseline")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=7, help="rounds (default 7)")
    p.add_argument("--saves", type=int, default=200, help="saves per variant per round")
    p.add_argument("--workflows", type=int, default=20, help="enabled workflows on other triggers")
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--broker",
        default=common.CAREFLOW_REDIS,
        help="Redis db 10 (default) or 11; must not be in use by a running bench",
    )
    p.add_argument("--profile", action="store_true", help="cProfile 200 careflow saves")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.runs, args.saves = 3, 50
    return args


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from bench import fixtures
    from bench.baseline.models import BaseOrder, PlainOrder
    from patients.models import Order

    org = fixtures.careflow_clinic(other_workflows=args.workflows)
    patients = fixtures.careflow_patients(org, 500)
    per_variant = args.saves * args.runs + 50 + 1 + (200 if args.profile else 0)
    fixtures.careflow_orders(org, patients, per_variant, "C")
    fixtures.baseline_orders(per_variant, "B", BaseOrder)
    fixtures.baseline_orders(per_variant, "P", PlainOrder)
    pools = {
        "careflow": list(Order.objects.filter(organization=org).order_by("pk")),
        "baseline": list(BaseOrder.objects.order_by("pk")),
        "plain": list(PlainOrder.objects.order_by("pk")),
    }

    def save(obj) -> None:
        with transaction.atomic():
            obj.status = "shipped"
            obj.save()

    def timed(variant: str, n: int) -> list[float]:
        pool = pools[variant]
        out = []
        for _ in range(n):
            obj = pool.pop()
            t0 = time.perf_counter_ns()
            save(obj)
            out.append((time.perf_counter_ns() - t0) / 1000)
        return out

    queries = {}
    statements = {}
    for variant in VARIANTS:
        with CaptureQueriesContext(connection) as ctx:
            save(pools[variant].pop())
        queries[variant] = len(ctx.captured_queries)
        # The statements' first words (no values: the bench's own made-up rows, but a
        # statement's text is the same for a real patient's).
        statements[variant] = [" ".join(q["sql"].split()[:6])[:90] for q in ctx.captured_queries]
        timed(variant, 50)  # warm-up
    rounds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    loads = [common.loadavg()]
    for r in range(args.runs):
        # Save by save, the variants take turns (in a rotating order), so that a slow spell
        # of this shared machine (seen: plain saves flipping between 1.5 and 3.2 ms from
        # one round to the next) falls on all three alike.
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i in range(args.saves):
            order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]
            for variant in order:
                times[variant] += timed(variant, 1)
        for variant in VARIANTS:
            rounds[variant].append(statistics.median(times[variant]))
        loads.append(common.loadavg())
        print(
            f"round {r + 1}: "
            + ", ".join(f"{v} {rounds[v][-1]:.0f} us" for v in VARIANTS)
            + f"; load average {loads[-1]:.2f}"
            + (" — LOAD ABOVE CORES" if loads[-1] > common.CORES else ""),
            flush=True,
        )
    profile = ""
    if args.profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        timed("careflow", 200)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        profile = buf.getvalue()
    print(
        json.dumps(
            {
                "rounds": rounds,
                "queries": queries,
                "statements": statements,
                "profile": profile,
                "loads": loads,
            }
        )
    )
    return 0


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    common.print_header(
        "request path: trigger-firing save vs plain save vs baseline save+publish",
        {
            "database": f"PostgreSQL 127.0.0.1 db {DB} (one connection, in this process)",
            "broker": f"{args.broker} (no worker consuming)",
            "rounds": args.runs,
            "saves per variant per round": args.saves,
            "other enabled workflows": args.workflows,
        },
    )
    load_before = common.loadavg()
    common.check_services()
    common.recreate_db(DB)
    env = common.careflow_env(
        DJANGO_SETTINGS_MODULE="bench.baseline.settings_careflow",
        DATABASE_URL=f"{common.PG}/{DB}",
        CELERY_BROKER_URL=args.broker,
    )
    try:
        common.migrate(env)
        common.flush_redis(args.broker)
        argv = [
            common.PY,
            __file__,
            "--child",
            "--runs",
            str(args.runs),
            "--saves",
            str(args.saves),
            "--workflows",
            str(args.workflows),
        ]
        if args.profile:
            argv.append("--profile")
        result = common.run_child(argv, env, timeout=1800)
    finally:
        common.flush_redis(args.broker)
        common.drop_db(DB)
    stats = {v: common.summary(result["rounds"][v]) for v in VARIANTS}
    print("\n--- per-save time: median over rounds of each round's median ---")
    labels = {
        "careflow": "careflow Order save firing order.shipped (outbox INSERT + NOTIFY)",
        "plain": "plain save, same columns, no receivers",
        "baseline": "baseline save + on_commit(send_sms.delay)",
    }
    for v in VARIANTS:
        print(
            f"{labels[v]:72s} {common.fmt(stats[v], 'us', 0)}; "
            f"{result['queries'][v]} statements per save (client-side count of one save)"
        )
    print("\n--- statements of one save (as Django captures them) ---")
    for v in VARIANTS:
        for sql in result["statements"][v]:
            print(f"{v:9s} {sql}")
    c, p, b = (stats[v]["median"] for v in VARIANTS)
    verdict = "meets" if c <= 1.5 * p else "MISSES"
    print(f"\ncareflow ÷ plain    = {common.ratio(c, p)} (target ≤ 1.5x, issue 20: {verdict})")
    print(f"careflow ÷ baseline = {common.ratio(c, b)}")
    print(f"baseline ÷ plain    = {common.ratio(b, p)}")
    over = [
        f"round {i}: load average {x:.2f}"
        for i, x in enumerate(result["loads"])
        if x > common.CORES
    ]
    print("\n" + common.load_summary(load_before, over))
    if result["profile"]:
        print("\n--- cProfile of 200 careflow saves (cumulative) ---")
        print(result["profile"])
    return 0


if __name__ == "__main__":
    common.guarded(main)
