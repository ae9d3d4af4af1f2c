"""Admin login through the real login form: django-axes locks a username out from an address
after too many failures (a wrong one-time code counts), until the cool-off passes; a user
with an authenticator (django-otp TOTP) must give its current code, and with
CAREFLOW_SUPPORT_STAFF_REQUIRE_OTP support staff must have one."""

import time
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from patients.login import OTP_MISSING, OTP_NOT_SET_UP, OTP_WRONG
from patients.roles import CLINIC_ADMIN, SUPPORT_STAFF
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"
WRONG_PASSWORD_MESSAGE = "Please enter the correct username and password"


@pytest.fixture
def support() -> Any:
    user = UserFactory(username="sam-support", is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    user.groups.add(Group.objects.get(name=SUPPORT_STAFF))
    return user


def _login(
    username: str, password: str = PASSWORD, otp: str = "", address: str = "192.0.2.10"
) -> tuple[Client, Any]:
    client = Client(REMOTE_ADDR=address)
    response = client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "otp_token": otp, "next": "/admin/"},
    )
    return client, response


def _logged_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def _code(device: TOTPDevice, offset: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + offset
    return f"{totp.token():0{device.digits}d}"


# --- throttling ---------------------------------------------------------------------------


def test_the_login_page_asks_for_the_one_time_code() -> None:
    page = Client().get(reverse("admin:login")).content.decode()
    assert 'name="otp_token"' in page and 'autocomplete="one-time-code"' in page


def test_a_username_is_locked_out_from_an_address_after_too_many_failures_until_cool_off(
    support: Any, settings: Any
) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        _, response = _login(support.username, "wrong")
        assert response.status_code == 200
        assert WRONG_PASSWORD_MESSAGE in response.content.decode()
    _, response = _login(support.username, "wrong")
    assert response.status_code == 429
    text = response.content.decode()
    assert f"Too many failed logins ({limit})" in text
    assert "0:15:00" in text  # the cool-off

    # Locked: even the right password is refused from that address...
    _, response = _login(support.username)
    assert response.status_code == 429
    # ...but not from another address, nor for another username there.
    assert _logged_in(_login(support.username, address="198.51.100.7")[1])
    other = UserFactory(username="other", is_staff=True)
    other.set_password(PASSWORD)
    other.save()
    assert _logged_in(_login("other")[1])

    # After the cool-off (from the last attempt), the right password works again.
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=True):
        assert _logged_in(_login(support.username)[1])


def test_a_successful_login_clears_the_failures(support: Any, settings: Any) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(support.username, "wrong")
    assert _logged_in(_login(support.username)[1])
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(support.username, "wrong")[1].status_code == 200


# --- the second factor --------------------------------------------------------------------


@pytest.fixture
def device(support: Any) -> TOTPDevice:
    return TOTPDevice.objects.create(user=support, name="phone", confirmed=True)


def test_a_user_with_an_authenticator_logs_in_with_its_current_code(
    support: Any, device: TOTPDevice
) -> None:
    client, response = _login(support.username, otp=_code(device))
    assert _logged_in(response)
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize(
    ("otp", "message"),
    [("", OTP_MISSING), ("000000x", OTP_WRONG), ("not a code", OTP_WRONG), ("1" * 16, OTP_WRONG)],
)
def test_a_missing_or_malformed_code_is_refused(
    support: Any, device: TOTPDevice, otp: str, message: str
) -> None:
    client, response = _login(support.username, otp=otp)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert client.get("/admin/").status_code == 302  # not logged in


def test_a_wrong_code_is_refused_and_counts_toward_the_lockout(
    support: Any, device: TOTPDevice, settings: Any
) -> None:
    wrong = _code(device, offset=3600)  # a real code, an hour from now
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client, response = _login(support.username, otp=wrong)
        assert response.status_code == 200
        assert OTP_WRONG in response.content.decode()
        assert client.get("/admin/").status_code == 302
    assert _login(support.username, otp=wrong)[1].status_code == 429
    assert _login(support.username, otp=_code(device))[1].status_code == 429


def test_an_unconfirmed_device_asks_for_no_code(support: Any) -> None:
    TOTPDevice.objects.create(user=support, name="half set up", confirmed=False)
    assert _logged_in(_login(support.username)[1])


def test_support_staff_need_an_authenticator_when_the_setting_says_so(
    support: Any, settings: Any
) -> None:
    settings.CAREFLOW_SUPPORT_STAFF_REQUIRE_OTP = True
    _, response = _login(support.username)
    assert response.status_code == 200
    assert OTP_NOT_SET_UP in response.content.decode()
    # A clinic role is not asked.
    clinic_admin = UserFactory(username="cara-clinic", is_staff=True)
    clinic_admin.set_password(PASSWORD)
    clinic_admin.save()
    clinic_admin.groups.add(Group.objects.get(name=CLINIC_ADMIN))
    assert _logged_in(_login(clinic_admin.username)[1])
    # With an authenticator, support staff log in with its code.
    device = TOTPDevice.objects.create(user=support, name="phone", confirmed=True)
    assert _logged_in(_login(support.username, otp=_code(device))[1])
