"""Logging in to the admin: throttled by django-axes, and a second factor (a one-time code
from an authenticator app, django-otp's TOTP devices) for whoever has one.

A user with a confirmed authenticator must give its current code with their password. With
`CAREFLOW_SUPPORT_STAFF_REQUIRE_OTP` on, support staff and superusers (who see every
clinic) cannot log in without one. A wrong code counts as a failed login for the throttle,
as a wrong password does: otherwise a known password would leave the six digits open to
guessing.
"""

from typing import Any

from axes.backends import AxesStandaloneBackend
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django_otp import match_token, user_has_device

from patients.tenancy import sees_all_organizations

OTP_MISSING = "Enter the one-time code from your authenticator app."
OTP_WRONG = "That one-time code is wrong or has expired. Enter the current one."
OTP_NOT_SET_UP = (
    "Your role needs a one-time code to log in, and no authenticator is set up for you: "
    "ask a superuser to add a TOTP device for your account."
)


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' gate in front of ModelBackend: a locked-out username and address pair is
    refused before its password is checked.

    Axes refuses any authentication without a request; code that authenticates outside an
    HTTP request (the test client's `login()`, a shell) has nothing to throttle, so it is
    left to the backends after this one instead of failing."""

    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, *args: Any, **kwargs: Any
    ) -> Any:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)


def otp_required(user: Any) -> bool:
    """Whether this user must give a one-time code at login."""
    if user_has_device(user, confirmed=True):
        return True
    return bool(settings.CAREFLOW_SUPPORT_STAFF_REQUIRE_OTP and sees_all_organizations(user))


class AdminLoginForm(AdminAuthenticationForm):
    """The admin's login form with an optional one-time code, checked only for users who
    need one (`otp_required`); everyone else logs in with their password as before."""

    otp_token = forms.CharField(
        label="One-time code",
        required=False,
        max_length=16,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "size": 8}
        ),
        help_text="From your authenticator app, if one is set up for you.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()  # the password (throttled by axes), active, staff
        user = self.get_user()
        if user is None or not otp_required(user):
            return cleaned
        token = cleaned.get("otp_token") or ""
        if not user_has_device(user, confirmed=True):
            self._refuse(OTP_NOT_SET_UP, "otp_not_set_up")
        if not token:
            self._refuse(OTP_MISSING, "otp_missing")
        device = match_token(user, token) if token.isdigit() else None
        if device is None:
            self._refuse(OTP_WRONG, "otp_wrong")
        # django-otp marks the session verified with this device at login (user_logged_in).
        user.otp_device = device  # type: ignore[attr-defined]
        return cleaned

    def _refuse(self, message: str, code: str) -> None:
        self.user_cache = None
        # Counted by axes (and its lockout) like a wrong password: the code can't be guessed
        # at leisure, nor the password confirmed by this answer more often than guessed.
        user_login_failed.send(
            sender=__name__,
            credentials={"username": self.cleaned_data.get("username", "")},
            request=self.request,
        )
        raise ValidationError(message, code=code)
