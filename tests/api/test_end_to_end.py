"""The API end to end, with a real worker and the Twilio sandbox: a portal signs up a patient
with consent and ships an order through the API, retrying as clients do, and the patient gets
the SMS exactly once; an opt-out recorded through the API is what the next send obeys."""

import time
from typing import Any

import pytest

from integrations.api.keys import api_key_issue
from integrations.models import ApiKey, OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from tests.api.conftest import key_client, patch, post
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    SANDBOX_FROM,
    CustomEventTypeFactory,
    IntegrationFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.integration

PHONE = "+14155550177"


def _signup(client: Any, consents: list[dict[str, Any]]) -> str:
    body = {
        "first_name": "Ann",
        "last_name": "Lee",
        "phone": "(415) 555-0177",
        "consents": consents,
    }
    for _ in range(2):  # the portal's retry after a timeout
        response = post(client, "/api/v1/patients/", body, **{"Idempotency-Key": "signup-ann"})
        assert response.status_code == 201, response.content
    return str(response.json()["uuid"])


def _ship(client: Any, patient: str) -> None:
    created = post(
        client,
        "/api/v1/orders/",
        {"patient": patient, "number": "5001", "status": "awaiting_shipment"},
        **{"Idempotency-Key": "order-5001"},
    )
    assert created.status_code == 201, created.content
    url = f"/api/v1/orders/{created.json()['uuid']}/"
    for key in ("ship-5001", "ship-5001", "ship-5001-again"):  # retried, then sent again
        shipped = patch(
            client, url, {"status": "shipped", "tracking_number": "1Z9"}, **{"Idempotency-Key": key}
        )
        assert shipped.status_code == 200, shipped.content


@pytest.fixture
def portal(worker: WorkerProcess, sandbox: SandboxServer) -> Any:
    """A clinic with Twilio (the sandbox), an order.shipped SMS workflow, and its portal's
    write key: the client the portal calls the API with."""
    integration = sandbox_account(sandbox, IntegrationFactory())
    organization = integration.organization
    SmsStepFactory(workflow=WorkflowFactory(organization=organization, trigger="order.shipped"))
    issued = api_key_issue(organization=organization, name="Portal", scope=ApiKey.Scope.WRITE)
    return key_client(issued.token)


SMS_CONSENT = {
    "purpose": "transactional",
    "action": "opt_in",
    "source": "signup_form",
    "consent_text": "Order texts.",
}


def test_a_portal_signs_up_a_patient_and_ships_an_order_and_one_sms_goes_out(
    portal: Any, sandbox: SandboxServer
) -> None:
    patient = _signup(portal, [SMS_CONSENT])
    _ship(portal, patient)

    sent = wait_for(lambda: sandbox.messages(), timeout=30, what="the shipped SMS")
    time.sleep(2)  # anything sent twice would be sent by now
    assert [m["to"] for m in sandbox.messages()] == [PHONE]
    assert sent[0]["body"] == "Hi Ann, order 5001 has shipped!"
    assert Event.objects.filter(type="order.shipped").count() == 1
    assert Event.objects.filter(type="customer.signup").count() == 1
    assert OutboundMessage.objects.filter(to=PHONE).count() == 1


def test_an_opt_out_through_the_api_is_obeyed_at_the_next_send(
    portal: Any, sandbox: SandboxServer
) -> None:
    patient = _signup(portal, [SMS_CONSENT])
    opted_out = post(
        portal,
        f"/api/v1/patients/{patient}/consents/",
        {"purpose": "transactional", "action": "opt_out", "source": "patient_portal"},
    )
    assert opted_out.status_code == 201

    _ship(portal, patient)

    run = wait_for(
        lambda: Run.objects.filter(status__in=[Run.Status.SKIPPED, Run.Status.SUCCEEDED]).first(),
        timeout=30,
        what="the run",
    )
    step = StepRun.objects.get(run=run)
    assert step.status == StepRun.Status.SKIPPED
    assert step.skip_reason.startswith("opted out of transactional SMS on ")
    assert "Patient portal" in step.skip_reason
    assert sandbox.stats()["creates"] == 0


def test_a_custom_event_and_a_direct_start_through_the_api_each_text_the_patient_once(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    organization = integration.organization
    CustomEventTypeFactory(organization=organization)
    SmsStepFactory(
        workflow=WorkflowFactory(organization=organization, trigger="custom.lab_results_ready"),
        parameters={
            "message": "Hi {{customer.firstName}}, kit {{data.kitId}} has results.",
            "to": "{{customer.phone}}",
            "from": SANDBOX_FROM,
        },
    )
    follow_up = WorkflowFactory(organization=organization, trigger="order.shipped")
    SmsStepFactory(workflow=follow_up)
    client = key_client(
        api_key_issue(organization=organization, name="Lab", scope=ApiKey.Scope.WRITE).token
    )
    patient = _signup(client, [SMS_CONSENT])

    for _ in range(2):  # retried after a timeout
        posted = post(
            client,
            "/api/v1/events/",
            {"type": "lab_results_ready", "patient": patient, "data": {"kitId": "KIT-7"}},
            **{"Idempotency-Key": "lab-kit-7"},
        )
        assert posted.status_code == 202, posted.content
    started = post(
        client,
        f"/api/v1/workflows/{follow_up.uuid}/runs/",
        {"patient": patient, "data": {"order": {"number": "7007"}}},
        **{"Idempotency-Key": "start-7007"},
    )
    assert started.status_code == 201, started.content
    run_url = f"/api/v1/runs/{started.json()['run']['id']}/"

    wait_for(lambda: len(sandbox.messages()) >= 2, timeout=30, what="both texts")
    status = wait_for(
        lambda: client.get(run_url).json()["status"] == "succeeded" and client.get(run_url),
        timeout=30,
        what="the started run to succeed",
    )
    time.sleep(2)  # anything sent twice would be sent by now
    assert sorted(m["body"] for m in sandbox.messages()) == [
        "Hi Ann, kit KIT-7 has results.",
        "Hi Ann, order 7007 has shipped!",
    ]
    assert status.json()["steps"][0]["status"] == "succeeded"
    runs_of_event = f"/api/v1/runs/?event={posted.json()['id']}"
    wait_for(
        lambda: [r["status"] for r in client.get(runs_of_event).json()["results"]] == ["succeeded"],
        timeout=30,
        what="the custom event's one run to succeed",
    )
