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

from integrations.models import Integration, OutboundMessage
from integrations.sending import message_status_apply
from integrations.twilio.account import twilio_account
from integrations.twilio.keywords import inbound_sms_receive
from integrations.twilio.transport import MESSAGE_SID, message_sid_mismatch
from patients.phones import phone_to_e164

logger = logging.getLogger(__name__)

# InboundMessage.from_number's length: an E.164 number, short code or alphanumeric sender.
MAX_SENDER_CHARS = 32


def _signature_valid(request: HttpRequest, integration: Integration) -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    # build_absolute_uri honours SECURE_PROXY_SSL_HEADER / USE_X_FORWARDED_HOST, so behind a
    # TLS proxy we check against the public https:// URL Twilio actually signed.
    url = request.build_absolute_uri()
    auth_token = twilio_account(integration).auth_token
    return RequestValidator(auth_token).validate(url, request.POST, signature)


def _account_mismatch(request: HttpRequest, integration: Integration) -> str | None:
    """Why a correctly signed request was not meant for this integration, if it was not.

    A signature only proves the sender knows the Auth Token; two integrations may share one
    (a clinic's subaccounts, a token pasted twice), so the account the request names must be
    the integration's own. Twilio prints SIDs in either case of hex: compared without case.
    """
    account_sid = request.POST.get("AccountSid", "")
    if account_sid.lower() != twilio_account(integration).account_sid.lower():
        return "AccountSid does not match this integration"
    return None


def _number_mismatch(request: HttpRequest, integration: Integration) -> str | None:
    """Why an inbound SMS was not sent to one of this integration's senders, if it was not:
    a reply to another number is not a reply to this clinic (and its STOP not for it)."""
    service_sid = request.POST.get("MessagingServiceSid", "")
    own_service_sid = twilio_account(integration).messaging_service_sid
    if service_sid and own_service_sid:
        # The service picks among its own numbers, which need not be listed here.
        if service_sid.lower() == own_service_sid.lower():
            return None
        return "MessagingServiceSid does not match this integration"
    try:
        to = phone_to_e164(request.POST.get("To", ""))
    except ValidationError:
        return "To is not one of this integration's numbers"
    if to not in integration.senders:
        return "To is not one of this integration's numbers"
    return None


def _sender(request: HttpRequest) -> str:
    """The number the callback says sent the message (a Messaging Service picks it), in
    E.164 when it is a phone number; "" when absent or not in Twilio's format."""
    raw_from = request.POST.get("From", "")
    if not raw_from or len(raw_from) > MAX_SENDER_CHARS or not raw_from.isprintable():
        return ""
    return _as_sender(raw_from)


def _as_sender(raw_from: str) -> str:
    try:
        return phone_to_e164(raw_from)
    except ValidationError:
        return raw_from  # a short code or alphanumeric sender: kept as given


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
    message.integration = integration  # read once: the status service asks for its adapter
    error_code = request.POST.get("ErrorCode", "")
    refused = _account_mismatch(request, integration) or message_sid_mismatch(
        message=message, sid=request.POST.get("MessageSid", "")
    )
    if (
        not refused
        and error_code
        and not (error_code.isascii() and error_code.isdigit() and len(error_code) <= 16)
    ):
        refused = "ErrorCode is not a Twilio error code"
    if refused:
        logger.warning("refused status callback for message %s: %s", message.pk, refused)
        return HttpResponseBadRequest(refused)
    message_status_apply(
        message=message,
        provider_status=request.POST.get("MessageStatus", ""),
        sid=request.POST.get("MessageSid", ""),
        error_code=error_code,
        sender=_sender(request),
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
    if not MESSAGE_SID.match(sid) or len(raw_from) > MAX_SENDER_CHARS:
        # Signed, yet not what Twilio sends: refused before it reaches a column too short.
        return HttpResponseBadRequest("MessageSid or From is not in Twilio's format")
    refused = _account_mismatch(request, integration) or _number_mismatch(request, integration)
    if refused:
        logger.warning("refused inbound SMS for integration %s: %s", integration.pk, refused)
        return HttpResponseBadRequest(refused)
    from_ = _as_sender(raw_from)
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
