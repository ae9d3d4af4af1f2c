"""Large installations: 1,000,000 outbox events and 10,000,000 messages, against a small
reference database built by the same code (10,000 events, 100,000 messages).

    .venv/bin/python bench/large.py                       # fill both, measure both, retention
    .venv/bin/python bench/large.py --phases measure      # measure the databases already filled
    .venv/bin/python bench/large.py --phases fill --tiers small
    .venv/bin/python bench/large.py --events 100000 --messages 1000000   # a smaller large tier

Databases: careflow_bench_large (large tier) and careflow_bench_large_small (reference),
BENCH_DB_SUFFIX appended. The large one takes about 10 GB; --drop drops both at the end.

Rows are generated inside PostgreSQL (INSERT … SELECT FROM generate_series, bench.admin's
insert_rows: every other column from the models). The messages table is filled with its
secondary indexes dropped and FK triggers off (session_replication_role = replica), then
the indexes are built again from their own definitions, as a bulk load is done; the rows
are the same as row-by-row inserts would leave. Shape, per tier of E events and M messages:
- 20 clinics, 2,500 patients each; row k belongs to patient k mod 50,000 and that patient's
  clinic;
- E events spread evenly over the last 7 years (84 months), all dispatched but the newest
  3,000 (pending: what a relay finds after a broker outage);
- one run per dispatched event ("succeeded"; the newest 2,000 "waiting", due over the next
  hour) and two step runs per run (3 per 2 … 2E in all);
- M messages over the same 7 years: the first E/… one per run's second step (workflow
  messages), the rest with no step run (broadcasts, API sends); statuses mostly delivered,
  the newest 3,000 pending/sending/sent (in flight), the older "sent" ones looked up 8
  times (reconciliation's limit), all counted by the hourly roll-up.
Then VACUUM ANALYZE.

Measured per tier (each call warmed up once, then --repeats times; median and p95):
- relay: workflows.engine.events_undispatched (idle broker, and with 1,000 tasks queued);
- sweeper: workflows.engine.runs_due;
- dispatch claim: workflows.engine._events_claim of a 100-event batch, and the whole
  events_dispatch of that batch (runs created), each in a transaction rolled back;
- admin changelists of events, runs, step runs and messages (superuser through the Django
  test client): first page, a search, a filter, and a clinic staff user's (scoped) first page.
Each statement of the call's slowest repetition is printed with EXPLAIN (ANALYZE, BUFFERS)
(the slowest three per call), run in a transaction rolled back.
Retention (large tier): manage.py careflow_retention with the clinics' policy at the legal
floor (6 years), timed: rows deleted per second and the longest single transaction.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.admin import insert_rows
from bench.common import SetupError

CLINICS = 20
PATIENTS_PER_CLINIC = 2_500
# Step runs per run: the run's SMS step (a workflow of one step, as most are).
STEPS_PER_RUN = 1
PENDING_EVENTS = 3_000
WAITING_RUNS = 2_000
IN_FLIGHT_MESSAGES = 3_000
SPAN_DAYS = 7 * 365
TIERS = {"small": (10_000, 100_000), "large": (1_000_000, 10_000_000)}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--phases", default="fill,measure,retention")
    p.add_argument("--tiers", default="small,large")
    p.add_argument("--events", type=int, default=TIERS["large"][0], help="large tier events")
    p.add_argument("--messages", type=int, default=TIERS["large"][1], help="large tier messages")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--batch", type=int, default=5_000, help="retention batch size")
    p.add_argument("--retention-clinic", default="", help="retention: this clinic (id) only")
    p.add_argument("--resume", action="store_true", help="fill: continue a fill stopped part way")
    p.add_argument("--drop", action="store_true", help="drop the databases at the end")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--tier", default="", help=argparse.SUPPRESS)
    return p.parse_args()


def db_name(tier: str) -> str:
    return common.bench_db("careflow_bench_large" + ("_small" if tier == "small" else ""))


def sizes(args: argparse.Namespace, tier: str) -> tuple[int, int]:
    return (args.events, args.messages) if tier == "large" else TIERS["small"]


# --- fill -----------------------------------------------------------------------------------


def setup() -> None:
    """The clinics, their patients, the admin users, and one real event and run (so the
    payload and pinned definition are careflow's own)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from bench import fixtures
    from patients.models import Order, StaffMembership
    from patients.roles import CLINIC_ADMIN
    from workflows.engine import event_dispatch
    from workflows.models import Event

    orgs = [fixtures.careflow_clinic() for _ in range(CLINICS)]
    for i, org in enumerate(orgs):
        fixtures.careflow_patients(org, PATIENTS_PER_CLINIC, start=i * PATIENTS_PER_CLINIC)
    patient = orgs[0].patients.order_by("pk").first()
    order_id = fixtures.careflow_orders(orgs[0], [patient], 1, "REAL")[0]
    order = Order.objects.get(pk=order_id)
    order.status = "shipped"
    order.save()
    event_dispatch(event_id=Event.objects.get(type="order.shipped").pk)
    user = get_user_model().objects.create_user("clinicstaff", "s@example.com", "x", is_staff=True)
    user.groups.add(Group.objects.get(name=CLINIC_ADMIN))
    StaffMembership.objects.create(user=user, organization=orgs[0])
    get_user_model().objects.create_superuser("benchadmin", "b@example.com", "x")


def fill(args: argparse.Namespace, tier: str) -> dict[str, Any]:
    common.django_setup()
    from django.db import connection

    from bench import fixtures
    from integrations.models import Integration, OutboundMessage
    from patients.models import Organization
    from workflows.models import Event, Run, StepRun, Workflow

    events, messages = sizes(args, tier)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not Organization.objects.exists():
        setup()
    # Loaded, not kept from setup(): a fill stopped part way is resumed where it stopped.
    orgs = list(Organization.objects.order_by("pk"))
    first_patient = [org.patients.order_by("pk").values_list("pk", flat=True)[0] for org in orgs]
    workflows = [Workflow.objects.get(organization=org).pk for org in orgs]
    integrations = [Integration.objects.get(organization=org).pk for org in orgs]
    real = Run.objects.select_related("event").order_by("pk")[0]
    payload, definition = real.event.payload, real.definition
    timings["clinics and patients"] = time.perf_counter() - t0

    arrays = {
        "orgs": [o.pk for o in orgs],
        "patients": first_patient,
        "workflows": workflows,
        "integrations": integrations,
    }

    # Row g's patient k, its clinic c (1-based for arrays) and time: evenly over SPAN_DAYS,
    # newest first; `total` rows of its table share the span.
    def row(k: str) -> tuple[str, str]:
        """For row patient `k`: its patient's id, and one of `arrays`' values for its clinic
        (the array is the statement's parameter; the clinic is 1-based, as arrays are)."""
        c = f"(1 + mod({k}, {CLINICS}))::int"
        return f"(%s::bigint[])[{c}] + ({k} / {CLINICS})", f"(%s::bigint[])[{c}]"

    k = f"mod(g, {CLINICS * PATIENTS_PER_CLINIC})"
    patient_id, clinic_value = row(k)

    def at(total: int) -> str:
        return f"now() - g * interval '{SPAN_DAYS * 86400 / total:.6f} seconds'"

    def arr(name: str) -> str:
        return clinic_value  # late-bound: the messages' rows rebind it

    def first(model: Any) -> int:
        """The first bench row's id (after the real one), or 0 when there is none yet."""
        ids = model.objects.order_by("pk").values_list("pk", flat=True)[1:2]
        return ids[0] if ids else 0

    t0 = time.perf_counter()
    if not first(Event):
        insert_rows(
            Event,
            events,
            {
                "organization_id": arr("orgs"),
                "type": "'order.shipped'",
                "payload": f"jsonb_set(%s::jsonb, '{{customer,id}}', to_jsonb({patient_id}))",
                "subject_type": "'order'",
                "subject_id": "g::text",
                "dedupe_key": "'large:' || g",
                "occurred_at": at(events),
                "created_at": at(events),
                "dispatched_at": f"CASE WHEN g > {PENDING_EVENTS} THEN {at(events)} END",
            },
            {
                "organization_id": [arrays["orgs"]],
                "payload": [json.dumps(payload), arrays["patients"]],
                "occurred_at": [],
            },
        )
    first_event = first(Event)
    timings["events"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    runs = events - PENDING_EVENTS
    # Run g is event PENDING_EVENTS + g's (the pending events have none yet).
    run_at = f"now() - (g + {PENDING_EVENTS}) * interval '{SPAN_DAYS * 86400 / events:.6f} seconds'"
    if Run.objects.count() <= runs:
        Run.objects.exclude(pk=real.pk).delete()  # a stage stopped part way starts again
        insert_rows(
            Run,
            runs,
            {
                "workflow_id": arr("workflows"),
                "event_id": f"%s + {PENDING_EVENTS} + g - 1",
                "status": f"CASE WHEN g <= {WAITING_RUNS} THEN 'waiting' ELSE 'succeeded' END",
                "definition": "%s::jsonb",
                "next_index": "1",
                "patient_key": f"({patient_id})::text",
                "due_at": f"CASE WHEN g <= {WAITING_RUNS} THEN now() + g * interval '1.8 seconds' END",
                "started_at": run_at,
                "finished_at": f"CASE WHEN g > {WAITING_RUNS} THEN {run_at} END",
                "created_at": run_at,
                "updated_at": run_at,
            },
            {
                "workflow_id": [arrays["workflows"]],
                "event_id": [first_event],
                "definition": [json.dumps(definition)],
                "patient_key": [arrays["patients"]],
            },
        )
    first_run = first(Run)
    timings["runs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    step_at = (
        f"now() - ((g - 1) / {STEPS_PER_RUN} + 1 + {PENDING_EVENTS}) "
        f"* interval '{SPAN_DAYS * 86400 / events:.6f} seconds'"
    )
    if StepRun.objects.count() < STEPS_PER_RUN * runs:
        StepRun.objects.exclude(run=real).delete()
        insert_rows(
            StepRun,
            STEPS_PER_RUN * runs,
            {
                "run_id": f"%s + (g - 1) / {STEPS_PER_RUN}",
                "index": f"mod(g - 1, {STEPS_PER_RUN})",
                "status": f"CASE WHEN g <= {STEPS_PER_RUN * WAITING_RUNS} "
                f"AND mod(g, {STEPS_PER_RUN}) = 0 THEN 'waiting' "
                "ELSE 'succeeded' END",
                "inputs": "%s::jsonb",
                "result": "jsonb_build_object('status', 'sent')",
                "attempts": "1",
                "created_at": step_at,
                "updated_at": step_at,
                "finished_at": step_at,
            },
            {
                "run_id": [first_run],
                "inputs": [json.dumps({"message": fixtures.BODY, "from": common.SANDBOX_FROM})],
            },
        )
    first_step = (
        StepRun.objects.filter(run_id__gte=first_run).order_by("pk").values_list("pk", flat=True)[0]
    )
    timings["step runs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    table = OutboundMessage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = %s "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conname = i.indexname)",
            [table],
        )
        secondary = cursor.fetchall()
        for name, _ in secondary:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("SET session_replication_role = replica")
    linked = min(runs, messages)
    ratio = max(1, messages // linked)
    # Every ratio-th message is run g / ratio's (its SMS step's), of that run's patient and
    # clinic; the others are broadcasts' and API sends'.
    linked_row = f"mod(g, {ratio}) = 0 AND g / {ratio} <= {linked}"
    k = (
        f"(CASE WHEN {linked_row} THEN mod(g / {ratio}, {CLINICS * PATIENTS_PER_CLINIC}) "
        f"ELSE mod(g, {CLINICS * PATIENTS_PER_CLINIC}) END)"
    )
    patient_id, clinic_value = row(k)
    status = (
        f"CASE WHEN g <= {IN_FLIGHT_MESSAGES} THEN (ARRAY['pending','sending','sent'])[1 + mod(g, 3)]"
        " ELSE (ARRAY['delivered','delivered','delivered','delivered','sent','skipped',"
        "'failed','undelivered'])[1 + mod(g, 8)] END"
    )
    error = f"CASE WHEN mod(g, 8) IN (6, 7) AND g > {IN_FLIGHT_MESSAGES} THEN '30003' ELSE '' END"
    msg_at = at(messages)
    insert_rows(
        OutboundMessage,
        messages,
        {
            "organization_id": arr("orgs"),
            "integration_id": arr("integrations"),
            "patient_id": patient_id,
            "step_run_id": f"CASE WHEN {linked_row} "
            f"THEN %s + {STEPS_PER_RUN} * (g / {ratio} - 1) "
            f"+ {STEPS_PER_RUN - 1} END",
            "workflow_id": f"CASE WHEN {linked_row} THEN {arr('workflows')} END",
            "step_index": "1",
            "idempotency_key": "'large:' || g",
            "counted_status": status,
            "counted_error_code": error,
            "purpose": "'transactional'",
            "to": f"'+1415' || lpad((2000000 + {k})::text, 7, '0')",
            "from_number": f"'{common.SANDBOX_FROM}'",
            "body": "%s",
            "characters": "34",
            "encoding": "'GSM-7'",
            "segments": "1",
            "status": status,
            "provider_sid": f"CASE WHEN g > {IN_FLIGHT_MESSAGES} THEN 'SM' || md5(g::text) END",
            "provider_status": "'delivered'",
            "error_code": error,
            "attempts": "1",
            "decision": "'{\"allowed\": true}'::jsonb",
            "status_check_at": f"CASE WHEN g <= {IN_FLIGHT_MESSAGES} THEN now() END",
            # Older "sent" ones were looked up as often as reconciliation asks, and left so.
            "status_checks": f"CASE WHEN g <= {IN_FLIGHT_MESSAGES} THEN 0 ELSE 8 END",
            "sent_at": msg_at,
            "created_at": msg_at,
            "updated_at": msg_at,
        },
        {
            "organization_id": [arrays["orgs"]],
            "integration_id": [arrays["integrations"]],
            "patient_id": [arrays["patients"]],
            "step_run_id": [first_step],
            "workflow_id": [arrays["workflows"]],
            "body": ["Hi Pat1, order 100001 has shipped!"],
        },
    )
    timings["messages (indexes off)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _, definition_sql in secondary:
            cursor.execute(definition_sql)
    timings["messages' indexes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        for model in (Event, Run, StepRun, OutboundMessage, Organization):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    timings["vacuum analyze"] = time.perf_counter() - t0
    counts = table_counts()
    for name, seconds in timings.items():
        print(f"{tier}: fill {name}: {seconds:.0f} s", flush=True)
    print(f"{tier}: rows {counts}", flush=True)
    return {"timings_s": timings, "rows": counts}


def table_counts() -> dict[str, Any]:
    from django.db import connection

    from integrations.models import OutboundMessage
    from workflows.models import Event, Run, StepRun

    out: dict[str, Any] = {}
    with connection.cursor() as cursor:
        for model in (Event, Run, StepRun, OutboundMessage):
            table = model._meta.db_table
            cursor.execute(
                f"SELECT count(*), pg_size_pretty(pg_total_relation_size('{table}')) FROM {table}"
            )
            count, size = cursor.fetchone()
            out[model.__name__] = f"{count:,} rows, {size}"
    return out


# --- measure --------------------------------------------------------------------------------


class Rollback(Exception):
    pass


def explain(sql: str) -> str:
    from django.db import connection, transaction

    lines: list[str] = []
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                lines = [row[0] for row in cursor.fetchall()]
            raise Rollback
    except Rollback:
        pass
    return "\n".join("      " + line for line in lines)


def timed(name: str, call: Any, repeats: int, rollback: bool = False) -> dict[str, Any]:
    """Time `call` (warm-up first), print median/p95, the query count and the plans of the
    slowest repetition's three slowest statements."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    def once() -> tuple[float, list[dict[str, Any]]]:
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            if rollback:
                try:
                    with transaction.atomic():
                        call()
                        raise Rollback
                except Rollback:
                    pass
            else:
                call()
            elapsed = (time.perf_counter() - t0) * 1000
        return elapsed, list(ctx.captured_queries)

    once()
    runs = [once() for _ in range(repeats)]
    times = [t for t, _ in runs]
    _, queries = max(runs, key=lambda r: r[0])
    median, p95 = statistics.median(times), common.percentile(times, 0.95)
    print(
        f"  {name}: median {median:.1f} ms, p95 {p95:.1f} ms, max {max(times):.1f} ms, "
        f"{len(queries)} queries",
        flush=True,
    )
    plans = sorted(queries, key=lambda q: float(q["time"]), reverse=True)[:3]
    for q in plans:
        sql = q["sql"]
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH", "DELETE", "INSERT")):
            continue
        print(f"    [{float(q['time']) * 1000:.1f} ms] {sql[:400]}")
        print(explain(sql), flush=True)
    return {"median_ms": median, "p95_ms": p95, "queries": len(queries)}


def measure(args: argparse.Namespace, tier: str) -> dict[str, Any]:
    common.django_setup()
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from patients.models import Organization
    from workflows import engine
    from workflows.models import Event

    print(f"--- {tier} tier: {table_counts()}", flush=True)
    out: dict[str, Any] = {}
    r = args.repeats
    out["relay (idle broker)"] = timed(
        "relay claim, idle broker (events_undispatched)",
        lambda: engine.events_undispatched(queued=0),
        r,
        rollback=True,
    )
    out["relay (1000 queued)"] = timed(
        "relay claim, 1,000 tasks queued (events_undispatched)",
        lambda: engine.events_undispatched(queued=1000),
        r,
        rollback=True,
    )
    out["sweeper"] = timed(
        "sweeper (runs_due, 60 s lookahead)",
        lambda: engine.runs_due(lookahead=timezone.timedelta(seconds=60)),
        r,
        rollback=True,
    )
    pending = list(
        Event.objects.filter(dispatched_at__isnull=True)
        .order_by("id")
        .values_list("id", flat=True)[:100]
    )
    out["dispatch claim"] = timed(
        "dispatch claim of 100 events (_events_claim)",
        lambda: engine._events_claim(event_ids=pending, now=timezone.now()),
        r,
        rollback=True,
    )
    out["dispatch"] = timed(
        "dispatch of 100 events, runs created (events_dispatch)",
        lambda: engine.events_dispatch(event_ids=pending, claim_per_event=3),
        r,
        rollback=True,
    )
    superuser, staff = Client(), Client()
    superuser.force_login(get_user_model().objects.get(username="benchadmin"))
    staff.force_login(get_user_model().objects.get(username="clinicstaff"))
    org = Organization.objects.order_by("pk").first()
    assert org is not None
    pages = {
        "events": reverse("admin:workflows_event_changelist"),
        "runs": reverse("admin:workflows_run_changelist"),
        "step runs": reverse("admin:workflows_steprun_changelist"),
        "messages": reverse("admin:integrations_outboundmessage_changelist"),
    }
    variants = {
        "events": {"search": None, "filter": "?type=order.shipped"},
        "runs": {"search": "?q=Pat1", "filter": "?status__exact=waiting"},
        "step runs": {"search": None, "filter": "?status__exact=waiting"},
        "messages": {"search": "?q=%2B14152000017", "filter": "?status__exact=failed"},
    }

    def get(client: Client, url: str) -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise SetupError(f"{url} answered {response.status_code}")

    for name, url in pages.items():
        out[f"admin {name} first page"] = timed(
            f"admin {name}: first page", lambda u=url: get(superuser, u), r
        )
        for kind, query in variants[name].items():
            if query:
                out[f"admin {name} {kind}"] = timed(
                    f"admin {name}: {kind} {query}", lambda u=url + query: get(superuser, u), r
                )
        out[f"admin {name} clinic"] = timed(
            f"admin {name}: clinic staff's first page (clinic {org.pk})",
            lambda u=url: get(staff, u),
            r,
        )
    return out


# --- retention ------------------------------------------------------------------------------


def retention(args: argparse.Namespace, tier: str) -> dict[str, Any]:
    common.django_setup()
    from io import StringIO

    from django.core.management import call_command

    print(f"--- retention, {tier} tier, before: {table_counts()}", flush=True)
    clinic = [f"--clinic={args.retention_clinic}"] if args.retention_clinic else []
    dry = StringIO()
    t0 = time.perf_counter()
    call_command("careflow_retention", "--dry-run", *clinic, stdout=dry)
    print(f"  dry run took {time.perf_counter() - t0:.1f} s")
    print("  dry run:\n" + "\n".join("    " + line for line in dry.getvalue().splitlines()))
    out = StringIO()
    t0 = time.perf_counter()
    call_command("careflow_retention", f"--batch-size={args.batch}", *clinic, stdout=out)
    elapsed = time.perf_counter() - t0
    lines = out.getvalue().splitlines()
    deleted = sum(
        int(part.split()[0])
        for line in lines
        if ": batch " in line
        for part in line.split(": ", 2)[2].rsplit(" (", 1)[0].split(", ")
    )
    print(f"  {deleted:,} rows deleted in {elapsed:.1f} s: {deleted / elapsed:,.0f} rows/s")
    print("\n".join("    " + line for line in lines[-25:]))
    print(f"  retention took {elapsed:.0f} s; after: {table_counts()}", flush=True)
    return {"seconds": elapsed}


# --- driver ---------------------------------------------------------------------------------


def main() -> int:
    args = parse()
    if args.child:
        result = {"fill": fill, "measure": measure, "retention": retention}[args.child](
            args, args.tier
        )
        print(json.dumps(result, default=str))
        return 0
    phases = args.phases.split(",")
    tiers = args.tiers.split(",")
    common.print_header(
        "large installations: {:,} events, {:,} messages".format(*sizes(args, "large")),
        {
            "databases": ", ".join(db_name(t) for t in tiers),
            "tiers": {t: sizes(args, t) for t in tiers},
            "phases": phases,
            "repeats": args.repeats,
            "retention batch": args.batch,
        },
    )
    common.psql("SELECT 1")  # no Redis: the children's broker is memory://
    for phase in ("fill", "measure", "retention"):
        if phase not in phases:
            continue
        for tier in tiers:
            if phase == "retention" and tier != "large":
                continue
            db = db_name(tier)
            env = common.careflow_env(
                DATABASE_URL=f"{common.PG}/{db}", CELERY_BROKER_URL="memory://"
            )
            if phase == "fill" and not args.resume:
                common.recreate_db(db)
                common.migrate(env, static=True)
            load = Path("/proc/loadavg").read_text().split(" ")[:3]
            print(f"== {phase} {tier} (loadavg {' '.join(load)}, {time.strftime('%H:%M:%S')})")
            common.run_child(
                [common.PY, __file__, "--child", phase, "--tier", tier, *sys.argv[1:]],
                env,
                timeout=4 * 3600,
            )
            load = Path("/proc/loadavg").read_text().split(" ")[:3]
            print(f"== end {phase} {tier} (loadavg {' '.join(load)}, {time.strftime('%H:%M:%S')})")
    if args.drop:
        for tier in tiers:
            common.drop_db(db_name(tier))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    common.guarded(main)
