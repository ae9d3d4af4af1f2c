"""The Twilio Auth Token is stored as ciphertext and shown nowhere: not in `str`/`repr`, the
admin's history (LogEntry), the audit trail, error pages or logs, for any user, the superuser
included; nor the custom-event webhook's bearer token on an error report. (Every admin page
of every role is walked for both in tests/admin/test_roles.py.)"""

import json
import logging
import sys
from typing import Any

import pytest
from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.core.signals import got_request_exception
from django.db import connection
from django.http import HttpRequest
from django.test import Client
from django.urls import reverse
from django.views.debug import ExceptionReporter

from integrations.admin import IntegrationAdmin
from integrations.models import Integration
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import AuditEntry
from patients.roles import SUPPORT_STAFF
from patients.services import organization_webhook_token_issue
from tests.conftest import sandbox_account
from tests.factories import IntegrationFactory, OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db

OLD_TOKEN = "0ld70ken0ld70ken0ld70ken0ld70ken"
NEW_TOKEN = "new70kennew70kennew70kennew70ken"


def _column(integration: Integration) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secrets FROM integrations_integration WHERE id = %s", [integration.pk]
        )
        return str(cursor.fetchone()[0])


def _form(integration: Integration, **overrides: str) -> dict[str, Any]:
    return {
        "organization": integration.organization_id,
        "name": integration.name,
        "adapter": "twilio",
        "account_sid": twilio_account(integration).account_sid,
        "auth_token": NEW_TOKEN,
        "sending_numbers": "\n".join(integration.senders),
        "sender_type": "auto",
        "segments_per_second": "",
        "messaging_service_sid": "",
        "enabled": "on",
        **overrides,
    }


@pytest.fixture(params=["superuser", "support"])
def editor(request: pytest.FixtureRequest) -> Client:
    """A user who may change integrations: the superuser, and support staff."""
    if request.param == "superuser":
        user = UserFactory(is_superuser=True)
    else:
        user = UserFactory()
        user.groups.add(Group.objects.get(name=SUPPORT_STAFF))
    client = Client()
    client.force_login(user)
    return client


def test_the_database_column_holds_only_ciphertext_the_keys_decrypt() -> None:
    integration = IntegrationFactory(auth_token=OLD_TOKEN)
    stored = _column(integration)
    assert OLD_TOKEN not in stored
    keys = MultiFernet([Fernet(key) for key in settings.CAREFLOW_ENCRYPTION_KEYS])
    assert json.loads(keys.decrypt(stored.encode()).decode()) == {"auth_token": OLD_TOKEN}
    Integration.objects.filter(pk=integration.pk).update(secrets={"auth_token": NEW_TOKEN})
    assert NEW_TOKEN not in _column(integration)
    assert twilio_account(Integration.objects.get(pk=integration.pk)).auth_token == NEW_TOKEN


def test_str_and_repr_of_an_integration_name_no_token() -> None:
    integration = IntegrationFactory(auth_token=OLD_TOKEN)
    for text in (str(integration), repr(integration), repr(Integration.objects.all())):
        assert OLD_TOKEN not in text


def test_changing_the_token_leaves_no_plaintext_in_history_audit_trail_or_logs(
    editor: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    integration = IntegrationFactory(auth_token=OLD_TOKEN)
    response = editor.post(
        reverse("admin:integrations_integration_change", args=[integration.pk]),
        _form(integration),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    integration.refresh_from_db()
    assert twilio_account(integration).auth_token == NEW_TOKEN
    assert NEW_TOKEN not in _column(integration)

    # The admin's history says that the token changed, never what to.
    entry = LogEntry.objects.get(object_id=str(integration.pk))
    assert "Auth Token" in entry.get_change_message()
    audit = AuditEntry.objects.filter(model="integrations.Integration", object_id=integration.pk)
    assert audit.filter(action="updated").exists()
    pages = [
        editor.get(
            reverse("admin:integrations_integration_history", args=[integration.pk])
        ).content,
        editor.get(reverse("admin:patients_auditentry_changelist")).content,
        *(
            editor.get(reverse("admin:patients_auditentry_change", args=[a.pk])).content
            for a in audit
        ),
    ]
    stored = [
        entry.change_message,
        str(entry),
        repr(list(audit.values())),
        caplog.text,
        *(page.decode() for page in pages),
    ]
    for text in stored:
        assert OLD_TOKEN not in text
        assert NEW_TOKEN not in text


def test_checking_credentials_logs_no_token(
    editor: Client, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # twilio-python logs its requests at INFO
    integration = sandbox_account(sandbox, IntegrationFactory(auth_token=OLD_TOKEN))
    response = editor.post(
        reverse("admin:integrations_integration_changelist"),
        {"action": "check_credentials", "_selected_action": [integration.pk]},
        follow=True,
    )
    assert "credentials accepted" in response.content.decode()
    assert OLD_TOKEN not in caplog.text
    assert OLD_TOKEN not in response.content.decode()


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("where", ["save_model", "encryption"])
def test_an_error_page_or_report_shows_no_token(
    editor: Client, settings: Any, monkeypatch: pytest.MonkeyPatch, where: str, debug: bool
) -> None:
    """DEBUG's error page, and the report of an error without it (what AdminEmailHandler
    mails), list the POST data and every frame's local variables."""
    settings.DEBUG = debug
    integration = IntegrationFactory(auth_token=OLD_TOKEN)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated failure")

    if where == "save_model":
        monkeypatch.setattr(IntegrationAdmin, "save_model", fail)
    else:
        monkeypatch.setattr("integrations.encryption.fernet", fail)
    failures: list[tuple[HttpRequest, Any]] = []

    def remember(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
        failures.append((request, sys.exc_info()))

    got_request_exception.connect(remember)
    editor.raise_request_exception = False
    try:
        response = editor.post(
            reverse("admin:integrations_integration_change", args=[integration.pk]),
            _form(integration),
            HTTP_ACCEPT="text/html",
        )
    finally:
        got_request_exception.disconnect(remember)
    assert response.status_code == 500
    assert failures
    request, exc_info = failures[0]
    reporter = ExceptionReporter(request, *exc_info, is_email=True)
    texts = [
        response.content.decode(),
        reporter.get_traceback_html(),
        reporter.get_traceback_text(),
    ]
    if debug:
        assert "simulated failure" in texts[0]  # the technical page, with its frames
    assert "auth_token" in texts[1] and "simulated failure" in texts[1]
    for text in texts:
        assert NEW_TOKEN not in text
        assert OLD_TOKEN not in text


@pytest.mark.parametrize("debug", [True, False])
def test_an_error_in_the_custom_event_webhook_reports_no_bearer_token(
    settings: Any, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    settings.DEBUG = debug
    organization = OrganizationFactory()
    token = organization_webhook_token_issue(organization=organization)

    def fail(document: Any) -> Any:
        raise RuntimeError("simulated failure")

    # After the token is checked, while the body is read (a database outage would do).
    monkeypatch.setattr("integrations.inbound._parse", fail)
    failures: list[tuple[HttpRequest, Any]] = []

    def remember(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
        failures.append((request, sys.exc_info()))

    got_request_exception.connect(remember)
    client = Client(raise_request_exception=False)
    try:
        response = client.post(
            reverse("webhook-custom-event", args=[organization.uuid]),
            data="{}",
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
            HTTP_ACCEPT="text/html",
        )
    finally:
        got_request_exception.disconnect(remember)
    assert response.status_code == 500
    request, exc_info = failures[0]
    reporter = ExceptionReporter(request, *exc_info, is_email=True)
    html = reporter.get_traceback_html()
    assert "simulated failure" in html and "custom_event" in html
    for text in (response.content.decode(), html, reporter.get_traceback_text()):
        assert token not in text
