"""Start the whole product on embedded defaults: migrations, demo data, the Twilio sandbox,
a Celery worker, Celery beat, and the web server, until Ctrl-C. Emails are written to files
under var/ (CAREFLOW_EMAIL_DELIVERY=file) unless the user chose another delivery.

Beat runs as a process of its own, not inside the worker (`-B`): it carries the event relay,
the run sweeper, the time-trigger scan, the status reconciliation and the PostgreSQL event
listener, and an embedded beat that dies is never started again. Here the worker, beat and
the sandbox are restarted whenever they exit (after a short backoff, said on stderr); only
the web server's exit stops the stack, as it is what the user is looking at.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from integrations.management.commands.careflow_demo import demo_user
from integrations.management.commands.twilio_sandbox import ACCOUNTS_VARIABLE
from integrations.models import Integration
from integrations.twilio.account import ADAPTER, twilio_account
from integrations.twilio.forms import TwilioIntegrationForm
from patients.models import Organization
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF

# Processes restarted when they exit; the web server's exit stops the stack instead.
RESTARTED = frozenset({"sandbox", "beat", "worker"})
RESTART_BACKOFF_MIN = 1.0
RESTART_BACKOFF_MAX = 30.0
# A process that ran this long before exiting starts again from the shortest backoff.
RESTART_STABLE_SECONDS = 60.0


def _email_destination(env: dict[str, str]) -> str:
    delivery = env["CAREFLOW_EMAIL_DELIVERY"]
    if delivery == "file":
        return f"written to {env['EMAIL_FILE_PATH']}/ (one .log file per email)"
    if delivery == "console":
        return "printed by the worker (console)"
    api = env.get("CAREFLOW_POSTMARK_API_URL", settings.CAREFLOW_POSTMARK_API_URL)
    return f"sent through {delivery} at {api}"


class Command(BaseCommand):
    help = "Run careflow locally: web, worker, beat and the Twilio sandbox, with demo data."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sandbox-port", type=int, default=8099)
        parser.add_argument(
            "--no-sandbox",
            action="store_true",
            help="Talk to TWILIO_API_BASE_URL instead of a local sandbox.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        # The web process serves the admin's CSS and the builder's JS from STATIC_ROOT through
        # WhiteNoise, hashed and compressed as in production: collect them on every start so
        # an updated checkout never serves stale files.
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("careflow_demo")
        sunrise = Organization.objects.get(slug="sunrise")
        admin_password = demo_user("admin", superuser=True)
        support_password = demo_user("support", role=SUPPORT_STAFF)
        clinic_password = demo_user("clinic", role=CLINIC_ADMIN, organization=sunrise)
        staff_password = demo_user("staff", role=CLINIC_STAFF, organization=sunrise)
        web = f"http://127.0.0.1:{options['port']}"
        env = {
            **os.environ,
            "CAREFLOW_PUBLIC_URL": os.environ.get("CAREFLOW_PUBLIC_URL", web),
            # This stack serves plain http://127.0.0.1: the production defaults (HTTPS
            # redirect, cookies only over HTTPS) would lock everyone out of it.
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
        }
        # Locally there is no ESP: emails are written as files, one per send, unless the user
        # chose a delivery (e.g. postmark with CAREFLOW_POSTMARK_API_URL at a sandbox).
        env.setdefault("CAREFLOW_EMAIL_DELIVERY", "file")
        env.setdefault("EMAIL_FILE_PATH", str(settings.EMAIL_FILE_PATH))
        if env["CAREFLOW_EMAIL_DELIVERY"] == "file":
            Path(env["EMAIL_FILE_PATH"]).mkdir(parents=True, exist_ok=True)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands: dict[str, list[str]] = {}
        own_env: dict[str, dict[str, str]] = {}
        if not options["no_sandbox"]:
            sandbox = f"http://127.0.0.1:{options['sandbox_port']}"
            env["TWILIO_API_BASE_URL"] = sandbox
            # Each account's inbound SMS go to its integration's webhook on this web server
            # (the URL the signature covers), so "Reply as patient" reaches careflow.
            accounts = [
                f"{account.account_sid}:{account.auth_token}:{','.join(i.senders)}:"
                f"{account.messaging_service_sid}:"
                f"{web}{TwilioIntegrationForm.inbound_webhook_path(i)}"
                for i in Integration.objects.filter(adapter=ADAPTER, enabled=True)
                for account in [twilio_account(i)]
            ]
            commands["sandbox"] = [
                *manage,
                "twilio_sandbox",
                "--port",
                str(options["sandbox_port"]),
                # careflow's status callbacks come to this machine (CAREFLOW_PUBLIC_URL).
                "--local-callbacks",
            ]
            # Auth Tokens in the sandbox's environment only: any user can read a command line.
            own_env["sandbox"] = {ACCOUNTS_VARIABLE: "\n".join(accounts)}
        celery = [sys.executable, "-m", "celery", "-A", "config"]
        commands["beat"] = [
            *celery,
            "beat",
            "-s",
            str(settings.VAR_DIR / "beat-schedule"),
            "-l",
            "WARNING",
        ]
        commands["worker"] = [
            *celery,
            "worker",
            "-Q",
            "events,runs,sends",
            "-c",
            "2",
            "-l",
            "WARNING",
        ]
        commands["web"] = [*manage, "runserver", "--noreload", f"127.0.0.1:{options['port']}"]

        def start(name: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(  # noqa: S603
                commands[name], env={**env, **own_env.get(name, {})}, cwd=settings.BASE_DIR
            )

        processes = {name: start(name) for name in commands}
        self.stdout.write(
            self.style.SUCCESS(
                "\ncareflow is running.\n"
                f"  Admin:          {web}/admin/\n"
                f"  Superuser:      admin / {admin_password}   (everything, all clinics)\n"
                f"  Support staff:  support / {support_password}   (all clinics, provider credentials)\n"
                f"  Clinic admin:   clinic / {clinic_password}   (Sunrise Telehealth only)\n"
                f"  Clinic staff:   staff / {staff_password}   (Sunrise Telehealth only, read-mostly)\n"
                + (
                    f"  Twilio sandbox: {env['TWILIO_API_BASE_URL']}/  (the texts; reply as "
                    "the patient there)\n"
                    if "sandbox" in processes
                    else ""
                )
                + f"  Emails:         {_email_destination(env)}\n"
                + "  Try it: Patients › Orders › pick an order › Status: Shipped › Save, then "
                "Integrations › Outbound messages.\n"
                "Press Ctrl-C to stop.\n"
            )
        )
        self._supervise(processes, start)

    def _supervise(
        self,
        processes: dict[str, subprocess.Popen[bytes]],
        start: Callable[[str], subprocess.Popen[bytes]],
    ) -> None:
        """Wait for Ctrl-C; restart what exits (but the web server), each after a backoff
        that doubles while it keeps failing, so a process that cannot start does not spin."""
        stop = False
        started = dict.fromkeys(processes, time.monotonic())
        backoff = dict.fromkeys(processes, RESTART_BACKOFF_MIN)
        restart_at: dict[str, float] = {}

        def _request_stop(signum: int, frame: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, _request_stop)
        signal.signal(signal.SIGTERM, _request_stop)
        try:
            while not stop:
                now = time.monotonic()
                for name, process in list(processes.items()):
                    if stop:  # Ctrl-C arrived meanwhile: its children exit, none restarts
                        break
                    if name in restart_at:
                        if now >= restart_at[name]:
                            del restart_at[name]
                            processes[name], started[name] = start(name), now
                            self.stderr.write(f"{name} restarted.")
                        continue
                    if process.poll() is None:
                        continue
                    if name not in RESTARTED:
                        self.stderr.write(
                            f"{name} exited with code {process.returncode}; stopping."
                        )
                        stop = True
                        break
                    if now - started[name] > RESTART_STABLE_SECONDS:
                        backoff[name] = RESTART_BACKOFF_MIN  # it ran well: not a crash loop
                    delay, backoff[name] = (
                        backoff[name],
                        min(2 * backoff[name], RESTART_BACKOFF_MAX),
                    )
                    self.stderr.write(
                        f"{name} exited with code {process.returncode}; "
                        f"restarting it in {delay:.0f} s."
                    )
                    restart_at[name] = now + delay
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
            for process in processes.values():
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
