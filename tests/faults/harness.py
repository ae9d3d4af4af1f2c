"""The fault suite's burst and its bookkeeping: what must arrive at the sandbox, and what did.

A burst is one clinic with one enabled workflow (order.shipped → one message step) and N
consented patients, each with a distinct contact and an order awaiting shipment, on one
channel: `SmsBurst` (Twilio sendSMS against the Twilio sandbox) or `EmailBurst` (sendEmail
against the Postmark sandbox). Shipping the orders records N order.shipped events; each must
become exactly one message accepted by the sandbox, whose contents (To, Body and an email's
Subject) we know in advance. Counting is done at the sandbox (what the provider would have
billed) and in the database (what careflow believes), never from internals of the send path.
"""

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import uuid4

import phonenumbers
import pytest
from django.db import connections
from django.urls import reverse

from integrations.email.sandbox import SandboxServer as EmailSandbox
from integrations.models import Integration, OutboundMessage
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Order, Organization, Patient
from tests.conftest import sandbox_account
from tests.factories import IntegrationFactory, SmsStepFactory, WorkflowFactory
from workflows.models import Event, Run, Step, Workflow

Status = OutboundMessage.Status
DONE_MESSAGE = {Status.SENT, Status.DELIVERED}
ACTIVE_MESSAGE = {Status.PENDING, Status.SENDING, Status.UNKNOWN}
ACTIVE_RUN = {Run.Status.PENDING, Run.Status.RUNNING, Run.Status.WAITING}

# The clinic's sending rate, as support staff would set it for a high-throughput sender:
# the per-sender throttle (a long code's default is 1 segment/s) must not be what bounds a
# 1,000-message burst here; the faults are.
SENDER_RATE: dict[str, Any] = {"segments_per_second": 500.0}

# Result tables of this session, printed in pytest's terminal summary (see conftest).
REPORTS: list[str] = []


def fault_random(scenario: str) -> tuple[random.Random, int]:
    """A random source for a scenario's fault plan; CAREFLOW_FAULTS_SEED=<seed> replays one."""
    seed = int(os.environ.get("CAREFLOW_FAULTS_SEED") or random.SystemRandom().randrange(1 << 32))
    return random.Random(f"{seed}:{scenario}"), seed


def in_flight(burst: "Burst") -> int:
    """Messages of the burst claimed for sending right now (the provider's answer not
    recorded)."""
    return OutboundMessage.objects.filter(
        organization_id=burst.integration.organization_id, status=Status.SENDING
    ).count()


@dataclass(frozen=True)
class Expected:
    to: str
    body: str
    subject: str = ""  # an email's; an SMS has none


class Burst:
    """A clinic ready to ship `size` orders, and the message each shipment must produce.
    A subclass per channel says how the clinic sends, whom, and what its sandbox holds."""

    channel = ""
    consent_text = ""

    def __init__(
        self, sandbox: Any, integration: Integration, *, recipients: list[str], tag: str
    ) -> None:
        self.sandbox = sandbox
        self.integration = integration
        organization = integration.organization
        self.workflow: Workflow = WorkflowFactory(
            organization=organization, trigger="order.shipped"
        )
        self.add_step(self.workflow)
        self.recipients = recipients
        # bulk_create: the setup records no events (no signal), so the burst is the only load.
        patients = Patient.objects.bulk_create(
            self.patient(organization, f"{tag}{index}", recipient)
            for index, recipient in enumerate(recipients)
        )
        ConsentRecord.objects.bulk_create(
            ConsentRecord(
                patient=patient,
                channel=self.channel,
                purpose=ConsentRecord.Purpose.TRANSACTIONAL,
                action=ConsentRecord.Action.OPT_IN,
                source=ConsentRecord.Source.SIGNUP_FORM,
                consent_text=self.consent_text,
            )
            for patient in patients
        )
        orders = Order.objects.bulk_create(
            Order(
                organization=organization,
                patient=patient,
                number=f"{tag}-{index:04d}",
                status=Order.Status.AWAITING_SHIPMENT,
                total_amount=Decimal("49.00"),
            )
            for index, patient in enumerate(patients)
        )
        self.order_ids = [order.pk for order in orders]
        self.expected = [
            self.expect(recipient, first_name=f"{tag}{index}", order=f"{tag}-{index:04d}")
            for index, recipient in enumerate(recipients)
        ]
        self.shipped = 0
        self.publish_seconds: list[float] = []

    def add_step(self, workflow: Workflow) -> None:
        raise NotImplementedError

    def patient(self, organization: Organization, first_name: str, recipient: str) -> Patient:
        raise NotImplementedError

    def expect(self, recipient: str, *, first_name: str, order: str) -> Expected:
        """What the step renders for this patient and order."""
        raise NotImplementedError

    def at_provider(self) -> list[tuple[str, Expected]]:
        """(provider id, contents) of every message of this clinic the sandbox accepted."""
        raise NotImplementedError

    @staticmethod
    def recorded(to: str, body: str, content: dict[str, Any] | None) -> Expected:
        """The contents of a message row, comparable with what the sandbox holds."""
        return Expected(to, body, str((content or {}).get("subject", "")))

    @property
    def size(self) -> int:
        return len(self.order_ids)

    def ship(self, count: int | None = None) -> None:
        """Ship the next `count` orders (all the rest by default), one transaction each, as
        the admin would: the post_save receiver records order.shipped, on_commit publishes."""
        end = self.size if count is None else min(self.size, self.shipped + count)
        batch = Order.objects.filter(pk__in=self.order_ids[self.shipped : end]).select_related(
            "patient", "organization"
        )
        for order in sorted(batch, key=lambda order: order.pk):
            order.status = Order.Status.SHIPPED
            started = time.monotonic()
            order.save()  # autocommit: the on_commit hook hands the event over inside save()
            self.publish_seconds.append(time.monotonic() - started)
            self.shipped += 1

    def tally(self) -> "Tally":
        return Tally.collect(self)


class SmsBurst(Burst):
    """The burst as SMS through Twilio (the sandbox of integrations.twilio)."""

    channel = ConsentRecord.Channel.SMS
    consent_text = "I agree to receive texts about my orders. Reply STOP to opt out."

    def __init__(self, sandbox: SandboxServer, *, size: int, tag: str, exchange: str) -> None:
        self.phones = [f"+1415{exchange}{index:04d}" for index in range(size)]
        for phone in (self.phones[0], self.phones[-1]):
            assert phonenumbers.is_valid_number(phonenumbers.parse(phone)), phone
        integration = sandbox_account(sandbox, IntegrationFactory(**SENDER_RATE))
        super().__init__(sandbox, integration, recipients=self.phones, tag=tag)

    def add_step(self, workflow: Workflow) -> None:
        SmsStepFactory(workflow=workflow)  # "Hi {{customer.firstName}}, order … shipped!"

    def patient(self, organization: Organization, first_name: str, recipient: str) -> Patient:
        return Patient(
            organization=organization,
            first_name=first_name,
            last_name="Fault",
            phone=recipient,
            timezone="America/New_York",
        )

    def expect(self, recipient: str, *, first_name: str, order: str) -> Expected:
        return Expected(recipient, f"Hi {first_name}, order {order} has shipped!")

    def at_provider(self) -> list[tuple[str, Expected]]:
        account = twilio_account(self.integration).account_sid
        return [
            (m["sid"], Expected(m["to"], m["body"]))
            for m in self.sandbox.messages()
            if m["account_sid"] == account
        ]


# The clinic's email sending rate: as for SMS, the faults must bound the burst, not this.
EMAIL_SEND_RATE = 500.0
EMAIL_WEBHOOK_USER = "postmark"  # Postmark's webhooks authenticate as this user
MAILGUN_API_KEY = "0123456789abcdef0123456789abcdef-0a1b2c3d-4e5f6a7b"


class EmailBurst(Burst):
    """The burst as email through `esp`'s API of the sandbox of integrations.email
    (Postmark's or Mailgun's), its delivery webhooks posted to `webhook_origin` (a live
    server) when given."""

    channel = ConsentRecord.Channel.EMAIL
    consent_text = "I agree to receive emails about my orders."

    def __init__(
        self,
        sandbox: EmailSandbox,
        *,
        size: int,
        tag: str,
        webhook_origin: str | None = None,
        esp: str = "postmark",
    ) -> None:
        self.sender = f"orders-{tag.lower()}@clinic.example.com"
        self.addresses = [f"{tag.lower()}{index}@patients.example.com" for index in range(size)]
        token, secret = f"faults-{tag}-{uuid4().hex}", uuid4().hex
        domain = f"mg-{tag.lower()}-{uuid4().hex[:8]}.clinic.example.com"
        if esp == "mailgun":
            settings: dict[str, Any] = {"esp": esp, "mailgun_domain": domain}
            secrets = {"mailgun_api_key": MAILGUN_API_KEY, "mailgun_webhook_signing_key": secret}
        else:
            settings = {"esp": esp, "message_stream": "outbound"}
            secrets = {"server_token": token, "webhook_secret": secret}
        integration: Integration = IntegrationFactory(
            name="Email",
            adapter="email",
            senders=[self.sender],
            settings={**settings, "send_rate": EMAIL_SEND_RATE},
            secrets=secrets,
        )
        webhook_url = None
        if webhook_origin is not None:
            scheme, _, host = webhook_origin.partition("://")
            path = reverse("email-events", kwargs={"integration_uuid": integration.uuid})
            credentials = "" if esp == "mailgun" else f"{EMAIL_WEBHOOK_USER}:{secret}@"
            webhook_url = f"{scheme}://{credentials}{host}{path}"
        if esp == "mailgun":
            sandbox.add_mailgun_domain(
                domain,
                api_key=MAILGUN_API_KEY,
                signing_key=secret,
                senders=[self.sender],
                webhook_url=webhook_url,
            )
        else:
            sandbox.add_server(token, senders=[self.sender], webhook_url=webhook_url)
        super().__init__(sandbox, integration, recipients=self.addresses, tag=tag)

    def add_step(self, workflow: Workflow) -> None:
        Step.objects.create(
            workflow=workflow,
            position=1,
            adapter="email",
            function="sendEmail",
            parameters={
                "subject": "Order {{order.number}} has shipped",
                "body": "Hi {{customer.firstName}}, order {{order.number}} has shipped!",
                "to": "{{customer.email}}",
                "from": self.sender,
            },
        )

    def patient(self, organization: Organization, first_name: str, recipient: str) -> Patient:
        return Patient(
            organization=organization,
            first_name=first_name,
            last_name="Fault",
            email=recipient,
            timezone="America/New_York",
        )

    def expect(self, recipient: str, *, first_name: str, order: str) -> Expected:
        return Expected(
            recipient, f"Hi {first_name}, order {order} has shipped!", f"Order {order} has shipped"
        )

    def at_provider(self) -> list[tuple[str, Expected]]:
        return [
            (m["id"], Expected(", ".join(m["to"]), m["text_body"] or "", m["subject"]))
            for m in self.sandbox.messages()
            if m["from"] == self.sender
        ]


@dataclass
class Tally:
    events: int = 0
    events_undispatched: int = 0
    runs: int = 0
    runs_succeeded: int = 0
    expected: int = 0  # one message per order shipped so far
    accepted: int = 0  # expected messages the sandbox accepted at least once
    duplicates: int = 0  # extra acceptances of an expected message
    lost: int = 0  # expected messages the sandbox never accepted
    unexpected: int = 0  # accepted messages that were never expected
    messages: int = 0
    messages_done: int = 0
    run_statuses: dict[str, int] = field(default_factory=dict)
    message_statuses: dict[str, int] = field(default_factory=dict)
    sandbox_stats: dict[str, int] = field(default_factory=dict)

    @classmethod
    def collect(cls, burst: Burst) -> "Tally":
        received = Counter(expected for _, expected in burst.at_provider())
        expected = set(burst.expected[: burst.shipped])
        organization = burst.integration.organization_id
        runs = Counter(Run.objects.filter(workflow=burst.workflow).values_list("status", flat=True))
        messages = Counter(
            OutboundMessage.objects.filter(organization_id=organization).values_list(
                "status", flat=True
            )
        )
        events = Event.objects.filter(organization_id=organization, type="order.shipped")
        return cls(
            events=events.count(),
            events_undispatched=events.filter(dispatched_at__isnull=True).count(),
            runs=sum(runs.values()),
            runs_succeeded=runs[Run.Status.SUCCEEDED],
            expected=len(expected),
            accepted=sum(1 for key in expected if received[key]),
            duplicates=sum(count - 1 for key, count in received.items() if count > 1),
            lost=sum(1 for key in expected if not received[key]),
            unexpected=sum(count for key, count in received.items() if key not in expected),
            messages=sum(messages.values()),
            messages_done=sum(messages[status] for status in DONE_MESSAGE),
            run_statuses=dict(runs),
            message_statuses=dict(messages),
            sandbox_stats=burst.sandbox.stats(),
        )

    def settled(self) -> bool:
        """Nothing left to do: every run and message reached a final state."""
        return (
            self.runs == self.expected
            and self.messages == self.expected
            and not any(self.run_statuses.get(status) for status in ACTIVE_RUN)
            and not any(self.message_statuses.get(status) for status in ACTIVE_MESSAGE)
        )

    def row(self, scenario: str, elapsed: float) -> str:
        return (
            f"{scenario:<22} {self.events:>6} {self.runs:>6} {self.expected:>8} "
            f"{self.accepted:>8} {self.duplicates:>10} {self.lost:>5} {elapsed:>8.1f}s"
        )

    def describe(self) -> str:
        return (
            f"events not dispatched {self.events_undispatched}; runs by status "
            f"{self.run_statuses}; messages by status {self.message_statuses}; "
            f"sandbox {self.sandbox_stats}; unexpected at the sandbox {self.unexpected}"
        )


HEADER = (
    f"{'scenario':<22} {'events':>6} {'runs':>6} {'expected':>8} {'accepted':>8} "
    f"{'duplicates':>10} {'lost':>5} {'elapsed':>9}"
)


# No change at all (messages accepted, run and message states) for this long means nothing
# is recovering. Longer than the slowest legitimate quiet spell: a message whose attempt
# never reached Twilio is looked up again and again for the reconcile grace (2 minutes).
STALL_SECONDS = 180.0


def wait_until(
    burst: Burst,
    done: Callable[[Tally], bool],
    *,
    timeout: float,
    what: str,
    inject: Callable[[], None] | None = None,
    extra: Callable[[], str] = lambda: "",
    started: float | None = None,
    scenario: str = "",
) -> Tally:
    """Poll the counts once a second until `done(tally)`, calling `inject` every 0.1 s
    meanwhile so a scenario can keep injecting faults. Fails with the counts when `timeout`
    passes or nothing changes for STALL_SECONDS."""
    started = time.monotonic() if started is None else started
    deadline = time.monotonic() + timeout
    last_state: tuple[Any, ...] = ()
    last_change = time.monotonic()
    while True:
        tally = burst.tally()
        if done(tally):
            return tally
        now = time.monotonic()
        state = (
            tally.accepted,
            tally.runs,
            sorted(tally.run_statuses.items()),
            sorted(tally.message_statuses.items()),
        )
        if state != last_state:
            last_state, last_change = state, now
        if now > deadline or now - last_change > STALL_SECONDS:
            why = (
                f"{what}: not done after {timeout:.0f}s"
                if now > deadline
                else f"{what}: no progress for {now - last_change:.0f}s"
            )
            why = f"{why}; {extra()}" if extra() else why
            report(f"{scenario} FAILED", tally, now - started, why)
            pytest.fail(
                f"{scenario}: {why}\n{HEADER}\n{tally.row(scenario, now - started)}\n"
                f"{tally.describe()}\nunsettled messages: "
                f"{describe_messages(burst, ACTIVE_MESSAGE)}"
            )
        next_poll = time.monotonic() + 1.0
        while time.monotonic() < next_poll:
            if inject is not None:
                inject()
            time.sleep(0.1)


def wait_until_settled(burst: Burst, *, timeout: float, **options: Any) -> Tally:
    """Wait until every run and message is final (and if something never arrived at the
    sandbox by then, it never will)."""
    return wait_until(
        burst, Tally.settled, timeout=timeout, what="every run and message final", **options
    )


class Injector:
    """Injects a fault each time the sandbox's accepted count passes one of `points`: tied to
    the burst's progress, not to the clock, so every fault lands while there is work to
    disturb, however fast or slow the machine is."""

    def __init__(self, burst: Burst, points: list[int]) -> None:
        self.burst = burst
        self.points = sorted(points)
        self.injected = 0

    def inject(self) -> None:
        """One fault; subclasses say which."""
        raise NotImplementedError

    def __call__(self) -> None:
        if self.points and self.burst.sandbox.stats()["accepted"] >= self.points[0]:
            self.points.pop(0)
            self.inject()
            self.injected += 1


def ship_under_faults(
    burst: Burst,
    injector: Injector,
    *,
    held_back: float = 0.2,
    timeout: float,
    scenario: str,
    while_shipping: bool = False,
) -> None:
    """Ship most of the burst, then inject faults while it is processed until every planned
    fault has been injected; then ship the part held back, which so always meets workers
    that went through the faults. (Injecting between the saves would pause the burst for
    every worker restart.) With `while_shipping` the first part is shipped from a thread
    meanwhile: workers that keep up with the saves would otherwise have processed most of
    it before the first fault, and the faults would meet a burst nearly done."""
    started = time.monotonic()
    count = int(burst.size * (1 - held_back))
    shipping, failures = None, []
    if while_shipping:

        def ship() -> None:
            try:
                burst.ship(count)
            except Exception as exc:  # noqa: BLE001 — re-raised in the test's thread
                failures.append(exc)
            finally:
                connections.close_all()  # this thread's own

        shipping = threading.Thread(target=ship, name="fault-burst-shipping", daemon=True)
        shipping.start()
    else:
        burst.ship(count)
    wait_until(
        burst,
        lambda _: not injector.points,
        timeout=timeout,
        what=f"the burst's progress while injecting {len(injector.points)} faults",
        inject=injector,
        extra=lambda: f"{injector.injected} injected, {len(injector.points)} not reached",
        started=started,
        scenario=scenario,
    )
    if shipping is not None:
        shipping.join(timeout=timeout)
        if failures:
            raise failures[0]
    burst.ship()


def report(scenario: str, tally: Tally, elapsed: float, notes: str = "") -> None:
    """Print the result table (also shown in pytest's summary) for this scenario."""
    lines = [HEADER, tally.row(scenario, elapsed), f"  {tally.describe()}"]
    if notes:
        lines.append(f"  {notes}")
    REPORTS.extend(lines)
    print("\n".join(lines))


def assert_exactly_once(burst: Burst, tally: Tally) -> None:
    """Every expected message accepted once, every run succeeded, every message
    sent/delivered with a provider id the sandbox knows for that very message (To, Body,
    Subject)."""
    summary = f"\n{HEADER}\n{tally.row('', 0)}\n{tally.describe()}"
    assert tally.events == burst.size, summary
    assert tally.runs == burst.size, summary
    assert tally.duplicates == 0, "the same message was accepted twice" + summary
    assert tally.lost == 0, "expected messages never reached the sandbox" + summary
    assert tally.unexpected == 0, summary
    assert tally.accepted == burst.size, summary
    assert tally.runs_succeeded == burst.size, "not every run succeeded" + summary

    at_sandbox = dict(burst.at_provider())
    rows = list(
        OutboundMessage.objects.filter(
            organization_id=burst.integration.organization_id
        ).values_list("pk", "status", "provider_sid", "to", "body", "content")
    )
    assert len(rows) == burst.size, summary
    wrong = [
        (pk, status, sid)
        for pk, status, sid, to, body, content in rows
        if status not in DONE_MESSAGE
        or at_sandbox.get(sid or "") != burst.recorded(to, body, content)
    ]
    assert not wrong, f"{len(wrong)} messages not sent with a matching sandbox id: {wrong[:10]}"


def describe_messages(burst: Burst, statuses: Any) -> list[dict[str, Any]]:
    """A few messages in `statuses`, with their errors, for failure reports."""
    return list(
        OutboundMessage.objects.filter(
            organization_id=burst.integration.organization_id, status__in=statuses
        ).values("pk", "status", "error_code", "error_message", "attempts", "next_attempt_at")[:10]
    )
