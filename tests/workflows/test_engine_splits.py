"""The engine running A/B split steps in-process, against the sandbox over HTTP: each patient
takes the branch their bucket says, the other branch is recorded as not taken, the run's
variant is its first split's branch, and running a run again changes nothing."""

from typing import Any

import pytest
from django.urls import reverse

from integrations.models import OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.conftest import sandbox_account
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run, StepRun
from workflows.selectors import run_timeline
from workflows.splits import split_choose, split_seed

pytestmark = pytest.mark.django_db


def _split(*shares: tuple[str, int, Any], seed: str = "") -> dict[str, Any]:
    params: dict[str, Any] = {
        "branches": [{"label": name, "percent": p, "goto": g} for name, p, g in shares]
    }
    if seed:
        params["seed"] = seed
    return {"type": "split", "adapter": "", "function": "", "parameters": params}


def _sms(message: str) -> dict[str, Any]:
    return {
        "type": "adapter",
        "parameters": {"message": message, "to": "{{customer.phone}}", "from": "+15005550006"},
    }


@pytest.fixture
def clinic(sandbox: SandboxServer) -> dict[str, Any]:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    return {"org": integration.organization, "workflow": workflow}


def _steps(workflow: Any, *definitions: dict[str, Any]) -> None:
    workflow.steps.all().delete()
    for position, definition in enumerate(definitions, start=1):
        SmsStepFactory(workflow=workflow, position=position, **definition)


def _patient_in(clinic: dict[str, Any], params: dict[str, Any], label: str) -> Any:
    """A new consenting patient whose bucket puts them in `label` (50/50: a few tries)."""
    seed = split_seed(params, default=str(clinic["workflow"].uuid))
    for n in range(64):
        patient = PatientFactory(organization=clinic["org"], phone=f"+1415555{n:04d}")
        if split_choose(params, seed=seed, key=str(patient.uuid)).label == label:
            ConsentFactory(patient=patient)
            return patient
        patient.delete()
    raise AssertionError(f"no patient fell into {label}")


def _run(patient: Any) -> Run:
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()
    event = Event.objects.get(type="order.shipped", subject_id=str(order.pk))
    (run_id,) = event_dispatch(event_id=event.pk)
    run = run_advance(run_id=run_id)
    assert run is not None
    return Run.objects.get(pk=run_id)


def test_each_branch_runs_its_own_steps_and_the_other_is_not_reached(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    split = _split(("A", 50, "next"), ("B", 50, 3))
    _steps(clinic["workflow"], split, _sms("text A"), _sms("text B"))
    ann = _patient_in(clinic, split["parameters"], "A")
    bob = _patient_in(clinic, split["parameters"], "B")

    run_a, run_b = _run(ann), _run(bob)

    assert sorted((m["to"], m["body"]) for m in sandbox.messages()) == sorted(
        [(ann.phone, "text A"), (bob.phone, "text B")]
    )
    assert (run_a.status, run_a.variant) == (Run.Status.SUCCEEDED, "A")
    assert (run_b.status, run_b.variant) == (Run.Status.SUCCEEDED, "B")
    a_steps = list(StepRun.objects.filter(run=run_a).order_by("index"))
    assert a_steps[0].result["branch"] == "A" and a_steps[0].result["why"].endswith("→ A (0–49)")
    assert [s.status for s in a_steps] == ["succeeded", "succeeded", "skipped"]
    assert a_steps[2].skip_reason == "not reached: in another branch of step 1"
    b_steps = list(StepRun.objects.filter(run=run_b).order_by("index"))
    assert [s.status for s in b_steps] == ["succeeded", "skipped", "succeeded"]
    assert b_steps[1].skip_reason == "not reached: the A/B split at step 1 chose another branch"
    # The run page shows the branch not taken as such, not as a skip.
    timeline = run_timeline(run_b)
    assert [item["not_taken"] for item in timeline] == [False, True, False]
    why = b_steps[0].result["why"]
    assert why.startswith("bucket ") and why.endswith("→ B (50–99)")
    assert timeline[0]["split"] == {"branch": "B", "why": why}
    page = clinic_client(clinic["org"], "view_run").get(
        reverse("admin:workflows_run_change", args=[run_b.pk])
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "<dt>Branch</dt><dd>B</dd>" in html and f"<dd>{why}</dd>" in html
    assert "not taken" in html


def test_a_branch_going_to_end_ends_the_run_and_sends_nothing(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    split = _split(("Text", 50, "next"), ("Holdout", 50, "end"))
    _steps(clinic["workflow"], split, _sms("offer"))
    held_out = _patient_in(clinic, split["parameters"], "Holdout")
    run = _run(held_out)
    assert (run.status, run.variant) == (Run.Status.SUCCEEDED, "Holdout")
    assert sandbox.messages() == [] and not OutboundMessage.objects.exists()
    second = StepRun.objects.get(run=run, index=1)
    assert second.status == StepRun.Status.SKIPPED


def test_the_variant_is_the_first_splits_branch_and_advancing_again_changes_nothing(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    outer = _split(("A", 50, "next"), ("B", 50, 4))
    inner = _split(("X", 50, "next"), ("Y", 50, "next"), seed="inner")
    _steps(clinic["workflow"], outer, inner, _sms("text A"), _sms("text B"))
    ann = _patient_in(clinic, outer["parameters"], "A")
    run = _run(ann)
    inner_run = StepRun.objects.get(run=run, index=1)
    assert inner_run.result["branch"] in ("X", "Y") and inner_run.result["seed"] == "custom"
    assert run.variant == "A"
    assert [m["body"] for m in sandbox.messages()] == ["text A"]

    assert run_advance(run_id=run.pk) is None  # finished: nothing to claim
    run.refresh_from_db()
    assert run.variant == "A" and len(sandbox.messages()) == 1


def test_the_same_patient_takes_the_same_branch_in_every_run(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    split = _split(("A", 50, "next"), ("B", 50, 3))
    _steps(clinic["workflow"], split, _sms("text A"), _sms("text B"))
    bob = _patient_in(clinic, split["parameters"], "B")
    variants = {_run(bob).variant for _ in range(3)}
    assert variants == {"B"}
    assert [m["body"] for m in sandbox.messages()] == ["text B"] * 3


def test_a_split_saved_with_bad_percents_fails_the_run_with_the_reason(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    # Saved around validation (e.g. by a data migration): the run says why and sends nothing.
    _steps(clinic["workflow"], _split(("A", 0, "next"), ("B", 0, "next")), _sms("x"))
    patient = PatientFactory(organization=clinic["org"])
    ConsentFactory(patient=patient)
    run = _run(patient)
    first = StepRun.objects.get(run=run, index=0)
    assert (run.status, first.status, run.variant) == (Run.Status.FAILED, "failed", "")
    assert "percents must sum to 100" in first.error
    assert sandbox.messages() == []


def test_a_split_redone_after_its_worker_died_takes_the_same_branch(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    """The worker dies after choosing (the split's step run is written, the run not moved
    on): whoever takes the run over after its lease chooses again, the same branch, and the
    variant is not rewritten."""
    from datetime import timedelta

    from django.utils import timezone

    split = _split(("A", 50, "next"), ("B", 50, 3))
    _steps(clinic["workflow"], split, _sms("text A"), _sms("text B"))
    bob = _patient_in(clinic, split["parameters"], "B")
    run = _run(bob)
    assert run.variant == "B" and [m["body"] for m in sandbox.messages()] == ["text B"]
    # Rewind to "running step 1, lease expired", as a worker that died mid-step leaves it.
    StepRun.objects.filter(run=run).delete()
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING,
        next_index=0,
        finished_at=None,
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    taken = run_advance(run_id=run.pk)
    assert taken is not None and taken.status == Run.Status.SUCCEEDED
    assert StepRun.objects.get(run=run, index=0).result["branch"] == "B"
    run.refresh_from_db()
    assert run.variant == "B"
    # The text of branch B has the same idempotency key: it is not sent a second time.
    assert [m["body"] for m in sandbox.messages()] == ["text B"]
    assert OutboundMessage.objects.count() == 1
