"""Twilio webhooks. Every request must carry a valid X-Twilio-Signature made with the
integration's own Auth Token; anything else gets 403 and changes nothing."""

import logging

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from integrations.keywords import inbound_sms_receive
from integrations.models import Integration, OutboundMessage
from integrations.sending import message_status_apply
from patients.phones import phone_to_e164

logger = logging.getLogger(__name__)


def _signature_valid(request: HttpRequest, integration: Integration) -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    # build_absolute_uri honours SECURE_PROXY_SSL_HEADER / USE_X_FORWARDED_HOST, so behind a
    # TLS proxy we check against the public https:// URL Twilio actually signed.
    url = request.build_absolute_uri()
    return RequestValidator(integration.auth_token).validate(url, request.POST, signature)


@csrf_exempt
@require_POST
def twilio_status_callback(
    request: HttpRequest, integration_uuid: str, message_uuid: str
) -> HttpResponse:
    integration = get_object_or_404(Integration, uuid=integration_uuid)
    if not _signature_valid(request, integration):
        logger.warning(
            "rejected unsigned or mis-signed status callback for integration %s", integration.pk
        )
        return HttpResponseForbidden("invalid signature")
    message = get_object_or_404(OutboundMessage, uuid=message_uuid, integration=integration)
    message_status_apply(
        message=message,
        provider_status=request.POST.get("MessageStatus", ""),
        sid=request.POST.get("MessageSid", ""),
        error_code=request.POST.get("ErrorCode", ""),
    )
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def twilio_inbound_sms(request: HttpRequest, integration_uuid: str) -> HttpResponse:
    """An SMS a patient sent to the clinic's number: keywords, review flags, the event."""
    integration = get_object_or_404(Integration, uuid=integration_uuid)
    if not _signature_valid(request, integration):
        logger.warning(
            "rejected unsigned or mis-signed inbound SMS for integration %s", integration.pk
        )
        return HttpResponseForbidden("invalid signature")
    sid = request.POST.get("MessageSid") or request.POST.get("SmsSid") or ""
    raw_from = request.POST.get("From", "")
    if not sid or not raw_from:
        return HttpResponseBadRequest("MessageSid and From are required")
    try:
        from_ = phone_to_e164(raw_from)
    except ValidationError:
        from_ = raw_from  # a short code or alphanumeric sender: kept as given
    result = inbound_sms_receive(
        integration=integration,
        sid=sid,
        from_=from_,
        to=request.POST.get("To", ""),
        body=request.POST.get("Body", ""),
    )
    response = MessagingResponse()
    if result.reply:
        response.message(result.reply)
    return HttpResponse(str(response), content_type="application/xml")
