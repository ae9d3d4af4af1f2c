"""Data set-up inside a Django-configured child process (careflow or baseline settings)."""

from __future__ import annotations

import time
from datetime import time as dtime
from decimal import Decimal
from typing import Any

from bench.common import SANDBOX_ACCOUNT, SANDBOX_FROM

LINE_ITEMS = [
    {
        "name": "Vitamin D",
        "productId": "p1",
        "price": "49.00",
        "quantity": 1,
        "isSubscription": False,
    }
]
BODY = "Hi {{customer.firstName}}, order {{order.number}} has shipped!"


def phone(i: int) -> str:
    return f"+1415{2000000 + i:07d}"


def rate_field() -> str:
    """Where the per-sender rate is set, for the reports."""
    return "settings.segments_per_second"


def careflow_clinic(
    *,
    other_workflows: int = 0,
    with_sms_workflow: bool = True,
    sender_rate: float | None = None,
    sender: str = SANDBOX_FROM,
) -> Any:
    """A clinic with open-all-day quiet hours and no caps, the sandbox account as its Twilio
    integration (sending from `sender`, a number the sandbox account owns), and one enabled
    order.shipped workflow with one Twilio sendSMS step."""
    from integrations.models import Integration, MessagingPolicy
    from integrations.twilio.account import ADAPTER, twilio_settings
    from patients.models import Organization
    from workflows.models import Step, Workflow

    org = Organization.objects.create(
        name="Bench Clinic", slug=f"bench-{time.time_ns()}", timezone="America/Los_Angeles"
    )
    MessagingPolicy.objects.update_or_create(
        organization=org,
        defaults={
            "quiet_hours_start": dtime(0, 0),
            "quiet_hours_end": dtime.max,
            "marketing_per_day": None,
            "marketing_per_week": None,
        },
    )
    Integration.objects.create(
        organization=org,
        adapter=ADAPTER,
        settings=twilio_settings(account_sid=SANDBOX_ACCOUNT[0], segments_per_second=sender_rate),
        secrets={"auth_token": SANDBOX_ACCOUNT[1]},
        senders=[sender],
    )
    if with_sms_workflow:
        workflow = Workflow.objects.create(
            organization=org, name="Order shipped SMS", trigger="order.shipped", enabled=True
        )
        Step.objects.create(
            workflow=workflow,
            position=1,
            adapter="twilio",
            function="sendSMS",
            parameters={"message": BODY, "to": "{{customer.phone}}", "from": sender},
        )
    others = [
        "order.created",
        "order.processing",
        "customer.signup",
        "customer.updated",
        "cart.checkout",
        "appointment.booked",
        "appointment.confirmed",
        "subscription.created",
        "prescription.created",
        "lead.created",
    ]
    for i in range(other_workflows):
        workflow = Workflow.objects.create(
            organization=org,
            name=f"Other workflow {i}",
            trigger=others[i % len(others)],
            enabled=True,
        )
        Step.objects.create(
            workflow=workflow,
            position=1,
            adapter="twilio",
            function="sendSMS",
            parameters={
                "message": "Hello {{customer.firstName}}",
                "to": "{{customer.phone}}",
                "from": sender,
            },
        )
    return org


def careflow_patients(org: Any, count: int, start: int = 0) -> list[Any]:
    """Patients (bulk: no signup events) with transactional SMS consent."""
    from patients.models import ConsentRecord, Patient

    patients = Patient.objects.bulk_create(
        [
            Patient(
                organization=org,
                first_name=f"Pat{start + i}",
                last_name="Lee",
                phone=phone(start + i),
                timezone="America/Los_Angeles",
            )
            for i in range(count)
        ],
        batch_size=2000,
    )
    ConsentRecord.objects.bulk_create(
        [
            ConsentRecord(
                patient=p,
                purpose=ConsentRecord.Purpose.TRANSACTIONAL,
                action=ConsentRecord.Action.OPT_IN,
                source=ConsentRecord.Source.SIGNUP_FORM,
                consent_text="I agree to receive texts about my orders.",
            )
            for p in patients
        ],
        batch_size=2000,
    )
    return patients


def careflow_orders(org: Any, patients: list[Any], count: int, prefix: str) -> list[int]:
    """Orders in `processing`, inserted in bulk (no order.created events); returns ids."""
    from patients.models import Order

    orders = Order.objects.bulk_create(
        [
            Order(
                organization=org,
                patient=patients[i % len(patients)],
                number=f"{prefix}{i:06d}",
                status=Order.Status.PROCESSING,
                total_amount=Decimal("49.00"),
                line_items=LINE_ITEMS,
            )
            for i in range(count)
        ],
        batch_size=2000,
    )
    return [o.pk for o in orders]


def baseline_orders(count: int, prefix: str, model: Any = None) -> list[int]:
    from bench.baseline.models import BaseOrder

    model = model or BaseOrder
    orders = model.objects.bulk_create(
        [
            model(
                number=f"{prefix}{i:06d}",
                status="processing",
                first_name=f"Pat{i}",
                phone=phone(i),
                total_amount=Decimal("49.00"),
                line_items=LINE_ITEMS,
            )
            for i in range(count)
        ],
        batch_size=2000,
    )
    return [o.pk for o in orders]


def ship(
    system: str, order_ids: list[int], rate: float | None, per_transaction: int = 1
) -> dict[str, float]:
    """Change each order to shipped, one transaction per save (by default); returns {number: commit time}.

    The commit time is taken by an on_commit callback registered before the save, so it runs
    first after COMMIT, before the system's own publish callback. `rate` paces the saves
    (events/s, on an absolute schedule); None floods. `per_transaction` > 1 commits that many
    saves together (a flood that one saving process can keep ahead of many workers).
    """
    from django.db import transaction

    if system == "careflow":
        from patients.models import Order as model
    else:
        from bench.baseline.models import BaseOrder as model

    committed: dict[str, float] = {}
    start = time.perf_counter()
    for first in range(0, len(order_ids), per_transaction):
        if rate:
            due = start + first / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        chunk = order_ids[first : first + per_transaction]
        orders = [model.objects.get(pk=pk) for pk in chunk]
        with transaction.atomic():
            for order in orders:
                number = order.number
                transaction.on_commit(lambda n=number: committed.__setitem__(n, time.time()))
                order.status = "shipped"
                order.tracking_number = "1Z999AA10123456784"
                order.save()
    return committed
