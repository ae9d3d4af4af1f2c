"""Run the loopback Twilio-compatible sandbox in the foreground.

    manage.py twilio_sandbox --port 8099 \\
        --account AC00000000000000000000000000000000:sandbox-token:+15005550006,+15551230000
    manage.py twilio_sandbox --account \\
        'ACxx…:token:+15005550006::http://127.0.0.1:8000/webhooks/twilio/<uuid>/inbound/'

The last field, the account's inbound URL, is where "Reply as patient" on the sandbox's page
posts the patient's answer.

Accounts can also come from the environment, one spec a line, in TWILIO_SANDBOX_ACCOUNTS:
a command line is readable by every user of the machine (`ps`), an environment is not, so
careflow_up passes the clinics' Auth Tokens that way.

`--local-callbacks` says it is a local run: careflow on this machine gives a status-callback
URL on this machine, which real Twilio (and the sandbox without the flag) refuses with 21609.
`make run` (careflow_up) passes it.

Point TWILIO_API_BASE_URL at the printed URL. More accounts can be registered while it runs
with POST /_sandbox/accounts; see `integrations.twilio.sandbox` for the control API.
"""

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from integrations.loopback import serve_in_foreground, specs_from_environment
from integrations.twilio.sandbox import SandboxServer

ACCOUNTS_VARIABLE = "TWILIO_SANDBOX_ACCOUNTS"


def parse_account(value: str) -> dict[str, Any]:
    """`SID:TOKEN[:NUMBERS[:SERVICE_SIDS[:INBOUND_URL]]]`, the lists comma-separated; the
    URL is the rest of the line, colons and all."""
    parts = value.split(":", 4)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(
            "expected SID:TOKEN[:comma-separated numbers[:comma-separated MG sids[:inbound URL]]]"
        )
    numbers = parts[2].split(",") if len(parts) > 2 else []
    services = parts[3].split(",") if len(parts) > 3 else []
    return {
        "sid": parts[0],
        "token": parts[1],
        "numbers": [n.strip() for n in numbers if n.strip()],
        "messaging_service_sids": [s.strip() for s in services if s.strip()],
        "inbound_url": parts[4].strip() if len(parts) > 4 else None,
    }


class Command(BaseCommand):
    help = "Run the loopback Twilio-compatible sandbox server in the foreground."
    # The sandbox touches neither the database nor the apps: start even if they are broken.
    requires_system_checks = ()
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8099)
        parser.add_argument(
            "--account",
            action="append",
            default=[],
            type=parse_account,
            metavar="SID:TOKEN[:NUMBERS[:MG_SIDS[:INBOUND_URL]]]",
            help="An account the sandbox accepts (repeatable). +15005550006 is always owned.",
        )
        parser.add_argument(
            "--callback-delay",
            type=float,
            default=0.2,
            metavar="SECONDS",
            help="Delay before each status transition/callback; negative disables them.",
        )
        parser.add_argument(
            "--local-callbacks",
            action="store_true",
            help="A local run: accept status-callback URLs on this machine or a private "
            "network (Twilio refuses them with 21609).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from_env = specs_from_environment(ACCOUNTS_VARIABLE, parse_account)
        accounts = {spec["sid"]: spec for spec in [*from_env, *options["account"]]}
        summary = [
            f"account {sid}: {', '.join(spec['numbers']) or '(only +15005550006)'}"
            + (f"; inbound SMS to {spec['inbound_url']}" if spec["inbound_url"] else "")
            for sid, spec in accounts.items()
        ]
        if not accounts:
            summary.append("no accounts yet: register one with POST /_sandbox/accounts")
        serve_in_foreground(
            self,
            lambda: SandboxServer(
                host=options["host"],
                port=options["port"],
                accounts=accounts,
                callback_delay=options["callback_delay"],
                local_callbacks=options["local_callbacks"],
            ),
            host=options["host"],
            port=options["port"],
            summary=summary,
            stopped="twilio sandbox stopped",
            invalid=(ValueError,),
        )
