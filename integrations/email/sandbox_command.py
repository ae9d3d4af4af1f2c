"""`manage.py email_sandbox`: run the loopback Postmark sandbox in the foreground.

    manage.py email_sandbox --port 8098 \\
        --server sandbox-token:clinic@example.com:http://postmark:secret@127.0.0.1:8000/webhooks/email/<uuid>/events/

A server is `TOKEN[:SENDERS[:WEBHOOK_URL]]`, the senders comma-separated. Servers can also
come from the environment, one a line, in EMAIL_SANDBOX_SERVERS: a command line is readable
by every user of the machine (`ps`), an environment is not. Point CAREFLOW_POSTMARK_API_URL
at the printed URL; see `integrations.email.sandbox` for the control API.
"""

import argparse
import os
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.email.sandbox import SandboxServer

SERVERS_VARIABLE = "EMAIL_SANDBOX_SERVERS"


def parse_server(value: str) -> dict[str, Any]:
    """`TOKEN[:SENDERS[:WEBHOOK_URL]]` (the URL may itself hold colons)."""
    token, _, rest = value.partition(":")
    senders, _, url = rest.partition(":")
    if not token:
        raise argparse.ArgumentTypeError("expected TOKEN[:comma-separated senders[:webhook URL]]")
    return {
        "token": token,
        "senders": [s.strip() for s in senders.split(",") if s.strip()],
        "webhook_url": url or None,
    }


class Command(BaseCommand):
    help = "Run the loopback Postmark-compatible sandbox server in the foreground."
    # The sandbox touches neither the database nor the apps: start even if they are broken.
    requires_system_checks = ()
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8098)
        parser.add_argument(
            "--server",
            action="append",
            default=[],
            type=parse_server,
            metavar="TOKEN[:SENDERS[:WEBHOOK_URL]]",
            help="A Postmark server the sandbox accepts (repeatable).",
        )
        parser.add_argument(
            "--webhook-delay",
            type=float,
            default=0.2,
            metavar="SECONDS",
            help="Delay before each webhook; negative disables them.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from_env = [
                parse_server(line.strip())
                for line in os.environ.get(SERVERS_VARIABLE, "").splitlines()
                if line.strip()
            ]
        except argparse.ArgumentTypeError as exc:
            raise CommandError(f"{SERVERS_VARIABLE}: {exc}") from exc
        servers = {spec["token"]: spec for spec in [*from_env, *options["server"]]}
        try:
            server = SandboxServer(
                host=options["host"],
                port=options["port"],
                servers=servers,
                webhook_delay=options["webhook_delay"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from exc
        stopping = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            stopping.set()

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            # The bare URL first, alone on its line, so scripts can read it.
            self.stdout.write(server.start())
            for spec in servers.values():
                senders = ", ".join(spec["senders"]) or "(any sender)"
                self.stdout.write(f"server: {senders}")
            if not servers:
                self.stdout.write("no servers yet: register one with POST /_sandbox/servers")
            self.stdout.flush()
            # A timed wait keeps the main thread responsive to signals on every platform.
            while not stopping.wait(0.5):
                pass
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("email sandbox stopped")
