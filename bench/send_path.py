"""The worker's per-message cost on the dispatch → send path, in measures load cannot move:
statements, Python function calls and (under valgrind) CPU instructions per message.

    .venv/bin/python bench/send_path.py              # 400 events: statements, calls, CPU
    .venv/bin/python bench/send_path.py --callgrind  # 100 events under valgrind: instructions

One process, the bench clinic of e2e.py (one order.shipped workflow with one Twilio sendSMS,
no caps, open all day, the sandbox's account): orders are shipped first (their events wait in
the outbox; no beat, no listener), then dispatched 20 at a time by calling the woken worker's
own `workflows.tasks._dispatch`, against the sandbox over HTTP. The first 40 events warm the
process up; the rest are measured. Calls come from cProfile, instructions from
`valgrind --tool=callgrind` counting only the measured loop, with the garbage collector off
inside it (when its thresholds happen to trip is luck, and a full collection is ~75 M
instructions). CPU time per message is printed too, but the machine's load moves it.
Comparing two commits: run this script from a worktree of each (copy it into the older one).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DB = common.bench_db("careflow_bench_send")
WARM_UP = 40


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=0, help="measured (400; 100 with --callgrind)")
    p.add_argument("--callgrind", action="store_true", help="count instructions (slow: minutes)")
    p.add_argument("--top", type=int, default=25, help="functions listed by the profile")
    p.add_argument("--child", choices=["profile", "callgrind"], help=argparse.SUPPRESS)
    args = p.parse_args()
    args.events = args.events or (100 if args.callgrind else 400)
    args.events -= args.events % 20  # whole batches
    return args


def child(args: argparse.Namespace) -> int:
    common.django_setup()
    from django.db import connection

    from bench import fixtures
    from integrations.models import OutboundMessage
    from workflows import tasks
    from workflows.models import Event

    total = WARM_UP + args.events
    org = fixtures.careflow_clinic(sender_rate=1000.0)
    patients = fixtures.careflow_patients(org, total)
    fixtures.ship("careflow", fixtures.careflow_orders(org, patients, total, "S"), None)
    shipped = Event.objects.filter(type="order.shipped").order_by("id")
    events = list(shipped.values_list("id", flat=True))
    batches = [events[i : i + 20] for i in range(0, len(events), 20)]
    for batch in batches[: WARM_UP // 20]:
        tasks._dispatch(batch)
    measured = batches[WARM_UP // 20 :]

    statements = 0

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    profile = cProfile.Profile() if args.child == "profile" else None
    gc.collect()
    if args.child == "callgrind":
        gc.disable()
    with connection.execute_wrapper(count):
        cpu = time.process_time()
        if profile is not None:
            profile.enable()
        # valgrind's --toggle-collect=functools_reduce counts exactly this call.
        functools.reduce(lambda _, batch: tasks._dispatch(batch), measured, None)
        if profile is not None:
            profile.disable()
        cpu = time.process_time() - cpu
    gc.enable()
    sent = OutboundMessage.objects.filter(status=OutboundMessage.Status.SENT).count()
    if sent != total:
        raise common.SetupError(f"{sent} of {total} messages were sent")
    result: dict[str, Any] = {
        "statements": statements / args.events,
        "cpu_ms": 1000 * cpu / args.events,
    }
    if profile is not None:
        stats = pstats.Stats(profile)
        result["calls"] = stats.total_calls / args.events
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
        result["profile"] = out.getvalue()
    print(json.dumps(result))
    return 0


def _instructions(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise common.SetupError(f"no instruction count in {path}")


def main() -> int:
    args = parse()
    if args.child:
        return child(args)
    if args.callgrind and not shutil.which("valgrind"):
        raise common.SetupError("valgrind is not installed (apt-get install valgrind)")
    common.print_header(
        "send path: per-message statements, calls and instructions of a woken worker",
        {
            "database": f"PostgreSQL 127.0.0.1 db {DB} (one connection, in this process)",
            "broker": f"{common.CAREFLOW_REDIS} (no worker consuming)",
            "events": f"{WARM_UP} warm-up + {args.events} measured, batches of 20",
            "measure": "valgrind callgrind instructions" if args.callgrind else "cProfile calls",
        },
    )
    common.check_services()
    common.recreate_db(DB)
    logdir = Path(tempfile.mkdtemp(prefix="careflow-bench-send-"))
    sandbox = common.Sandbox(logdir).start()
    env = common.careflow_env(sandbox.url, DATABASE_URL=f"{common.PG}/{DB}", PYTHONHASHSEED="0")
    out = logdir / "callgrind.out"
    argv = [common.PY, __file__, "--events", str(args.events)]
    if args.callgrind:
        argv = [
            "valgrind",
            "-q",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            f"--callgrind-out-file={out}",
            *argv,
            "--child",
            "callgrind",
        ]
    else:
        argv += ["--child", "profile", "--top", str(args.top)]
    try:
        common.migrate(env)
        common.flush_redis(common.CAREFLOW_REDIS)
        result = common.run_child(argv, env, timeout=3600)
    finally:
        sandbox.stop()
        common.flush_redis(common.CAREFLOW_REDIS)
        common.drop_db(DB)
    print(f"\nstatements per message:    {result['statements']:.2f}")
    if args.callgrind:
        print(f"instructions per message:  {_instructions(out) / args.events / 1e6:.2f} M")
        print(f"(callgrind output: {out})")
    else:
        print(f"function calls per message: {result['calls']:.0f}")
        print(f"CPU per message:            {result['cpu_ms']:.2f} ms (moves with the load)")
        print(f"\n--- cProfile, {args.events} messages, by own time ---")
        print(result["profile"])
    return 0


if __name__ == "__main__":
    common.guarded(main)
