"""Email's webhook URLs, included under the project's webhooks/ prefix."""

from django.urls import path

from integrations.email import webhooks

urlpatterns = [
    path(
        "<uuid:integration_uuid>/events/",
        webhooks.email_events,
        name="email-events",
    ),
]
