"""Reads of the messaging app for the pages that show them.

The messages of a workflow run, as the engine's run page shows them: registered with the
engine (workflows.adapters.step_messages_register) when the app is ready, because the engine
cannot import the messaging models. The send decision's checks are presented here too, for
that page and for a dry run's report."""

from collections.abc import Mapping
from typing import Any

from integrations.models import OutboundMessage
from integrations.policy import SEND_CHECKS
from patients.clinic_view import clinic_datetime
from workflows.adapters import REGISTRY
from workflows.models import Run


def decision_checks(decision: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A send decision's checks in policy order, the ones never reached marked as such."""
    if not decision:
        return []
    checks: list[dict[str, Any]] = [
        {**check, "state": "passed" if check.get("ok") else "failed"}
        for check in decision.get("checks", [])
    ]
    made = {check.get("check") for check in checks}
    if not decision.get("allowed"):
        checks += [
            {"check": name, "ok": None, "state": "skipped", "detail": "not checked"}
            for name in SEND_CHECKS
            if name not in made
        ]
    return checks


def _explanation(message: OutboundMessage) -> str:
    adapter = REGISTRY.get(message.integration.adapter)
    return adapter.error_explanation(message.error_code) if adapter else ""


def _provider(message: OutboundMessage) -> str:
    adapter = REGISTRY.get(message.integration.adapter)
    return adapter.label if adapter else message.integration.adapter


def run_step_messages(run: Run) -> dict[int, list[dict[str, Any]]]:
    """Each step run's messages (by step run id) with the send decision of each, times in
    the clinic's zone; one query."""
    zone = run.workflow.organization.timezone
    by_step_run: dict[int, list[dict[str, Any]]] = {}
    messages = (
        OutboundMessage.objects.filter(step_run__run=run)
        .select_related("integration")
        .order_by("created_at", "id")
    )
    for message in messages:
        decision = message.decision or {}
        by_step_run.setdefault(message.step_run_id or 0, []).append(
            {
                "message": message,
                "provider": _provider(message),
                "explanation": _explanation(message) if message.error_code else "",
                "checks": decision_checks(message.decision),
                "decided": clinic_datetime(decision.get("at"), zone),
                "defer_until": clinic_datetime(decision.get("defer_until"), zone),
                "sent": clinic_datetime(message.sent_at, zone),
                "delivered": clinic_datetime(message.delivered_at, zone),
            }
        )
    return by_step_run
