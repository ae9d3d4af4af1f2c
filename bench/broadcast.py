"""A broadcast to a large segment: achieved send rate vs the sender's rate, and memory.

    .venv/bin/python bench/broadcast.py                 # 100,000 patients at 50 segments/s
    .venv/bin/python bench/broadcast.py --quick         # 10,000 patients (about 2 minutes)
    .venv/bin/python bench/broadcast.py --patients 50000 --rate 50

One clinic with N patients (inserted in bulk), a segment of all of them and a marketing SMS
broadcast from one number whose throttle is R segments/s, sent by real Celery workers
(`-Q events,runs,sends -c 6` plus beat) to the loopback Twilio sandbox. 2 % of the patients
have no marketing consent and 2 % live in a time zone where it is night now: they must be
skipped ("no consent") and deferred (quiet hours) respectively, never sent.

Figures: the achieved rate of accepted messages over the steady window (from 5 % to 95 % of
the messages to send, by the sandbox's own count), which must be within ±5 % of R; the
resident memory (RSS) of the worker processes (production and sending both run there:
`broadcast_advance` and `broadcast_messages_send`) and of beat, sampled every 2 s, at 10 %,
50 % and 90 % of the way and at its peak, so bounded memory shows as a flat line; and the
checks on a sample of recipients. Its own database (careflow_bench_broadcasts) and Redis db
(BENCH_BROADCAST_REDIS_DB, default 6).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import PG, PY, REDIS

DB = common.bench_db("careflow_bench_broadcasts")
REDIS_URL = f"{REDIS}/{os.environ.get('BENCH_BROADCAST_REDIS_DB', '6')}"
# The share of patients seeded without marketing consent, and in a zone where it is night.
NO_CONSENT_EVERY, QUIET_EVERY = 50, 50
SAMPLE = 500


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--patients", type=int, default=100_000)
    p.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="sender rate R, segments/s (default 50: what this 2-core machine sustained with "
        "other work on it; about 70/s was the most it reached)",
    )
    p.add_argument("--quick", action="store_true", help="10,000 patients")
    p.add_argument(
        "--concurrency",
        type=int,
        default=6,
        help="worker processes (default 6: a send waits on PostgreSQL, Redis and Twilio's "
        "answer most of its time, so two processes leave the cores idle)",
    )
    p.add_argument("--timeout", type=float, default=0, help="seconds (default: 3 × N/R + 300)")
    p.add_argument("--child", choices=["setup", "verify"], help=argparse.SUPPRESS)
    p.add_argument("--broadcast", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.patients = 10_000
    if not args.timeout:
        args.timeout = 3 * args.patients / args.rate + 300
    return args


# --- children: inside Django ----------------------------------------------------------------


def _zones() -> tuple[str, str]:
    """A US zone where it is day now (9:00–19:00), and one where it is night (22:00–6:00),
    so that the clinic's 8:00–21:00 window is open for most and closed for a few."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    candidates = [
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Los_Angeles",
        "America/Anchorage",
        "Pacific/Honolulu",
        "Pacific/Guam",
        "Asia/Tokyo",
        "Europe/London",
        "Asia/Kolkata",
    ]
    now = datetime.now(tz=ZoneInfo("UTC"))
    hour = {zone: now.astimezone(ZoneInfo(zone)).hour for zone in candidates}
    day = next(z for z in candidates if 9 <= hour[z] <= 18)
    night = next(z for z in candidates if hour[z] >= 22 or hour[z] <= 5)
    return day, night


def child_setup(args: argparse.Namespace) -> dict[str, Any]:
    from datetime import time as dtime

    from django.contrib.auth.models import AnonymousUser

    from bench import fixtures
    from integrations.broadcasts import broadcast_start
    from integrations.models import Broadcast, MessagingPolicy
    from patients.models import ConsentRecord, Patient
    from workflows.models import Segment

    day, night = _zones()
    org = fixtures.careflow_clinic(with_sms_workflow=False, sender_rate=args.rate)
    MessagingPolicy.objects.filter(organization=org).update(
        quiet_hours_start=dtime(8, 0), quiet_hours_end=dtime(21, 0)
    )
    t0 = time.monotonic()
    for start in range(0, args.patients, 10_000):
        count = min(10_000, args.patients - start)
        patients = Patient.objects.bulk_create(
            [
                Patient(
                    organization=org,
                    first_name=f"Pat{i}",
                    last_name="Lee",
                    phone=fixtures.phone(i),
                    timezone=night if i % QUIET_EVERY == 1 else day,
                )
                for i in range(start, start + count)
            ],
            batch_size=5000,
        )
        ConsentRecord.objects.bulk_create(
            [
                ConsentRecord(
                    patient=patient,
                    purpose=ConsentRecord.Purpose.MARKETING,
                    action=ConsentRecord.Action.OPT_IN,
                    source=ConsentRecord.Source.SIGNUP_FORM,
                    consent_text="Yes, text me offers and news. Reply STOP to opt out.",
                )
                for i, patient in enumerate(patients, start)
                if i % NO_CONSENT_EVERY != 0
            ],
            batch_size=5000,
        )
    seeded = time.monotonic() - t0
    segment = Segment.objects.create(organization=org, name="Everyone")
    broadcast = Broadcast.objects.create(
        organization=org,
        name="Flu shots",
        segment=segment,
        function="twilio.sendSMS",
        integration=org.integrations.get(),
        purpose=ConsentRecord.Purpose.MARKETING,
        parameters={
            "message": "Hi {{customer.firstName}}, flu shots are in at the clinic this week.",
            "from": common.SANDBOX_FROM,
        },
    )
    no_consent = len(range(0, args.patients, NO_CONSENT_EVERY))
    quiet = len(range(1, args.patients, QUIET_EVERY))
    return {
        "broadcast": broadcast.pk,
        "start": lambda: broadcast_start(broadcast=broadcast, user=AnonymousUser()),
        "seeded_s": seeded,
        "day_zone": day,
        "night_zone": night,
        "no_consent": no_consent,
        "quiet": quiet,
        "to_send": args.patients - no_consent - quiet,
    }


def child_verify(args: argparse.Namespace) -> dict[str, Any]:
    """On a sample of each kind of recipient: exactly one message each, with the outcome
    the send-time checks owe them."""
    from django.db.models import Count
    from django.utils import timezone

    from integrations.models import OutboundMessage

    messages = OutboundMessage.objects.filter(broadcast_id=args.broadcast)
    by_status = dict(messages.order_by().values_list("status").annotate(n=Count("*")))
    duplicates = (
        messages.order_by().values("patient_id").annotate(n=Count("*")).filter(n__gt=1).count()
    )
    problems: list[str] = []
    checked = {"no consent": 0, "quiet hours": 0, "sent": 0}
    # Every kind of recipient, spread over the whole segment: patient 50k has no consent,
    # 50k+1 is in quiet hours, and one of 50k+2 … 50k+49 has both (by k).
    blocks = args.patients // NO_CONSENT_EVERY
    indexes = []
    for k in range(0, blocks, max(1, blocks // SAMPLE)):
        base = k * NO_CONSENT_EVERY
        indexes += [base, base + 1, base + 2 + k % (NO_CONSENT_EVERY - 2)]
    for index in indexes:
        message = messages.select_related("patient").get(patient__first_name=f"Pat{index}")
        if index % NO_CONSENT_EVERY == 0:
            kind, ok = (
                "no consent",
                (message.status == "skipped" and "consent" in message.skip_reason),
            )
        elif index % QUIET_EVERY == 1:
            kind, ok = (
                "quiet hours",
                (
                    message.status == "pending"
                    and message.next_attempt_at is not None
                    and message.next_attempt_at > timezone.now()
                    and "quiet hours" in message.decision.get("reason", "")
                    and message.sent_at is None
                ),
            )
        else:
            kind, ok = "sent", message.status == "sent" and bool(message.provider_sid)
        checked[kind] += 1
        if not ok:
            problems.append(f"Pat{index} ({kind}): {message.status} {message.skip_reason!r}")
    return {
        "by_status": by_status,
        "duplicates": duplicates,
        "checked": checked,
        "problems": problems[:10],
    }


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    if args.child == "setup":
        result = child_setup(args)
        started = result.pop("start")()
        result["recipients"] = started.recipients
        result["started_at"] = started.started_at.timestamp()
    else:
        result = child_verify(args)
    print(json.dumps(result, default=str), flush=True)
    return 0


# --- the orchestrator ------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (the worker's pool), in KiB."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _pool_max_kib(pid: int) -> int:
    """The largest single worker process (main or pool child), in KiB."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return max([_rss_kib_one(int(c)) for c in children] + [_rss_kib_one(pid)])


def _rss_kib_one(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _status(broadcast: int) -> str:
    return common.psql(f"SELECT status FROM integrations_broadcast WHERE id = {broadcast}", DB)


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    common.check_services()
    common.WORKER_CONCURRENCY = args.concurrency
    common.WORKER_SETTINGS["worker"] = f"prefork -c {args.concurrency}, prefetch 1, acks_late"
    info = common.print_header(
        "careflow broadcast: a segment at the sender's rate",
        {
            "patients": f"{args.patients:,}",
            "sender rate R": f"{args.rate:g} segments/s",
            "no marketing consent": f"1 in {NO_CONSENT_EVERY}",
            "in quiet hours now": f"1 in {QUIET_EVERY}",
            **common.WORKER_SETTINGS,
            "database": DB,
            "broker": REDIS_URL,
        },
    )
    logdir = Path(tempfile.mkdtemp(prefix="careflow-bench-broadcast-"))
    sandbox = common.Sandbox(logdir).start()
    env = common.careflow_env(
        sandbox.url,
        DATABASE_URL=f"{PG}/{DB}",
        CELERY_BROKER_URL=REDIS_URL,
        CAREFLOW_BROADCAST_SWEEP_INTERVAL="1",
    )
    procs: list[common.Proc] = []
    try:
        common.recreate_db(DB)
        common.migrate(env)
        # This benchmark's own Redis db (common.flush_redis guards the shared benches' two).
        redis.Redis.from_url(REDIS_URL).flushdb()
        setup = common.run_child(
            [
                PY,
                __file__,
                "--child",
                "setup",
                "--patients",
                str(args.patients),
                "--rate",
                str(args.rate),
            ],
            env,
            timeout=1800,
        )
        print(
            f"seeded {args.patients:,} patients in {setup['seeded_s']:.1f} s "
            f"(day zone {setup['day_zone']}, night zone {setup['night_zone']}); "
            f"{setup['no_consent']:,} without consent, {setup['quiet']:,} in quiet hours, "
            f"{setup['to_send']:,} to send; the broadcast counted {setup['recipients']:,} "
            "recipients",
            flush=True,
        )
        to_send = setup["to_send"]
        procs = common.careflow_worker(env, logdir)
        worker, beat = procs
        assert worker.process is not None and beat.process is not None
        t_start = time.time()
        samples: list[tuple[float, int, int, int, int]] = []  # t, accepted, rss, max1, beat
        deadline = time.monotonic() + args.timeout
        last_print = 0.0
        while time.monotonic() < deadline:
            accepted = sandbox.stats()["accepted"]
            now = time.time()
            samples.append(
                (
                    now,
                    accepted,
                    _rss_kib(worker.process.pid),
                    _pool_max_kib(worker.process.pid),
                    _rss_kib_one(beat.process.pid),
                )
            )
            if now - last_print > 30:
                print(
                    f"  t={now - t_start:6.0f} s  accepted {accepted:,}/{to_send:,}  "
                    f"worker RSS {samples[-1][2] / 1024:.0f} MiB",
                    flush=True,
                )
                last_print = now
            if accepted >= to_send:
                break
            time.sleep(2)
        loadavg_end = Path("/proc/loadavg").read_text().split(" ")[0]
        time.sleep(3)  # anything more (a duplicate) would show in the sandbox's count now
        final_accepted = sandbox.stats()["accepted"]
        verify = common.run_child(
            [
                PY,
                __file__,
                "--child",
                "verify",
                "--patients",
                str(args.patients),
                "--broadcast",
                str(setup["broadcast"]),
            ],
            env,
            timeout=600,
        )
        status = _status(setup["broadcast"])
    finally:
        common.stop_all(procs)
        sandbox.stop()

    def at(fraction: float) -> tuple[float, int, int, int, int]:
        return next((s for s in samples if s[1] >= fraction * to_send), samples[-1])

    lo, hi = at(0.05), at(0.95)
    steady = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else 0.0
    deviation = (steady - args.rate) / args.rate * 100
    peak = max(samples, key=lambda s: s[2])
    print()
    print(f"sent (accepted by the sandbox): {final_accepted:,} of {to_send:,} expected")
    print(
        f"steady window 5 %→95 %: {hi[1] - lo[1]:,} messages in {hi[0] - lo[0]:.1f} s = "
        f"{steady:.2f}/s vs R = {args.rate:g}/s ({deviation:+.2f} %)"
    )
    print(f"first message to last: {samples[-1][0] - t_start:.0f} s")
    print(
        f"worker RSS (main + {args.concurrency} pool processes; production and sending run "
        "there), MiB:"
    )
    for label, s in (("10 %", at(0.10)), ("50 %", at(0.50)), ("90 %", at(0.90)), ("peak", peak)):
        print(
            f"  {label:5} total {s[2] / 1024:6.1f}   largest process {s[3] / 1024:6.1f}   "
            f"beat {s[4] / 1024:5.1f}"
        )
    print(f"messages by status: {verify['by_status']}")
    print(f"patients with more than one message: {verify['duplicates']}")
    print(f"sample checked: {verify['checked']}; problems: {verify['problems'] or 'none'}")
    print(f"broadcast status at the end: {status} (quiet-hours messages are still deferred)")
    print(f"loadavg at start {info['machine']['loadavg at start']}, at end {loadavg_end}")
    failures = []
    if abs(deviation) > 5:
        failures.append(f"rate {deviation:+.2f} % off R (allowed ±5 %)")
    if final_accepted != to_send:
        failures.append(f"{final_accepted:,} accepted, {to_send:,} expected")
    if verify["duplicates"] or verify["problems"]:
        failures.append("a sampled recipient's outcome is wrong, or a patient has two messages")
    print("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    common.guarded(main)
