"""An A/B split through a real worker: two patients whose buckets differ each get their
branch's text, and each run records its variant."""

from typing import Any

import pytest

from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    IntegrationFactory,
    OrderFactory,
    SmsStepFactory,
    WorkflowFactory,
    patient_in_branch,
)
from workflows.models import Run, StepRun
from workflows.splits import split_seed

pytestmark = pytest.mark.integration

SPLIT = {
    "branches": [
        {"label": "Short", "percent": 50, "goto": "next"},
        {"label": "Friendly", "percent": 50, "goto": 3},
    ]
}


def _sms(message: str) -> dict[str, Any]:
    return {"parameters": {"message": message, "to": "{{customer.phone}}", "from": "+15005550006"}}


def test_two_patients_take_different_branches_and_get_different_texts(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    for position, step in enumerate(
        [
            {"type": "split", "adapter": "", "function": "", "parameters": SPLIT},
            _sms("Order {{order.number}} shipped."),
            _sms("Good news {{customer.firstName}}: order {{order.number}} is on its way!"),
        ],
        start=1,
    ):
        SmsStepFactory(workflow=workflow, position=position, **step)
    seed = split_seed(SPLIT, default=str(workflow.uuid))
    short = patient_in_branch(
        integration.organization, SPLIT, seed=seed, label="Short", phone="+14155550121"
    )
    friendly = patient_in_branch(
        integration.organization, SPLIT, seed=seed, label="Friendly", phone="+14155550122"
    )
    for patient, number in ((short, "S-1"), (friendly, "F-1")):
        order = OrderFactory(patient=patient, number=number, status=Order.Status.AWAITING_SHIPMENT)
        order.status = Order.Status.SHIPPED
        order.save()

    wait_for(
        lambda: Run.objects.filter(status=Run.Status.SUCCEEDED).count() == 2,
        timeout=30,
        what="both runs to finish",
    )
    assert sorted((m["to"], m["body"]) for m in sandbox.messages()) == [
        ("+14155550121", "Order S-1 shipped."),
        ("+14155550122", f"Good news {friendly.first_name}: order F-1 is on its way!"),
    ]
    variants = dict(Run.objects.values_list("patient_key", "variant"))
    assert variants == {str(short.uuid): "Short", str(friendly.uuid): "Friendly"}
    not_taken = StepRun.objects.get(run__patient_key=str(short.uuid), index=2)
    assert not_taken.skip_reason == "not reached: in another branch of step 1"
