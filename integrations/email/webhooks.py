"""Postmark's delivery, bounce and spam-complaint webhooks, one endpoint per integration.

Postmark's only webhook security is HTTP basic auth in the URL it posts to: each integration
has its own secret (`email_account(...).webhook_auth`), compared in constant time; no
credentials get 401, wrong ones 403, and neither changes anything. The events are parsed by
anymail's own Postmark tracking parser, so their meaning (a "SoftBounce" is a bounce, a
"SpamNotification" a complaint, …) is anymail's, not a second reading of Postmark's docs.

An event names its message by the Metadata careflow sent ({"careflow_message": uuid}); it
must be one of this integration's messages, and when the message already has Postmark's
MessageID, the event must carry the same (an authenticated but mismatched report changes
nothing). Statuses go through the core's `message_status_apply`, which only ever moves a
message forward, so repeated and out-of-order webhooks are harmless. A hard bounce or a spam
complaint records an email opt-out for every purpose, once per event.
"""

import json
import logging
import uuid

from anymail.exceptions import AnymailConfigurationError, AnymailError
from anymail.signals import AnymailTrackingEvent, EventType
from anymail.utils import get_request_basic_auth
from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrations.email.account import email_account
from integrations.email.transport import METADATA_KEY, STATUS_MAP
from integrations.models import Integration, OutboundMessage
from integrations.sending import message_status_apply
from patients.models import ConsentRecord, Patient

logger = logging.getLogger(__name__)

ADAPTER = "email"
# Bounce types after which the address will never take mail: the patient cannot be emailed.
OPT_OUT_TYPES = frozenset({"HardBounce", "SpamComplaint", "SpamNotification"})
MAX_ERROR_CODE = 16  # OutboundMessage.error_code's length


def _unauthorized() -> HttpResponse:
    response = HttpResponse("authentication required", status=401)
    response["WWW-Authenticate"] = 'Basic realm="careflow email events"'
    return response


def _parse(request: HttpRequest, webhook_auth: str) -> AnymailTrackingEvent | None:
    """The event in the request body, read by anymail's Postmark parser; None if unreadable."""
    try:
        payload = json.loads(request.body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    try:
        return PostmarkTrackingWebhookView(webhook_secret=webhook_auth).esp_to_anymail_event(
            payload
        )
    except (AnymailError, AnymailConfigurationError, ValueError, TypeError, KeyError):
        return None


def provider_status(event: AnymailTrackingEvent) -> str:
    """Our status word for an event: anymail's event type, except that a soft bounce (which
    Postmark keeps retrying) only defers the message."""
    esp_type = (event.esp_event or {}).get("Type")
    if event.event_type == EventType.BOUNCED and esp_type == "SoftBounce":
        return str(EventType.DEFERRED)
    return str(event.event_type)


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
        return "MessageID is not this message's"
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
    expected = email_account(integration).webhook_auth
    given = get_request_basic_auth(request)
    if not given:  # none, or not decodable
        return _unauthorized()
    if not expected or not constant_time_compare(given, expected):
        logger.warning(
            "rejected email webhook with wrong credentials for integration %s", integration.pk
        )
        return HttpResponseForbidden("invalid credentials")
    event = _parse(request, expected)
    if event is None:
        return HttpResponseBadRequest("not a Postmark tracking event")
    status = provider_status(event)
    message = _message(integration, event)
    if message is None:
        # Not one of ours (another sender on the same Postmark server): acknowledged, or
        # Postmark would retry it for hours.
        logger.info("email webhook names no message of integration %s", integration.pk)
        return HttpResponse("ignored: no such message")
    refused = _mismatch(message, event)
    if refused:
        logger.warning("email webhook for message %s refused: %s", message.pk, refused)
        return HttpResponse(f"ignored: {refused}")
    if status not in STATUS_MAP:
        return HttpResponse(f"ignored: {status}")
    esp_type = str((event.esp_event or {}).get("Type") or "")
    error_code = esp_type[:MAX_ERROR_CODE] if status in ("bounced", "rejected", "failed") else ""
    # Postmark's MessageID goes with the status: for a send whose answer was lost ("unknown",
    # no id yet) the event is the proof of acceptance, and the id must not stay missing.
    changed = message_status_apply(
        message=message,
        provider_status=status,
        sid=str(event.message_id or ""),
        error_code=error_code,
    )
    if esp_type in OPT_OUT_TYPES or status == EventType.COMPLAINED:
        _record_opt_out(message, esp_type or "SpamComplaint", event)
    return HttpResponse("ok" if changed else "ok: no change")
