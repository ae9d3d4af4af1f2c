from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from twilio.request_validator import RequestValidator

from integrations.models import InboundMessage, OutboundMessage
from integrations.sending import message_status_apply
from integrations.twilio.account import twilio_account
from patients.models import ConsentRecord
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

pytestmark = pytest.mark.django_db
Status = OutboundMessage.Status


@pytest.fixture
def message() -> OutboundMessage:
    integration = IntegrationFactory()
    return OutboundMessage.objects.create(
        organization=integration.organization,
        integration=integration,
        patient=PatientFactory(organization=integration.organization),
        idempotency_key="k1",
        purpose="transactional",
        to="+14155550123",
        from_number="+15005550006",
        body="hi",
        status=Status.SENT,
        provider_status="queued",
        provider_sid="SM" + "1" * 32,
    )


def _url(message: OutboundMessage) -> str:
    return reverse(
        "twilio-status-callback",
        kwargs={"integration_uuid": message.integration.uuid, "message_uuid": message.uuid},
    )


def _post(
    client: Client,
    message: OutboundMessage,
    params: dict[str, str],
    *,
    token: str | None = None,
    signature: str | None = None,
    **extra: Any,
) -> Any:
    url = _url(message)
    full = f"http://testserver{url}"
    if signature is None:
        signature = RequestValidator(
            token or twilio_account(message.integration).auth_token
        ).compute_signature(full, params)
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
    return client.post(url, params, **headers, **extra)


def _params(message: OutboundMessage, status: str, **more: str) -> dict[str, str]:
    return {
        "MessageSid": message.provider_sid or "",
        "MessageStatus": status,
        "AccountSid": twilio_account(message.integration).account_sid,
        **more,
    }


def test_signed_callback_moves_message_to_delivered(
    client: Client, message: OutboundMessage
) -> None:
    assert _post(client, message, _params(message, "delivered")).status_code == 204
    message.refresh_from_db()
    assert (message.status, message.provider_status) == (Status.DELIVERED, "delivered")
    assert message.delivered_at is not None


@pytest.mark.parametrize("case", ["wrong_token", "missing", "garbage"])
def test_forged_callbacks_get_403_and_change_nothing(
    client: Client, message: OutboundMessage, case: str
) -> None:
    params = _params(message, "delivered")
    kwargs = {
        "wrong_token": {"token": "f" * 32},
        "missing": {"signature": ""},
        "garbage": {"signature": "bm90IGEgc2lnbmF0dXJl"},
    }[case]
    assert _post(client, message, params, **kwargs).status_code == 403
    message.refresh_from_db()
    assert message.status == Status.SENT


def test_tampered_parameter_is_rejected(client: Client, message: OutboundMessage) -> None:
    url = _url(message)
    good = _params(message, "sent")
    signature = RequestValidator(twilio_account(message.integration).auth_token).compute_signature(
        f"http://testserver{url}", good
    )
    response = client.post(
        url, {**good, "MessageStatus": "delivered"}, HTTP_X_TWILIO_SIGNATURE=signature
    )
    assert response.status_code == 403
    message.refresh_from_db()
    assert message.provider_status == "queued"


def test_statuses_apply_monotonically(client: Client, message: OutboundMessage) -> None:
    for status in ("delivered", "sent", "queued", "sending"):
        _post(client, message, _params(message, status))
    message.refresh_from_db()
    assert (message.status, message.provider_status) == (Status.DELIVERED, "delivered")


def test_delivery_error_is_stored_with_an_explanation(
    client: Client, message: OutboundMessage
) -> None:
    _post(client, message, _params(message, "undelivered", ErrorCode="30003"))
    message.refresh_from_db()
    assert message.status == Status.UNDELIVERED
    assert message.error_code == "30003"
    assert "Unreachable handset" in message.error_message


def test_callback_for_another_integrations_message_is_404(
    client: Client, message: OutboundMessage
) -> None:
    other = IntegrationFactory()
    url = reverse(
        "twilio-status-callback",
        kwargs={"integration_uuid": other.uuid, "message_uuid": message.uuid},
    )
    params = _params(message, "delivered")
    signature = RequestValidator(twilio_account(other).auth_token).compute_signature(
        f"http://testserver{url}", params
    )
    assert client.post(url, params, HTTP_X_TWILIO_SIGNATURE=signature).status_code == 404
    message.refresh_from_db()
    assert message.status == Status.SENT


def test_behind_a_tls_proxy_the_public_https_url_is_checked(
    client: Client, message: OutboundMessage, settings: Any
) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.USE_X_FORWARDED_HOST = True
    settings.ALLOWED_HOSTS = ["careflow.example.com", "testserver"]
    url = _url(message)
    params = _params(message, "delivered")
    signature = RequestValidator(twilio_account(message.integration).auth_token).compute_signature(
        f"https://careflow.example.com{url}", params
    )
    response = client.post(
        url,
        params,
        HTTP_X_TWILIO_SIGNATURE=signature,
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_X_FORWARDED_HOST="careflow.example.com",
    )
    assert response.status_code == 204
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


def test_get_is_not_allowed(client: Client, message: OutboundMessage) -> None:
    assert client.get(_url(message)).status_code == 405


def test_a_replayed_callback_is_harmless(client: Client, message: OutboundMessage) -> None:
    params = _params(message, "delivered")
    for _ in range(3):
        assert _post(client, message, params).status_code == 204
    message.refresh_from_db()
    first_delivered_at = message.delivered_at
    assert _post(client, message, params).status_code == 204
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert message.delivered_at == first_delivered_at  # not re-applied


def _unconfirmed(message: OutboundMessage) -> OutboundMessage:
    """The message as a worker leaves it when it could not confirm Twilio's answer."""
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=Status.UNKNOWN, provider_status="", provider_sid=None
    )
    message.refresh_from_db()
    return message


def test_a_callback_for_an_unconfirmed_send_records_status_and_sid_in_one_statement(
    message: OutboundMessage,
) -> None:
    sid = "SM" + "2" * 32
    message = _unconfirmed(message)
    writes: list[str] = []

    def fail_after_the_first_write(execute: Any, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("UPDATE"):
            writes.append(sql)
            if len(writes) > 1:  # the connection drops after one statement
                raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, *args)

    with connection.execute_wrapper(fail_after_the_first_write):
        assert message_status_apply(message=message, provider_status="sent", sid=sid)
    message.refresh_from_db()
    assert (message.status, message.provider_status, message.provider_sid) == (
        Status.SENT,
        "sent",
        sid,
    )
    assert len(writes) == 1


def test_a_stale_callback_still_fills_in_a_missing_sid(message: OutboundMessage) -> None:
    sid = "SM" + "3" * 32
    message = _unconfirmed(message)
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=Status.DELIVERED, provider_status="delivered"
    )
    assert not message_status_apply(message=message, provider_status="sent", sid=sid)
    message.refresh_from_db()
    assert (message.status, message.provider_sid) == (Status.DELIVERED, sid)


def test_a_report_naming_another_sid_neither_replaces_it_nor_moves_the_message(
    message: OutboundMessage,
) -> None:
    known = message.provider_sid
    assert not message_status_apply(
        message=message, provider_status="delivered", sid="SM" + "4" * 32
    )
    message.refresh_from_db()
    assert (message.status, message.provider_sid) == (Status.SENT, known)


# --- a signed request must also be addressed to what its URL names ---------------------


def test_a_callback_naming_another_sid_changes_nothing(
    client: Client, message: OutboundMessage
) -> None:
    # Signed with the integration's own token: only the SID is wrong.
    params = _params(message, "undelivered", MessageSid="SM" + "9" * 32, ErrorCode="30003")
    response = _post(client, message, params)
    assert response.status_code == 400
    assert b"MessageSid" in response.content
    message.refresh_from_db()
    assert (message.status, message.provider_status, message.error_code) == (
        Status.SENT,
        "queued",
        "",
    )


def test_a_callback_naming_another_account_changes_nothing(
    client: Client, message: OutboundMessage
) -> None:
    params = _params(message, "delivered", AccountSid="AC" + "e" * 32)
    response = _post(client, message, params)
    assert response.status_code == 400
    assert b"AccountSid" in response.content
    message.refresh_from_db()
    assert message.status == Status.SENT


def test_the_account_sid_is_compared_without_case(client: Client, message: OutboundMessage) -> None:
    params = _params(
        message, "delivered", AccountSid=twilio_account(message.integration).account_sid.upper()
    )
    assert _post(client, message, params).status_code == 204
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


def test_a_callback_is_the_first_to_tell_an_unconfirmed_message_its_sid(
    client: Client, message: OutboundMessage
) -> None:
    message = _unconfirmed(message)
    sid = "SM" + "5" * 32
    assert (
        _post(client, message, {**_params(message, "sent"), "MessageSid": sid}).status_code == 204
    )
    message.refresh_from_db()
    assert (message.status, message.provider_sid) == (Status.SENT, sid)


def test_an_unconfirmed_message_does_not_take_a_sid_another_message_holds(
    client: Client, message: OutboundMessage
) -> None:
    other_sid = message.provider_sid
    assert other_sid
    unconfirmed = OutboundMessage.objects.create(
        organization=message.organization,
        integration=message.integration,
        idempotency_key="k2",
        purpose="transactional",
        to="+14155550124",
        from_number="+15005550006",
        body="hello",
        status=Status.UNKNOWN,
    )
    params = {**_params(message, "delivered"), "MessageSid": other_sid}
    response = _post(client, unconfirmed, params)
    assert response.status_code == 400
    unconfirmed.refresh_from_db()
    message.refresh_from_db()
    assert (unconfirmed.status, unconfirmed.provider_sid) == (Status.UNKNOWN, None)
    assert message.status == Status.SENT
    # and the service refuses it too, whoever calls it (the unique column would raise)
    assert not message_status_apply(message=unconfirmed, provider_status="sent", sid=other_sid)
    unconfirmed.refresh_from_db()
    assert unconfirmed.provider_sid is None


@pytest.mark.parametrize(
    "override",
    [
        {"MessageSid": ""},
        {"MessageSid": "SM" + "1" * 200},
        {"MessageSid": "not a sid"},
        {"ErrorCode": "3" * 40},
        {"ErrorCode": "abc"},
    ],
)
def test_malformed_signed_callbacks_are_a_clear_400_not_a_500(
    client: Client, message: OutboundMessage, override: dict[str, str]
) -> None:
    response = _post(client, message, {**_params(message, "undelivered"), **override})
    assert response.status_code == 400
    message.refresh_from_db()
    assert message.status == Status.SENT


def _inbound(client: Client, integration: Any, **override: str) -> Any:
    url = reverse("twilio-inbound-sms", kwargs={"integration_uuid": integration.uuid})
    params = {
        "MessageSid": "SM" + "c" * 32,
        "AccountSid": twilio_account(integration).account_sid,
        "From": "+14155550123",
        "To": integration.senders[0],
        "Body": "STOP",
        **override,
    }
    signature = RequestValidator(twilio_account(integration).auth_token).compute_signature(
        f"http://testserver{url}", params
    )
    return client.post(url, params, HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ({"AccountSid": "AC" + "e" * 32}, b"AccountSid"),
        ({"AccountSid": ""}, b"AccountSid"),
        ({"To": "+14155550199"}, b"To"),
        ({"To": "not a number"}, b"To"),
        ({"MessagingServiceSid": "MG" + "d" * 32, "To": "+14155550199"}, b"To"),
        ({"MessageSid": "SM" + "c" * 200}, b"MessageSid"),
        ({"From": "+1" * 40}, b"From"),
    ],
)
def test_a_signed_inbound_sms_not_addressed_to_the_integration_changes_nothing(
    client: Client, override: dict[str, str], said: bytes
) -> None:
    integration = IntegrationFactory()
    patient = PatientFactory(organization=integration.organization, phone="+14155550123")
    ConsentFactory(patient=patient)
    response = _inbound(client, integration, **override)
    assert response.status_code == 400
    assert said in response.content
    assert not InboundMessage.objects.exists()
    assert not ConsentRecord.objects.filter(patient=patient, action="opt_out").exists()


def test_an_inbound_sms_through_the_integrations_messaging_service_is_accepted(
    client: Client,
) -> None:
    service = "MG" + "d" * 32
    integration = IntegrationFactory(messaging_service_sid=service)
    # The service chose one of its own numbers, not listed on the integration.
    response = _inbound(client, integration, To="+14155550199", MessagingServiceSid=service)
    assert response.status_code == 200
    assert InboundMessage.objects.get().action == InboundMessage.Action.OPT_OUT
    other = _inbound(
        client,
        integration,
        MessageSid="SM" + "f" * 32,
        To="+14155550199",
        MessagingServiceSid="MG" + "e" * 32,
    )
    assert other.status_code == 400


def test_acceptance_first_told_by_a_callback_is_dated_when_it_arrived(
    client: Client, message: OutboundMessage
) -> None:
    """A callback carries no timestamp: the time it was received is the best we know."""
    message = _unconfirmed(message)
    OutboundMessage.objects.filter(pk=message.pk).update(sent_at=None)
    sid = "SM" + "6" * 32
    before = timezone.now()
    assert (
        _post(client, message, {**_params(message, "sent"), "MessageSid": sid}).status_code == 204
    )
    message.refresh_from_db()
    assert message.sent_at is not None and before <= message.sent_at <= timezone.now()
    # a later report does not move it
    first = message.sent_at
    assert (
        _post(client, message, {**_params(message, "delivered"), "MessageSid": sid}).status_code
        == 204
    )
    message.refresh_from_db()
    assert (message.status, message.sent_at) == (Status.DELIVERED, first)
