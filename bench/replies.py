"""Replies: patients' answers as Twilio's signed inbound-SMS webhooks, at a steady pace,
against the production web server (gunicorn) with real workers.

    .venv/bin/python bench/replies.py            # 20 replies/s for 30 s, 3 runs
    .venv/bin/python bench/replies.py --quick    # smoke run, < 1 min

Figure 1, webhook answer: per reply, the POST leaving this driver → the web server's answer
(what Twilio waits for; its timeout is 15 s, the target p99 ≤ 50 ms: the work goes to the
worker). Figure 2, inbound webhook → next step sent: when a workflow can wait for a reply
(the "Wait for reply" step, `Step.Type.REPLY`), each run first texts its patient a question
(send SMS → wait for reply {Yes: "yes" or "confirm" → next} → send SMS); once every run
waits, the patients answer "Confirm" at the pace, and per reply the POST → the sandbox's
`received_at` of that patient's follow-up text (target p99 ≤ 100 ms). Without that step
type the replies reach patients with nothing waiting (kept as inbound messages) and figure 2
is skipped, said so. Both clocks are this machine's wall clock. No baseline: a hand-written app has no
conversation to compare with; the figures stand against their targets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import SetupError

DB = common.bench_db("careflow_bench_replies")
QUESTION = "Order {{order.number}} has shipped. Did it arrive? Reply CONFIRM"
# Not "Yes": YES is also an opt-in keyword (integrations.twilio.keywords, as at Twilio), and
# keywords are never answers; the figure is the conversation's, not the keyword handling's.
REPLY = "Confirm"
FOLLOW_UP = "Thanks {{customer.firstName}}, order {{order.number}} confirmed."
WEBHOOK_TARGET_MS = 50.0
FOLLOW_UP_TARGET_MS = 100.0
NO_REPLY_STEP = (
    "SKIPPED: no Wait-for-reply step in this careflow (workflows.models.Step.Type has no "
    "REPLY), so no run waits for these replies; figure 2 needs it"
)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=20.0, help="replies/s (default 20)")
    p.add_argument("--seconds", type=float, default=30.0, help="replying time per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--web-workers", type=int, default=4, help="gunicorn sync workers (the README's 4)"
    )
    p.add_argument("--quick", action="store_true", help="1 run of 5 s")
    p.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--web-url", help=argparse.SUPPRESS)
    p.add_argument("--pids", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 5.0
    return args


# --- child: runs inside careflow's settings ----------------------------------------------------


def reply_step_exists() -> bool:
    from workflows.models import Step

    return "reply" in Step.Type.values


def conversation_workflow(org: Any) -> Any:
    """send SMS (the question) → wait for reply {Yes: "yes"/"confirm" → next} → send SMS,
    in the agreed parameters of the Wait-for-reply step."""
    from workflows.models import Step, Workflow

    workflow = Workflow.objects.create(
        organization=org, name="Did it arrive?", trigger="order.shipped", enabled=True
    )
    sms = {"adapter": "twilio", "function": "sendSMS"}
    recipient = {"to": "{{customer.phone}}", "from": common.SANDBOX_FROM}
    wait = {
        "kind": "duration",
        "seconds": "86400",
        "branches": [
            {"label": "Yes", "match": "keywords", "keywords": ["yes", "confirm"], "goto": "next"}
        ],
        "otherwise": {"goto": "end", "reask": ""},
        "no_reply": {"goto": "end"},
    }
    steps: list[dict[str, Any]] = [
        {**sms, "parameters": {"message": QUESTION, **recipient}},
        {"type": "reply", "adapter": "", "function": "", "parameters": wait},
        {**sms, "parameters": {"message": FOLLOW_UP, **recipient}},
    ]
    for position, fields in enumerate(steps, start=1):
        Step.objects.create(workflow=workflow, position=position, **fields)
    return workflow


def wait_until(what: str, done: Any, timeout: float, status: Any) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SetupError(f"{what} not reached after {timeout:.0f}s: {status()}")
        time.sleep(0.25)


# Where the time of "webhook → next step sent" goes, per reply, from the rows the reply left
# (database clock = this machine's): each stage ends at the named point.
STAGES = (
    ("webhook → reply routed", "routed"),
    ("routed → worker starts the next step", "step"),
    ("next step started → message sending", "sending"),
    ("sending → accepted (HTTP to sandbox)", "sent"),
    ("accepted → sandbox received_at", "received"),
)


def stages_measure(
    timings: dict[str, tuple[float, float, int]], follow_ups: dict[str, float]
) -> dict[str, list[float]]:
    """Per stage of STAGES, the milliseconds each reply spent in it: POST sent → the wait
    resolved (in the webhook's transaction) → the follow-up's StepRun created (a worker took
    the woken run) → its OutboundMessage sending → sent → the sandbox's received_at."""
    from integrations.models import OutboundMessage
    from workflows.models import ReplyWait

    waits = {
        w.phone: w
        for w in ReplyWait.objects.filter(phone__in=list(follow_ups), resolved_at__isnull=False)
    }
    messages = {
        (m.step_run.run_id): m  # type: ignore[union-attr]
        for m in OutboundMessage.objects.filter(
            step_run__run_id__in=[w.run_id for w in waits.values()],
            step_run__index__gt=0,
            sent_at__isnull=False,
        ).select_related("step_run")
    }
    out: dict[str, list[float]] = {key: [] for _, key in STAGES}
    for phone, received in follow_ups.items():
        wait = waits.get(phone)
        message = messages.get(wait.run_id) if wait else None
        if wait is None or message is None or message.step_run is None:
            continue
        assert wait.resolved_at and message.sending_started_at and message.sent_at
        points = [
            timings[phone][0],
            wait.resolved_at.timestamp(),
            message.step_run.created_at.timestamp(),
            message.sending_started_at.timestamp(),
            message.sent_at.timestamp(),
            received,
        ]
        for (_, key), start, end in zip(STAGES, points, points[1:], strict=False):
            out[key].append((end - start) * 1000)
    return out


def drive(
    url: str, token: str, phones: list[str], rate: float
) -> dict[str, tuple[float, float, int]]:
    """POST one signed reply per phone at `rate`/s on an absolute schedule (a pool of
    senders, so a slow answer does not delay the next reply); per phone (sent, answered,
    HTTP status, 0 when no answer came)."""
    import requests

    from integrations.twilio.sandbox import inbound_sms_params, signed_webhook_headers

    local = threading.local()
    timings: dict[str, tuple[float, float, int]] = {}

    def post(phone: str) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        params = inbound_sms_params(
            account_sid=common.SANDBOX_ACCOUNT[0], from_=phone, to=common.SANDBOX_FROM, body=REPLY
        )
        headers = signed_webhook_headers(url, params, token)
        sent = time.time()
        try:
            status = session.post(url, data=params, headers=headers, timeout=15).status_code
        except requests.RequestException:
            status = 0
        timings[phone] = (sent, time.time(), status)

    with ThreadPoolExecutor(max_workers=16) as pool:
        start = time.perf_counter()
        for i, phone in enumerate(phones):
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            pool.submit(post, phone)
    return timings


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    from django.conf import settings
    from django.urls import reverse

    from bench import fixtures
    from integrations.models import InboundMessage, Integration
    from patients.models import Patient
    from workflows.models import Run

    sandbox = common.Sandbox.__new__(common.Sandbox)
    sandbox.url = settings.TWILIO_API_BASE_URL
    per_run = int(args.rate * args.seconds)
    org = fixtures.careflow_clinic(with_sms_workflow=False, sender_rate=1000.0)
    integration = Integration.objects.get(organization=org)
    path = reverse("twilio-inbound-sms", kwargs={"integration_uuid": integration.uuid})
    url = f"{args.web_url}{path}"
    conversing = reply_step_exists()
    workflow = conversation_workflow(org) if conversing else None
    print(
        "careflow: workflow send SMS → wait for reply → send SMS"
        if conversing
        else f"careflow: {NO_REPLY_STEP}",
        flush=True,
    )
    patients = fixtures.careflow_patients(org, per_run * args.runs + 20)

    def questions_out(batch: list[Any], prefix: str) -> None:
        """Ship an order of each patient; wait until each run waits for the answer."""
        runs = Run.objects.filter(workflow=workflow)
        ended = runs.exclude(
            status__in=[Run.Status.PENDING, Run.Status.RUNNING, Run.Status.WAITING]
        )
        waiting_before, ended_before = runs.filter(status=Run.Status.WAITING).count(), ended.count()
        ids = fixtures.careflow_orders(org, batch, len(batch), prefix)
        sandbox.reset()
        fixtures.ship("careflow", ids, None)
        sandbox.wait_accepted(len(ids), timeout=300, stall=60)
        # The questions were accepted; once the queues are empty their runs have moved on
        # from the send to the wait.
        common.broker_drain(settings.CELERY_BROKER_URL)

        def all_waiting() -> bool:
            if ended.count() > ended_before:  # nobody answered yet: no run may have ended
                run = ended.order_by("-id").first()
                raise SetupError(
                    f"a run ended before its patient answered: {run.status if run else '?'} "
                    f"{(run.error if run else '')[:300]!r}; {status()}"
                )
            waiting = runs.filter(status=Run.Status.WAITING).count()
            return waiting - waiting_before >= len(ids)

        def status() -> str:
            counts: dict[str, int] = {}
            for value in runs.values_list("status", flat=True):
                counts[value] = counts.get(value, 0) + 1
            return f"sandbox {sandbox.stats()}, runs {counts}"

        wait_until(f"{len(ids)} runs waiting for a reply", all_waiting, 300, status)

    def measure(batch: list[Any], prefix: str) -> dict[str, Any]:
        if conversing:
            questions_out(batch, prefix)
        drained = common.broker_drain(settings.CELERY_BROKER_URL)
        if drained > 2:
            print(f"careflow: waited {drained:.1f}s for leftover queued tasks", flush=True)
        sandbox.reset()
        kept_before = InboundMessage.objects.filter(organization=org).count()
        meter = common.SideMeter(DB, {**json.loads(args.pids), "driver": [os.getpid()]})
        meter.start()
        phones = [p.phone for p in batch]
        timings = drive(url, common.SANDBOX_ACCOUNT[1], phones, args.rate)
        answered = [t for t in timings.values() if 200 <= t[2] < 300]
        follow_ups: dict[str, float] = {}
        if conversing:
            sandbox.wait_accepted(len(phones), timeout=120, stall=30)
            for message in sandbox.messages():
                if "confirmed" in message["body"]:
                    follow_ups.setdefault(message["to"], message["received_at"])
        measured = meter.stop()
        meter.close()
        kept = InboundMessage.objects.filter(organization=org).count() - kept_before
        stages = stages_measure(timings, follow_ups) if conversing else {}
        return {
            "replies": len(phones),
            "answered_2xx": len(answered),
            "statuses": sorted({t[2] for t in timings.values()}),
            "kept": kept,
            "webhook_ms": [(t[1] - t[0]) * 1000 for t in answered],
            "follow_ups": len(follow_ups),
            "follow_up_ms": [
                (follow_ups[phone] - timings[phone][0]) * 1000
                for phone in phones
                if phone in follow_ups and phone in timings
            ],
            "stages": stages,
            "span_s": max(t[0] for t in timings.values()) - min(t[0] for t in timings.values()),
            "measured": measured,
        }

    def line(values: list[float]) -> dict[str, float]:
        return {
            "p50": common.percentile(values, 0.50),
            "p95": common.percentile(values, 0.95),
            "p99": common.percentile(values, 0.99),
            "max": max(values) if values else float("nan"),
        }

    warm = measure(patients[:20], "W")
    print(
        f"careflow: warm-up {warm['answered_2xx']}/20 answered, {warm['follow_ups']} follow-ups",
        flush=True,
    )
    if warm["answered_2xx"] < 20 or (conversing and warm["follow_ups"] < 20):
        raise SetupError(f"warm-up replies were not all handled: {warm}")
    runs = []
    for run in range(args.runs):
        batch = patients[20 + run * per_run : 20 + (run + 1) * per_run]
        result = measure(batch, f"R{run}-")
        result["webhook"] = line(result.pop("webhook_ms"))
        result["follow_up"] = line(result.pop("follow_up_ms")) if conversing else None
        result["stages"] = {key: line(values) for key, values in result["stages"].items()}
        w, f = result["webhook"], result["follow_up"]
        print(
            f"careflow run {run + 1}: {result['answered_2xx']}/{result['replies']} replies "
            f"answered 2xx over {result['span_s']:.1f}s (statuses {result['statuses']}), "
            f"{result['kept']} kept; webhook p50 {w['p50']:.1f} ms, p95 {w['p95']:.1f} ms, "
            f"p99 {w['p99']:.1f} ms, max {w['max']:.1f} ms"
            + (
                f"; next step sent {result['follow_ups']}/{result['replies']}: "
                f"p50 {f['p50']:.1f} ms, p95 {f['p95']:.1f} ms, p99 {f['p99']:.1f} ms, "
                f"max {f['max']:.1f} ms"
                if f
                else ""
            )
            + f"; {common.cost_text(result['measured'], result['replies'])}",
            flush=True,
        )
        for label, key in STAGES:
            if key in result["stages"]:
                st = result["stages"][key]
                print(
                    f"  {label}: p50 {st['p50']:.1f} ms, p95 {st['p95']:.1f} ms, "
                    f"p99 {st['p99']:.1f} ms, max {st['max']:.1f} ms",
                    flush=True,
                )
        runs.append(result)
    patients_left = Patient.objects.filter(organization=org).count()
    print(json.dumps({"runs": runs, "conversing": conversing, "patients": patients_left}))
    return 0


# --- orchestrator ------------------------------------------------------------------------------


def gunicorn(env: dict[str, str], logdir: Path, workers: int) -> tuple[common.Proc, str]:
    """The README's production web command, `gunicorn config.wsgi`, on a free port."""
    port = common.free_port()
    web = common.Proc(
        "web",
        [
            common.PY,
            "-m",
            "gunicorn",
            "config.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            # gunicorn 27's control socket has one default path per user: another gunicorn
            # on this machine (a test's) would take it over.
            "--no-control-socket",
        ],
        env,
        logdir,
    )
    web.start(ready=b"Booting worker", timeout=60)
    return web, f"http://127.0.0.1:{port}"


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    common.print_header(
        "replies: signed inbound SMS webhooks → answer, and → the next step sent",
        {
            **common.WORKER_SETTINGS,
            "careflow queues": "events,runs,sends + separate beat",
            "web": f"gunicorn config.wsgi -w {args.web_workers} (sync workers)",
            "sandbox": "own process, status callbacks off",
            "replies": f"{args.rate:g}/s for {args.seconds:g} s, {args.runs} runs",
            "driver": "16 threads, keep-alive sessions, absolute schedule",
        },
    )
    print(common.COSTS_HEADER.replace("driver (the saving process)", "web (gunicorn), driver"))
    load_before = common.loadavg()
    common.statements_check()
    common.check_services()
    logdir = Path(tempfile.mkdtemp(prefix="careflow-bench-replies-"))
    print(f"logs: {logdir}", flush=True)
    sandbox = common.Sandbox(logdir).start()
    env = common.careflow_env(sandbox.url, DATABASE_URL=f"{common.PG}/{DB}")
    procs: list[common.Proc] = []
    try:
        procs = common.system_start("careflow", DB, env, logdir)
        web, web_url = gunicorn(env, logdir, args.web_workers)
        procs.append(web)
        result = common.run_child(
            [
                common.PY,
                __file__,
                "--child",
                "--web-url",
                web_url,
                "--rate",
                str(args.rate),
                "--seconds",
                str(args.seconds),
                "--runs",
                str(args.runs),
                "--pids",
                json.dumps(common.side_pids(procs, sandbox)),
            ],
            env,
            timeout=3600,
        )
    finally:
        common.stop_all(reversed(procs))
        common.flush_redis(env["CELERY_BROKER_URL"])
        sandbox.stop()
        if not args.keep_db:
            common.drop_db(DB)
    code = report(result)
    flags = common.load_flags({"careflow": result["runs"]})
    print("\n" + common.load_summary(load_before, flags))
    return code


def report(result: dict[str, Any]) -> int:
    runs = result["runs"]
    costs = [common.per_event(r["measured"], r["replies"]) for r in runs]
    print("\n--- per reply (all processes; redis apart) ---")
    print(
        f"CPU per reply: {common.fmt(common.summary([c['cpu_total_ms'] for c in costs]), 'ms', 2)}"
    )
    if "statements" in costs[0]:
        print(
            "statements per reply (this db): "
            + common.fmt(common.summary([c["statements"] for c in costs]), "statements", 2)
        )
        print(
            f"WAL per reply (this db): {common.fmt(common.summary([c['wal_bytes'] for c in costs]), 'B', 0)}"
        )
    print("\n--- results (median of runs; min/max in brackets) ---")
    webhook = {q: common.summary([r["webhook"][q] for r in runs]) for q in ("p50", "p95", "p99")}
    for q, stat in webhook.items():
        print(f"webhook answer {q}:        {common.fmt(stat, 'ms')}")
    met = webhook["p99"]["median"] <= WEBHOOK_TARGET_MS
    print(f"  target p99 ≤ {WEBHOOK_TARGET_MS:g} ms: {'met' if met else 'MISSED'}")
    missing = sum(r["replies"] - r["answered_2xx"] for r in runs)
    missing += sum(r["replies"] - r["kept"] for r in runs)
    if result["conversing"]:
        follow = {
            q: common.summary([r["follow_up"][q] for r in runs]) for q in ("p50", "p95", "p99")
        }
        for q, stat in follow.items():
            print(f"webhook → next step {q}:  {common.fmt(stat, 'ms')}")
        follow_met = follow["p99"]["median"] <= FOLLOW_UP_TARGET_MS
        print(f"  target p99 ≤ {FOLLOW_UP_TARGET_MS:g} ms: {'met' if follow_met else 'MISSED'}")
        met = met and follow_met
        missing += sum(r["replies"] - r["follow_ups"] for r in runs)
    else:
        print(f"webhook → next step: {NO_REPLY_STEP}")
    if missing:
        print(f"\nWARNING: {missing} replies unanswered, not kept, or without their follow-up")
    return 0 if met and not missing else 1


if __name__ == "__main__":
    common.guarded(main)
