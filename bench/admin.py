"""Admin at scale: the message log, the run list, a run's page and a workflow's analytics
(30 days) with 1k vs 1M messages.

    .venv/bin/python bench/admin.py            # 1k tier, then grow to 1,000,000 messages
    .venv/bin/python bench/admin.py --quick    # 1k tier, then 100,000 messages

Rows are generated inside PostgreSQL (INSERT … SELECT FROM generate_series, in batches of
200,000; column values for every concrete field come from the models at run time, so the
script follows model changes). Proportions: per 10 messages, 1 event, 1 run, 1 step run
(1M messages → 100k events/runs/step runs); messages spread over 1,000 patients; runs split
between variants A and B, one in five converted two hours after enrolment; one opt-out (STOP)
per 1,000 messages, from the patients' numbers. The run
definition is the one careflow itself pins (event_dispatch on a real order.shipped event).
Pages are fetched by a logged-in superuser through the Django test client (in-process: no
network, no web server); each page is fetched once to warm up, then --repeats times.
No baseline beyond the same pages' query counts at 1k rows: query count must not grow with
the table, and the target render time is < 300 ms.
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
from bench.common import SetupError

DB = common.bench_db("careflow_bench_admin")
BATCH = 200_000
TARGET_MS = 300.0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000, help="large tier (default 1M)")
    p.add_argument("--small", type=int, default=1_000, help="small tier (default 1k)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="large tier 100k, 3 repeats")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.messages, args.repeats = 100_000, 3
    return args


def insert_rows(model, count: int, exprs: dict[str, str], params: dict | None = None) -> None:
    """INSERT `count` rows generated server-side; `g` is the 1-based row number."""
    from django.db import connection, models

    params = params or {}
    cols, values, args = [], [], []
    for f in model._meta.concrete_fields:
        if f.primary_key or f.generated:
            continue
        cols.append(connection.ops.quote_name(f.column))
        if f.column in exprs:
            values.append(exprs[f.column])
            args.extend(params.get(f.column, []))
        elif isinstance(f, models.UUIDField):
            values.append("gen_random_uuid()")
        elif isinstance(f, models.DateTimeField) and (
            f.auto_now or f.auto_now_add or f.has_default()
        ):
            values.append("now() - g * interval '1 second'")
        elif f.has_default():
            values.append("%s")
            args.append(f.get_db_prep_save(f.get_default(), connection))
        elif f.null:
            values.append("NULL")
        elif isinstance(f, (models.CharField, models.TextField)) and f.blank:
            values.append("''")
        else:
            raise SetupError(f"admin bench: no value for {model.__name__}.{f.name}")
    sql = (
        f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({', '.join(cols)}) "
        f"SELECT {', '.join(values)} FROM generate_series(%s::bigint, %s::bigint) AS g"
    )
    start = 1
    while start <= count:
        end = min(count, start + BATCH - 1)
        with connection.cursor() as cursor:
            cursor.execute(sql, [*args, start, end])
        start = end + 1


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from bench import fixtures
    from integrations import analytics
    from integrations.models import InboundMessage, Integration, MessageHourCount, OutboundMessage
    from patients.models import Order
    from workflows.engine import event_dispatch
    from workflows.models import Event, Run, StepRun, Workflow

    org = fixtures.careflow_clinic()
    patients = fixtures.careflow_patients(org, 1000)
    integration = Integration.objects.get(organization=org)
    workflow = Workflow.objects.get(organization=org, trigger="order.shipped")
    # One real event and run, so payload and pinned definition are careflow's own.
    order_id = fixtures.careflow_orders(org, patients, 1, "REAL")[0]
    order = Order.objects.get(pk=order_id)
    order.status = "shipped"
    order.save()
    event = Event.objects.get(type="order.shipped")
    run = Run.objects.get(pk=event_dispatch(event_id=event.pk)[0])
    definition, payload = run.definition, event.payload
    p0 = min(p.pk for p in patients)
    body = "Hi Pat1, order 100001 has shipped!"

    def grow(messages: int) -> None:
        """Add rows until there are `messages` messages (and a tenth as many of the rest)."""
        have = OutboundMessage.objects.count()
        add = messages - have
        if add <= 0:
            return
        runs_add = add // 10
        e0 = Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        insert_rows(
            Event,
            runs_add,
            {
                "organization_id": "%s",
                "type": "'order.shipped'",
                "payload": "%s::jsonb",
                "subject_type": "'order'",
                "subject_id": "g::text",
                "dedupe_key": f"'bench:{have}:' || g",
                "dispatched_at": "now()",
            },
            {"organization_id": [org.pk], "payload": [json.dumps(payload)]},
        )
        first_event = (
            Event.objects.filter(pk__gt=e0).order_by("pk").values_list("pk", flat=True).first()
        )
        r0 = Run.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        insert_rows(
            Run,
            runs_add,
            {
                "workflow_id": "%s",
                "event_id": "%s + g - 1",
                "status": "'completed'",
                "definition": "%s::jsonb",
                "next_index": "1",
                "error": "''",
                "variant": "(ARRAY['A','B'])[1 + mod(g, 2)]",
                "goal_reached_at": "CASE WHEN mod(g, 5) = 0 "
                "THEN now() - g * interval '1 second' + interval '2 hours' END",
                "started_at": "now() - g * interval '1 second'",
                "finished_at": "now() - g * interval '1 second'",
            },
            {
                "workflow_id": [workflow.pk],
                "event_id": [first_event],
                "definition": [json.dumps(definition)],
            },
        )
        first_run = (
            Run.objects.filter(pk__gt=r0).order_by("pk").values_list("pk", flat=True).first()
        )
        s0 = StepRun.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        insert_rows(
            StepRun,
            runs_add,
            {
                "run_id": "%s + g - 1",
                "index": "0",
                "status": "'succeeded'",
                "inputs": "%s::jsonb",
                "result": "jsonb_build_object('status', 'sent')",
                "attempts": "1",
            },
            {
                "run_id": [first_run],
                "inputs": [
                    json.dumps({"message": body, "to": "+14152000001", "from": "+15005550006"})
                ],
            },
        )
        first_step = (
            StepRun.objects.filter(pk__gt=s0).order_by("pk").values_list("pk", flat=True).first()
        )
        insert_rows(
            OutboundMessage,
            add,
            {
                "organization_id": "%s",
                "integration_id": "%s",
                "patient_id": "%s + mod(g, 1000)",
                "step_run_id": "%s + ((g - 1) / 10)",
                "workflow_id": "%s",
                "step_index": "0",
                "idempotency_key": f"'bench:{have}:' || g",
                "purpose": "'transactional'",
                "to": "'+1415' || lpad((2000000 + mod(g, 1000))::text, 7, '0')",
                "from_number": "'+15005550006'",
                "body": "%s",
                "characters": "34",
                "encoding": "'GSM-7'",
                "segments": "1",
                "status": "(ARRAY['sent','delivered','delivered','delivered','skipped','failed'])[1 + mod(g, 6)]",
                "provider_sid": f"'SM' || md5('{have}:' || g)",
                "provider_status": "'delivered'",
                "attempts": "1",
                "decision": "'{\"allowed\": true}'::jsonb",
                "sent_at": "now() - g * interval '1 second'",
            },
            {
                "organization_id": [org.pk],
                "integration_id": [integration.pk],
                "patient_id": [p0],
                "step_run_id": [first_step],
                "workflow_id": [workflow.pk],
                "body": [body],
            },
        )
        insert_rows(
            InboundMessage,
            add // 1000,
            {
                "organization_id": "%s",
                "integration_id": "%s",
                "provider_sid": f"'SM' || md5('in:{have}:' || g)",
                "from_number": "'+1415' || lpad((2000000 + mod(g, 1000))::text, 7, '0')",
                "to": "'+15005550006'",
                "body": "'STOP'",
                "action": "'opt_out'",
                "created_at": "now() - g * interval '7 seconds'",
            },
            {"organization_id": [org.pk], "integration_id": [integration.pk]},
        )
        # The hourly message counts, as the beat's roll-up (every minute) keeps them.
        while analytics.message_counts_roll_up(batch=50_000):
            pass
        with connection.cursor() as cursor:
            for model in (Event, Run, StepRun, OutboundMessage, InboundMessage, MessageHourCount):
                # VACUUM as autovacuum would have by then: index-only scans need the
                # visibility map of rows written in bulk.
                cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")

    user = get_user_model().objects.create_superuser("benchadmin", "b@example.com", "x")
    client = Client()
    client.force_login(user)

    def pages() -> dict[str, str]:
        latest = Run.objects.order_by("-created_at", "-id").first()
        return {
            "message log changelist": reverse("admin:integrations_outboundmessage_changelist"),
            "run changelist": reverse("admin:workflows_run_changelist"),
            "run change page (timeline)": reverse("admin:workflows_run_change", args=[latest.pk]),
            "workflow analytics (30 days)": reverse(
                "admin:workflows_workflow_analytics", args=[workflow.pk]
            )
            + "?period=30d",
        }

    def measure(tier: str) -> dict:
        out = {}
        for name, url in pages().items():
            response = client.get(url)
            if response.status_code != 200:
                raise SetupError(f"{name} answered {response.status_code} at {url}")
            times, counts = [], set()
            for _ in range(args.repeats):
                with CaptureQueriesContext(connection) as ctx:
                    t0 = time.perf_counter()
                    response = client.get(url)
                    times.append((time.perf_counter() - t0) * 1000)
                counts.add(len(ctx.captured_queries))
            slowest = max(ctx.captured_queries, key=lambda q: float(q["time"]))
            out[name] = {
                "times_ms": times,
                "queries": sorted(counts),
                "url": url,
                "slowest_sql": slowest["sql"][:300],
                "slowest_s": slowest["time"],
            }
            print(
                f"{tier}: {name}: median {statistics.median(times):.1f} ms, "
                f"queries {sorted(counts)}",
                flush=True,
            )
        return out

    tiers = {}
    grow(args.small)
    counts = {m.__name__: m.objects.count() for m in (OutboundMessage, Run, StepRun, Event)}
    tiers["small"] = {"rows": counts, "pages": measure(f"{args.small:,} messages")}
    t0 = time.perf_counter()
    grow(args.messages)
    load_s = time.perf_counter() - t0
    counts = {m.__name__: m.objects.count() for m in (OutboundMessage, Run, StepRun, Event)}
    print(f"loaded to {counts} in {load_s:.0f}s", flush=True)
    tiers["large"] = {
        "rows": counts,
        "pages": measure(f"{args.messages:,} messages"),
        "load_s": load_s,
    }
    print(json.dumps(tiers))
    return 0


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    common.print_header(
        "admin at scale: changelists and run page, 1k vs large",
        {
            "database": f"PostgreSQL 127.0.0.1 db {DB}",
            "client": "django.test.Client, superuser",
            "DEBUG": False,
            "small tier": args.small,
            "large tier": args.messages,
            "repeats": args.repeats,
        },
    )
    common.check_services()
    common.recreate_db(DB)
    env = common.careflow_env(DATABASE_URL=f"{common.PG}/{DB}", CELERY_BROKER_URL="memory://")
    try:
        common.migrate(env, static=True)
        result = common.run_child(
            [
                common.PY,
                __file__,
                "--child",
                "--messages",
                str(args.messages),
                "--small",
                str(args.small),
                "--repeats",
                str(args.repeats),
            ],
            env,
            timeout=5400,
        )
    finally:
        if not args.keep_db:
            common.drop_db(DB)
    small, large = result["small"], result["large"]
    print(
        f"\nrows small: {small['rows']}\nrows large: {large['rows']} "
        f"(generated in {large['load_s']:.0f}s)"
    )
    print(
        f"\n{'page':30s} {'small ms (min-max)':>22s} {'large ms (min-max)':>22s} "
        f"{'queries s→l':>12s}  verdict"
    )
    failed = False
    for name in small["pages"]:
        s, l = small["pages"][name], large["pages"][name]
        ss, ls = common.summary(s["times_ms"]), common.summary(l["times_ms"])
        constant = s["queries"] == l["queries"] and len(l["queries"]) == 1
        fast = ls["median"] < TARGET_MS
        verdict = (
            "ok"
            if constant and fast
            else ("queries grow; " if not constant else "") + ("slow" if not fast else "")
        )
        failed |= not (constant and fast)
        print(
            f"{name:30s} {ss['median']:7.1f} ({ss['min']:.0f}-{ss['max']:.0f})".ljust(53)
            + f"{ls['median']:8.1f} ({ls['min']:.0f}-{ls['max']:.0f})".ljust(24)
            + f"{s['queries']}→{l['queries']}".ljust(14)
            + verdict
        )
        print(f"{'':30s} slowest query at large: {l['slowest_s']}s: {l['slowest_sql'][:160]}")
    print(
        f"\ntargets: constant query count, < {TARGET_MS:.0f} ms at the large tier "
        "(no baseline beyond the 1k-row query count)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    common.guarded(main)
