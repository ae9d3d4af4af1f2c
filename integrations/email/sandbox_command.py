"""`manage.py email_sandbox`: run the loopback email sandbox (Postmark's and Mailgun's
APIs) in the foreground.

    manage.py email_sandbox --port 8098 \\
        --server sandbox-token:clinic@example.com:http://postmark:secret@127.0.0.1:8000/webhooks/email/<uuid>/events/

A server is `TOKEN[:SENDERS[:WEBHOOK_URL]]`, the senders comma-separated. Servers can also
come from the environment, one a line, in EMAIL_SANDBOX_SERVERS: a command line is readable
by every user of the machine (`ps`), an environment is not. Point CAREFLOW_POSTMARK_API_URL
at the printed URL; see `integrations.email.sandbox` for the control API.

Mailgun domains come from the environment only (their API and signing keys are secrets), one
a line in EMAIL_SANDBOX_MAILGUN_DOMAINS: `DOMAIN:API_KEY:SIGNING_KEY[:SENDERS[:WEBHOOK_URL]]`;
point CAREFLOW_MAILGUN_API_URL at the printed URL + "/v3".
"""

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from integrations.email.sandbox import SandboxServer
from integrations.loopback import serve_in_foreground, specs_from_environment

SERVERS_VARIABLE = "EMAIL_SANDBOX_SERVERS"
MAILGUN_VARIABLE = "EMAIL_SANDBOX_MAILGUN_DOMAINS"


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


def parse_mailgun_domain(value: str) -> dict[str, Any]:
    """`DOMAIN:API_KEY:SIGNING_KEY[:SENDERS[:WEBHOOK_URL]]` (the URL may hold colons)."""
    domain, _, rest = value.partition(":")
    api_key, _, rest = rest.partition(":")
    signing_key, _, rest = rest.partition(":")
    if not (domain and api_key and signing_key):
        raise argparse.ArgumentTypeError(
            "expected DOMAIN:API_KEY:SIGNING_KEY[:comma-separated senders[:webhook URL]]"
        )
    server = parse_server(f"{api_key}:{rest}")
    return {
        "domain": domain,
        "api_key": api_key,
        "signing_key": signing_key,
        "senders": server["senders"],
        "webhook_url": server["webhook_url"],
    }


class Command(BaseCommand):
    help = "Run the loopback Postmark- and Mailgun-compatible sandbox server in the foreground."
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
        from_env = specs_from_environment(SERVERS_VARIABLE, parse_server)
        servers = {spec["token"]: spec for spec in [*from_env, *options["server"]]}
        domains = specs_from_environment(MAILGUN_VARIABLE, parse_mailgun_domain)
        summary = [
            f"server: {', '.join(spec['senders']) or '(any sender)'}" for spec in servers.values()
        ]
        summary += [f"mailgun domain: {spec['domain']}" for spec in domains]
        if not servers and not domains:
            summary.append("no servers yet: register one with POST /_sandbox/servers")
        serve_in_foreground(
            self,
            lambda: SandboxServer(
                host=options["host"],
                port=options["port"],
                servers=servers,
                webhook_delay=options["webhook_delay"],
                mailgun_domains=domains,
            ),
            host=options["host"],
            port=options["port"],
            summary=summary,
            stopped="email sandbox stopped",
            invalid=(ValueError,),
        )
