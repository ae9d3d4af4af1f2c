"""Each provider's webhooks, under its own prefix: one line per provider."""

from django.urls import include, path

urlpatterns = [
    path("twilio/", include("integrations.twilio.urls")),
    path("email/", include("integrations.email.urls")),
]
