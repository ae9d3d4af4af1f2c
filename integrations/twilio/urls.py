from django.urls import path

from integrations.twilio import webhooks

urlpatterns = [
    path(
        "<uuid:integration_uuid>/inbound/",
        webhooks.twilio_inbound_sms,
        name="twilio-inbound-sms",
    ),
    path(
        "<uuid:integration_uuid>/status/<uuid:message_uuid>/",
        webhooks.twilio_status_callback,
        name="twilio-status-callback",
    ),
]
