"""Email's delivery, bounce and complaint webhooks, one endpoint per integration, for any
ESP: how a request authenticates, what its event says and which events make an address
unmailable are the integration's ESP's (`integrations.email.esps`), read by anymail's own
tracking parser for that ESP, so their meaning is anymail's, not a second reading of the
ESP's docs. A request that does not authenticate changes nothing.

An event names its message by the metadata careflow sent ({"careflow_message": uuid}); it
must be one of this integration's messages, and when the message already has the ESP's
message id, the event must carry the same (an authenticated but mismatched report changes
nothing). Statuses go through the core's `message_status_apply`, which only ever moves a
message forward, so repeated and out-of-order webhooks are harmless. A permanent failure
or a complaint records an email opt-out for every purpose, once per event.
"""

import logging
import uuid

from anymail.signals import AnymailTrackingEvent
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrations.email.account import EmailAccount, email_account
from integrations.email.esps import esp_get
from integrations.email.esps.base import Esp
from integrations.email.transport import METADATA_KEY, STATUS_MAP
from integrations.models import Integration, OutboundMessage
from integrations.sending import message_status_apply
from patients.models import ConsentRecord, Patient

logger = logging.getLogger(__name__)

ADAPTER = "email"


def _message(integration: Integration, event: AnymailTrackingEvent) -> OutboundMessage | None:
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    try:
        message_uuid = uuid.UUID(str(metadata.get(METADATA_KEY, "")))
    except ValueError:
        return None
    return (
        OutboundMessage.objects.filter(uuid=message_uuid, integration=integration)
        .select_related("patient")
        .first()
    )


def _mismatch(message: OutboundMessage, event: AnymailTrackingEvent) -> str:
    """Why an authenticated event is not about `message`, or ""."""
    if message.provider_sid and event.message_id and str(event.message_id) != message.provider_sid:
        return "the message id is not this message's"
    recipient = str(event.recipient or "")
    if recipient and recipient.strip().lower() != message.to.strip().lower():
        return "the recipient is not this message's"
    return ""


def _record_opt_out(message: OutboundMessage, esp_type: str, event: AnymailTrackingEvent) -> int:
    """Record an email opt-out for every purpose, unless this event already did."""
    if message.patient_id is None:
        return 0
    evidence = {
        "event": esp_type,
        "message": str(message.uuid),
        "event_id": str(event.event_id or ""),
    }
    occurred_at = event.timestamp
    if occurred_at is None or timezone.is_naive(occurred_at):
        occurred_at = timezone.now()
    with transaction.atomic():
        # The patient's row lock makes a repeated webhook arriving at once record nothing.
        Patient.objects.select_for_update().filter(pk=message.patient_id).first()
        already = ConsentRecord.objects.filter(
            patient_id=message.patient_id,
            channel=ConsentRecord.Channel.EMAIL,
            evidence__event=esp_type,
            evidence__message=str(message.uuid),
        ).exists()
        if already:
            return 0
        for purpose in ConsentRecord.Purpose.values:
            ConsentRecord.objects.create(
                patient_id=message.patient_id,
                channel=ConsentRecord.Channel.EMAIL,
                purpose=purpose,
                action=ConsentRecord.Action.OPT_OUT,
                source=ConsentRecord.Source.PROVIDER_EVENT,
                evidence=evidence,
                occurred_at=occurred_at,
            )
    return len(ConsentRecord.Purpose.values)


@csrf_exempt
@require_POST
def email_events(request: HttpRequest, integration_uuid: uuid.UUID) -> HttpResponse:
    integration = Integration.objects.filter(uuid=integration_uuid, adapter=ADAPTER).first()
    if integration is None:
        return HttpResponse("no such integration", status=404)
    account = email_account(integration)
    esp = esp_get(account.esp)
    if esp is None:
        return HttpResponse("no such email provider", status=404)
    refused_auth = esp.webhook_refusal(request, integration, account)
    if refused_auth is not None:
        return refused_auth
    try:
        return _event_apply(request, integration, account, esp)
    except BaseException:
        esp.webhook_failed(request, integration)
        raise


def _event_apply(
    request: HttpRequest, integration: Integration, account: EmailAccount, esp: Esp
) -> HttpResponse:
    """Apply an authenticated webhook's event to its message."""
    event = esp.tracking_event(request, account)
    if event is None:
        return HttpResponseBadRequest(f"not a {esp.label} tracking event")
    status = esp.provider_status(event)
    message = _message(integration, event)
    if message is None:
        # Not one of ours (another sender on the same ESP account): acknowledged, or the
        # ESP would retry it for hours.
        logger.info("email webhook names no message of integration %s", integration.pk)
        return HttpResponse("ignored: no such message")
    refused = _mismatch(message, event)
    if refused:
        logger.warning("email webhook for message %s refused: %s", message.pk, refused)
        return HttpResponse(f"ignored: {refused}")
    if status not in STATUS_MAP:
        return HttpResponse(f"ignored: {status}")
    error_code = esp.event_error_code(event) if status in ("bounced", "rejected", "failed") else ""
    # The ESP's message id goes with the status: for a send whose answer was lost
    # ("unknown", no id yet) the event is the proof of acceptance, and the id must not stay
    # missing.
    changed = message_status_apply(
        message=message,
        provider_status=status,
        sid=str(event.message_id or ""),
        error_code=error_code,
    )
    opt_out = esp.opt_out(event)
    if opt_out:
        _record_opt_out(message, opt_out, event)
    return HttpResponse("ok" if changed else "ok: no change")
