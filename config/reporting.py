"""Error reports that never show a secret, whether DEBUG is on or off."""

from typing import Any

from django.views.debug import SafeExceptionReporterFilter


class SecretsHiddenExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, on under DEBUG too.

    Django hides `sensitive_post_parameters` and `sensitive_variables` only when DEBUG is off
    ("with DEBUG on your site is not safe anyway"). A clinic's Twilio Auth Token is posted by
    the integration form and passes through our frames while it is encrypted: a DEBUG error
    page on a shared staging server, or a screenshot of one, must not carry it either.
    """

    def is_active(self, request: Any) -> bool:
        return True
