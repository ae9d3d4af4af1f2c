"""Failure alerts: tell a clinic's staff (email) and systems (a signed webhook) when something
breaks, before a patient complains.

Conditions, evaluated by beat (`alerts_evaluate`, every minute) for clinics whose
AlertSettings are enabled and name a recipient:

- run_failed: a run of a workflow failed (runs of live tests excluded); one alert per
  workflow per period, the period being the one the latest failure fell in.
- failure_rate / undelivered_rate: of a workflow's messages created in the last hour whose
  outcome is known (sent, delivered, undelivered, failed, unknown), more than the clinic's
  threshold failed / were undelivered, out of at least `minimum_messages`.
- queue_window: a sender's sending booked ahead (the throttle's backlog: the units queued for
  it divided by its rate) is longer than its provider queues messages (Twilio: about 10
  hours, then 21611), so messages would fail at the provider.
- credentials: a send was refused for the credentials (Twilio 20003 / HTTP 401) in the
  period, or support staff's credentials check was (`alert_credentials_rejected`).
- unconfirmed: a send ended ambiguously and could not be confirmed at the provider (its
  look-ups were refused or kept failing, or the provider cannot be asked), so it was left
  "unknown" for staff, neither resent nor given up, in the period; one alert per integration.

No alert storms: an Alert row is unique per (clinic, condition, subject, period) and is
claimed (inserted under that constraint) before anything is sent, so two beat ticks, two beat
processes or two workers raise one alert per condition and period; only the claimant queues
its delivery. Delivery is a separate task (`alert_deliver`), claimed by a conditional UPDATE,
retried with backoff through `next_attempt_at` (swept by the same beat task, never a long
broker ETA); its failures are recorded on the alert and never reach the evaluation.

The alert names counts, ids and workflow names, never a patient, a phone number or a message
body, and links to the filtered admin list (absolute, under CAREFLOW_PUBLIC_URL).
"""

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import redis
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, F, Max, Q
from django.urls import reverse
from django.utils import timezone
from urllib3.exceptions import HTTPError

from common.retry import retry_delay
from integrations.forms import integration_form_get
from integrations.messaging import TRANSPORTS
from integrations.models import Alert, AlertSettings, Integration, OutboundMessage
from integrations.throttle import throttle_backlog
from integrations.webhook import (
    USER_AGENT,
    WebhookRefused,
    webhook_post,
    webhook_resolve,
    webhook_target,
)
from workflows.models import Run

logger = logging.getLogger(__name__)

Condition = Alert.Condition
Status = OutboundMessage.Status

# The rates are over this rolling window (the "in the last hour").
RATE_WINDOW = timedelta(hours=1)
# Messages whose outcome is known: the rates' denominator. Pending, sending and skipped
# messages say nothing about the provider yet.
ATTEMPTED = (Status.SENT, Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.UNKNOWN)
# "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>", as Stripe signs.
SIGNATURE_HEADER = "X-Careflow-Signature"
# Alerts whose delivery is due, queued per beat tick at most.
SWEEP_BATCH = 100
# Retries sooner than this are queued with an ETA; later ones wait for the sweep.
SHORT_WAIT = timedelta(seconds=60)
# The sweep is the fallback for a delivery task that was lost (broker down at commit, a
# worker killed): it leaves alone what was due only just now, which its task (queued at
# commit, or as a short retry's ETA) is about to take.
SWEEP_GRACE = timedelta(seconds=30)

_delivery_task: Any = None


def alert_delivery_task_register(task: Any) -> None:
    """The Celery task that delivers one alert (`integrations.tasks.alert_deliver`): the tasks
    module imports this one, so it hands its task over in AppConfig.ready()."""
    global _delivery_task
    _delivery_task = task


def _deliver_later(alert_id: int) -> None:
    if _delivery_task is None:
        return
    try:
        _delivery_task.delay(alert_id)
    except Exception as exc:  # noqa: BLE001 — the broker is down: the sweep delivers it
        # Raised from an on_commit hook, this would fail the admin request or beat tick
        # that raised the alert, which is already committed and will be swept.
        logger.warning("alert %s: delivery not queued (%s)", alert_id, type(exc).__name__)


def period_start(moment: datetime, minutes: int) -> datetime:
    """The start of the de-duplication period `moment` falls in (periods aligned on the
    Unix epoch, so every worker computes the same one)."""
    seconds = max(1, minutes) * 60
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, tz=UTC)


def _absolute(path: str, query: dict[str, Any] | None = None) -> str:
    return (
        settings.CAREFLOW_PUBLIC_URL.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
    )


@dataclass(frozen=True)
class Finding:
    """A condition met for one subject in one period; `describe` is called only for findings
    with no alert yet (it may query), and returns (summary, details, link)."""

    organization_id: int
    condition: str
    subject: str
    period_start: datetime
    describe: Callable[[], tuple[str, dict[str, Any], str]] = field(compare=False)

    @property
    def key(self) -> tuple[int, str, str, datetime]:
        return (self.organization_id, self.condition, self.subject, self.period_start)


def alert_raise(*, finding: Finding) -> Alert | None:
    """Claim the alert for the finding's clinic, condition, subject and period, and queue its
    delivery once committed. None when it was raised already (by this or another process):
    the unique constraint decides, in the database."""
    summary, details, link = finding.describe()
    with transaction.atomic():
        alert, created = Alert.objects.get_or_create(
            organization_id=finding.organization_id,
            condition=finding.condition,
            subject=finding.subject,
            period_start=finding.period_start,
            defaults={
                "summary": summary[:500],
                "details": details,
                "link": link,
                "next_attempt_at": timezone.now(),
            },
        )
        if not created:
            return None
        alert_id = alert.pk
        transaction.on_commit(lambda: _deliver_later(alert_id))
    logger.info("alert %s raised: %s %s", alert.pk, finding.condition, finding.subject)
    return alert


# --- conditions -----------------------------------------------------------------------


def _failed_runs(configured: dict[int, AlertSettings], now: datetime) -> list[Finding]:
    longest = max(s.period_minutes for s in configured.values())
    rows = (
        Run.objects.filter(
            status=Run.Status.FAILED,
            finished_at__gte=now - timedelta(minutes=longest),
            is_test=False,
            workflow__organization_id__in=configured,
        )
        .values("workflow_id", "workflow__name", "workflow__organization_id")
        .annotate(last=Max("finished_at"))
        .order_by()
    )
    findings: list[Finding] = []
    for row in rows:
        alert_settings = configured[row["workflow__organization_id"]]
        if row["last"] < now - timedelta(minutes=alert_settings.period_minutes):
            continue
        start = period_start(row["last"], alert_settings.period_minutes)
        findings.append(
            Finding(
                row["workflow__organization_id"],
                Condition.RUN_FAILED,
                f"workflow:{row['workflow_id']}",
                start,
                _describe_failed_runs(row["workflow_id"], row["workflow__name"], start, now),
            )
        )
    return findings


def _describe_failed_runs(
    workflow_id: int, name: str, start: datetime, now: datetime
) -> Callable[[], tuple[str, dict[str, Any], str]]:
    def describe() -> tuple[str, dict[str, Any], str]:
        failed = Run.objects.filter(
            workflow_id=workflow_id,
            status=Run.Status.FAILED,
            is_test=False,
            finished_at__gte=start,
            finished_at__lte=now,
        ).count()
        return (
            f"Workflow “{name}” (id {workflow_id}): {failed} failed run(s) since "
            f"{start:%Y-%m-%d %H:%M} UTC",
            {"workflow_id": workflow_id, "workflow": name, "failed_runs": failed},
            _absolute(
                reverse("admin:workflows_run_changelist"),
                {"status": Run.Status.FAILED, "workflow": workflow_id},
            ),
        )

    return describe


def _message_rates(configured: dict[int, AlertSettings], now: datetime) -> list[Finding]:
    rows = (
        OutboundMessage.objects.filter(
            organization_id__in=configured,
            created_at__gte=now - RATE_WINDOW,
            is_test=False,
            step_run__isnull=False,
        )
        .values("organization_id", "step_run__run__workflow_id", "step_run__run__workflow__name")
        .annotate(
            total=Count("id", filter=Q(status__in=ATTEMPTED)),
            failed=Count("id", filter=Q(status=Status.FAILED)),
            undelivered=Count("id", filter=Q(status=Status.UNDELIVERED)),
        )
        .order_by()
    )
    findings: list[Finding] = []
    for row in rows:
        alert_settings = configured[row["organization_id"]]
        total = row["total"]
        if total < alert_settings.minimum_messages:
            continue
        start = period_start(now, alert_settings.period_minutes)
        for condition, status, count, threshold in (
            (
                Condition.FAILURE_RATE,
                Status.FAILED,
                row["failed"],
                alert_settings.failure_rate_percent,
            ),
            (
                Condition.UNDELIVERED_RATE,
                Status.UNDELIVERED,
                row["undelivered"],
                alert_settings.undelivered_rate_percent,
            ),
        ):
            # Integers only: "more than 20 %" of 10 is 3, not 2.000001.
            if count * 100 <= threshold * total:
                continue
            findings.append(
                Finding(
                    row["organization_id"],
                    condition,
                    f"workflow:{row['step_run__run__workflow_id']}",
                    start,
                    _describe_rate(
                        row["step_run__run__workflow_id"],
                        row["step_run__run__workflow__name"],
                        status,
                        count,
                        total,
                        threshold,
                        now,
                    ),
                )
            )
    return findings


def _describe_rate(
    workflow_id: int,
    name: str,
    status: str,
    count: int,
    total: int,
    threshold: int,
    now: datetime,
) -> Callable[[], tuple[str, dict[str, Any], str]]:
    def describe() -> tuple[str, dict[str, Any], str]:
        codes = dict(
            OutboundMessage.objects.filter(
                step_run__run__workflow_id=workflow_id,
                created_at__gte=now - RATE_WINDOW,
                is_test=False,
                status=status,
            )
            .values_list("error_code")
            .annotate(n=Count("id"))
            .order_by("-n")[:10]
        )
        word = "failed" if status == Status.FAILED else "undelivered"
        return (
            f"Workflow “{name}” (id {workflow_id}): {count} of {total} messages {word} in "
            f"the last hour ({count * 100 // total}% > {threshold}%)",
            {
                "workflow_id": workflow_id,
                "workflow": name,
                word: count,
                "messages": total,
                "threshold_percent": threshold,
                "error_codes": {code or "none": n for code, n in codes.items()},
            },
            _absolute(
                reverse("admin:integrations_outboundmessage_changelist"),
                {"status": status, "workflow": workflow_id},
            ),
        )

    return describe


def _queues(configured: dict[int, AlertSettings], now: datetime) -> list[Finding]:
    findings: list[Finding] = []
    integrations = Integration.objects.filter(organization_id__in=configured, enabled=True)
    for integration in integrations:
        form = integration_form_get(integration.adapter)
        if form is None or form.queue_limit_seconds is None:
            continue
        limit = form.queue_limit_seconds
        for sender, key in form.backlog_keys(integration):
            try:
                seconds = throttle_backlog(key=key)
            except redis.RedisError:
                # The next tick asks again; the other conditions still count.
                logger.warning(
                    "alerts: throttle unreachable, queue of integration %s not checked",
                    integration.pk,
                )
                return findings
            if seconds <= limit:
                continue
            alert_settings = configured[integration.organization_id]
            findings.append(
                Finding(
                    integration.organization_id,
                    Condition.QUEUE_WINDOW,
                    f"sender:{integration.pk}:{sender}",
                    period_start(now, alert_settings.period_minutes),
                    _describe_queue(integration, form.adapter_label, sender, seconds, limit),
                )
            )
    return findings


def _describe_queue(
    integration: Integration, label: str, sender: str, seconds: float, limit: float
) -> Callable[[], tuple[str, dict[str, Any], str]]:
    def describe() -> tuple[str, dict[str, Any], str]:
        return (
            f"Sender {sender} ({label}, integration {integration.pk}): about "
            f"{seconds / 3600:.1f} hours of sending queued, beyond {label}'s "
            f"{limit / 3600:g}-hour queue: later messages would fail",
            {
                "integration_id": integration.pk,
                "sender": sender,
                "queued_seconds": round(seconds),
                "limit_seconds": round(limit),
            },
            _absolute(
                reverse("admin:integrations_outboundmessage_changelist"),
                {"sender": sender, "status": Status.PENDING},
            ),
        )

    return describe


def _credential_failures(configured: dict[int, AlertSettings], now: datetime) -> list[Finding]:
    codes = {name: t.credentials_error_codes for name, t in TRANSPORTS.items()}
    every_code = set().union(*codes.values()) if codes else set()
    if not every_code:
        return []
    longest = max(s.period_minutes for s in configured.values())
    rows = (
        OutboundMessage.objects.filter(
            organization_id__in=configured,
            created_at__gte=now - timedelta(minutes=longest),
            error_code__in=every_code,
        )
        .values("organization_id", "integration_id", "integration__adapter", "error_code")
        .annotate(n=Count("id"), last=Max("updated_at"))
        .order_by()
    )
    findings: list[Finding] = []
    for row in rows:
        if row["error_code"] not in codes.get(row["integration__adapter"], ()):
            continue
        alert_settings = configured[row["organization_id"]]
        if row["last"] < now - timedelta(minutes=alert_settings.period_minutes):
            continue
        findings.append(
            _credentials_finding(
                organization_id=row["organization_id"],
                integration_id=row["integration_id"],
                start=period_start(row["last"], alert_settings.period_minutes),
                said=f"{row['n']} message(s) refused with error {row['error_code']}",
            )
        )
    return findings


def _credentials_finding(
    *, organization_id: int, integration_id: int, start: datetime, said: str
) -> Finding:
    def describe() -> tuple[str, dict[str, Any], str]:
        return (
            f"Integration {integration_id}: the provider rejected the credentials ({said})",
            {"integration_id": integration_id, "said": said},
            _absolute(reverse("admin:integrations_integration_change", args=[integration_id])),
        )

    return Finding(
        organization_id, Condition.CREDENTIALS, f"integration:{integration_id}", start, describe
    )


def alert_credentials_rejected(*, integration: Integration, said: str) -> Alert | None:
    """The provider refused this integration's credentials when they were checked: raise the
    credentials alert (once per period, like the one raised from refused sends)."""
    alert_settings = _configured([integration.organization_id]).get(integration.organization_id)
    if alert_settings is None:
        return None
    return alert_raise(
        finding=_credentials_finding(
            organization_id=integration.organization_id,
            integration_id=integration.pk,
            start=period_start(timezone.now(), alert_settings.period_minutes),
            said=f"credentials check: {said}"[:200],
        )
    )


def _unconfirmed(configured: dict[int, AlertSettings], now: datetime) -> list[Finding]:
    longest = max(s.period_minutes for s in configured.values())
    rows = (
        OutboundMessage.objects.filter(
            organization_id__in=configured,
            status=Status.UNKNOWN,
            next_attempt_at__isnull=True,  # nothing will look at it again: staff must
            updated_at__gte=now - timedelta(minutes=longest),
        )
        .values("organization_id", "integration_id")
        .annotate(n=Count("id"), last=Max("updated_at"))
        .order_by()
    )
    findings: list[Finding] = []
    for row in rows:
        alert_settings = configured[row["organization_id"]]
        if row["last"] < now - timedelta(minutes=alert_settings.period_minutes):
            continue
        findings.append(
            Finding(
                row["organization_id"],
                Condition.UNCONFIRMED,
                f"integration:{row['integration_id']}",
                period_start(row["last"], alert_settings.period_minutes),
                _describe_unconfirmed(row["integration_id"], row["n"]),
            )
        )
    return findings


def _describe_unconfirmed(
    integration_id: int, count: int
) -> Callable[[], tuple[str, dict[str, Any], str]]:
    def describe() -> tuple[str, dict[str, Any], str]:
        return (
            f"Integration {integration_id}: {count} message(s) could not be confirmed at the "
            "provider and were not sent again (they may have gone out): check them in the "
            "provider's console",
            {"integration_id": integration_id, "unconfirmed": count},
            _absolute(
                reverse("admin:integrations_outboundmessage_changelist"),
                {"status": Status.UNKNOWN},
            ),
        )

    return describe


CONDITIONS: tuple[Callable[[dict[int, AlertSettings], datetime], list[Finding]], ...] = (
    _failed_runs,
    _message_rates,
    _queues,
    _credential_failures,
    _unconfirmed,
)


def _configured(organization_ids: Iterable[int] | None = None) -> dict[int, AlertSettings]:
    """Clinics that want alerts: settings enabled and at least one recipient."""
    rows = AlertSettings.objects.filter(enabled=True)
    if organization_ids is not None:
        rows = rows.filter(organization_id__in=list(organization_ids))
    return {s.organization_id: s for s in rows if s.has_recipient}


def alerts_evaluate(*, now: datetime | None = None) -> list[Alert]:
    """Beat: queue the deliveries that are due, then evaluate every condition of every clinic
    that wants alerts and raise the alerts not raised yet in their period. Returns the alerts
    raised by this call."""
    now = now or timezone.now()
    due = list(
        Alert.objects.filter(next_attempt_at__lte=now - SWEEP_GRACE)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    for alert_id in due:
        _deliver_later(alert_id)
    configured = _configured()
    if not configured:
        return []
    findings = [finding for condition in CONDITIONS for finding in condition(configured, now)]
    if not findings:
        return []
    # One query for what is raised already: describing a finding (counting, with error
    # codes) is then only done for the new ones, once per period.
    raised = set(
        Alert.objects.filter(
            organization_id__in={f.organization_id for f in findings},
            period_start__gte=min(f.period_start for f in findings),
        ).values_list("organization_id", "condition", "subject", "period_start")
    )
    alerts = []
    for finding in findings:
        if finding.key in raised:
            continue
        alert = alert_raise(finding=finding)
        if alert is not None:
            alerts.append(alert)
    return alerts


# --- delivery -------------------------------------------------------------------------


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The webhook's JSON document: no patient data (see the module docstring)."""
    return {
        "id": str(alert.uuid),
        "clinic": {"id": alert.organization_id, "name": alert.organization.name},
        "condition": alert.condition,
        "condition_label": alert.get_condition_display(),
        "subject": alert.subject,
        "period_start": alert.period_start.isoformat(),
        "created_at": alert.created_at.isoformat(),
        "summary": alert.summary,
        "details": alert.details,
        "link": alert.link,
    }


def alert_signature(*, secret: str, body: bytes, timestamp: int) -> str:
    """The value of the X-Careflow-Signature header. A receiver recomputes the HMAC over
    "<t>." + the raw body with the shared secret, compares in constant time, and refuses a
    `t` too far from its clock (a replay)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _email(alert: Alert, recipients: list[str]) -> None:
    body = "\n".join(
        [
            alert.summary,
            "",
            f"Clinic: {alert.organization.name}",
            f"Condition: {alert.get_condition_display()}",
            f"Since: {alert.period_start:%Y-%m-%d %H:%M} UTC",
            f"See: {alert.link}",
            "",
            "careflow sends at most one alert per condition per period.",
        ]
    )
    send_mail(
        subject=f"[careflow] {alert.organization.name}: {alert.get_condition_display()}",
        message=body,
        from_email=None,  # DEFAULT_FROM_EMAIL
        recipient_list=recipients,
        fail_silently=False,
    )


class _Permanent(Exception):
    """A webhook that can never be delivered as configured: not retried."""


def _webhook(alert: Alert, url: str, secret: str) -> None:
    """POST the alert; raises _Permanent, or any error meaning "try again later"."""
    try:
        target = webhook_resolve(webhook_target(url))
    except WebhookRefused as exc:
        raise _Permanent(f"webhook URL refused: {exc}") from None
    body = json.dumps(alert_payload(alert), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": str(alert.uuid),
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: alert_signature(secret=secret, body=body, timestamp=int(time.time())),
    }
    answer = webhook_post(target, body, headers)
    if not 200 <= answer.status < 300:
        raise RuntimeError(f"the webhook answered {answer.status}")


def _lease() -> timedelta:
    # Longer than one attempt can take (an email and a webhook, each with its timeout), so a
    # second worker never delivers the same alert while the first is still at it.
    return timedelta(
        seconds=2 * float(settings.CAREFLOW_WEBHOOK_TIMEOUT) + float(settings.EMAIL_TIMEOUT) + 30
    )


def alert_deliver(*, alert_id: int) -> Alert | None:
    """Deliver one alert to what the clinic's settings name now: claim the attempt (a
    conditional UPDATE on `next_attempt_at`), email and post what is not delivered yet,
    record each outcome, and schedule the next attempt with backoff or give up after
    CAREFLOW_ALERT_MAX_ATTEMPTS. Never raises for a delivery failure. None when there was
    nothing to do (delivered, given up, or another worker holds the attempt)."""
    now = timezone.now()
    claimed = Alert.objects.filter(pk=alert_id, next_attempt_at__lte=now).update(
        next_attempt_at=now + _lease(), attempts=F("attempts") + 1
    )
    if not claimed:
        return None
    alert = Alert.objects.select_related("organization").get(pk=alert_id)
    wanted = AlertSettings.objects.filter(
        organization_id=alert.organization_id, enabled=True
    ).first()
    errors: list[str] = []
    email_left = webhook_left = False
    if wanted is None:
        errors.append("alerts were switched off before delivery")
    if wanted is not None and wanted.staff_emails and not alert.delivered_email:
        try:
            _email(alert, list(wanted.staff_emails))
            alert.delivered_email = True
        except Exception as exc:  # noqa: BLE001 — any backend's failure is recorded, retried
            logger.warning("alert %s: email failed (%s)", alert.pk, type(exc).__name__)
            errors.append(f"email: {type(exc).__name__}: {str(exc)[:200]}")
            email_left = True
    if wanted is not None and wanted.webhook_url and not alert.delivered_webhook:
        try:
            _webhook(alert, wanted.webhook_url, wanted.webhook_secret)
            alert.delivered_webhook = True
        except _Permanent as exc:
            errors.append(f"webhook: {exc}")
        except (HTTPError, OSError, RuntimeError) as exc:
            logger.warning("alert %s: webhook failed (%s)", alert.pk, type(exc).__name__)
            errors.append(
                f"webhook: {exc if isinstance(exc, RuntimeError) else type(exc).__name__}"
            )
            webhook_left = True
    alert.error = "; ".join(errors)
    if not (email_left or webhook_left):
        alert.next_attempt_at = None
    elif alert.attempts >= settings.CAREFLOW_ALERT_MAX_ATTEMPTS:
        alert.next_attempt_at = None
        alert.error = f"gave up after {alert.attempts} attempts: {alert.error}"
    else:
        alert.next_attempt_at = timezone.now() + retry_delay(alert.attempts)
    alert.save(update_fields=["delivered_email", "delivered_webhook", "error", "next_attempt_at"])
    return alert
