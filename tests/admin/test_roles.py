"""Who may open what in the admin: every admin URL, walked for every role, against what this
file says each role may do — written here as data, not asked of the admin's own permission
checks — and no page of any role ever shows a secret.

The URLs are found, not listed: every registered ModelAdmin's views and the extra ones its
`get_urls()` adds, the admin site's own views, the autocompletes, and every other page the
project mounts under /admin/. A URL this file has no expectation for fails the test, so no
page reaches the admin without someone deciding who may open it.

What a status means here:
  200, 403, 404, 405   as answered;
  "→login"             a redirect to the admin login (not logged in);
  "→index"             a redirect to the admin index: the admin's "does not exist" for
                       another clinic's object on its own views (change, history, delete);
  "→change"            a redirect to an object's change page;
  "acts"               a POST endpoint did its work or refused the input (2xx, 3xx other than
                       the two above, 400): anything but a refusal of access.
Another clinic's object is never shown: Django's own views answer "→index" once the role has
the permission (403 before that: change and delete check the permission first, history
checks existence first), and our endpoints answer 404, as if it did not exist.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import ModelAdmin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import connection, models
from django.http import HttpResponseBase
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RoutePattern
from django.utils import timezone
from django_celery_results.models import GroupResult, TaskResult
from django_otp.plugins.otp_totp.models import TOTPDevice

from integrations.api.keys import api_key_issue
from integrations.forms import INTEGRATION_FORMS
from integrations.models import Alert, AlertSettings, Broadcast, InboundMessage, OutboundMessage
from patients.models import AuditEntry
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from patients.services import organization_webhook_token_issue
from tests.factories import (
    AppointmentFactory,
    CartFactory,
    ConsentFactory,
    IntegrationFactory,
    LeadFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    PatientNoteFactory,
    PrescriptionFactory,
    QuestionnaireSubmissionFactory,
    RequisitionFactory,
    SmsStepFactory,
    StaffMembershipFactory,
    SubscriptionFactory,
    TaskFactory,
    UserFactory,
    WorkflowFactory,
)
from workflows.models import CustomEventType, EnrollmentSkip, Event, Run, Segment, StepRun

pytestmark = pytest.mark.django_db

VIEW, ADD, CHANGE, DELETE = "view", "add", "change", "delete"
R = frozenset({VIEW})
RA = frozenset({VIEW, ADD})
RC = frozenset({VIEW, CHANGE})
RAC = frozenset({VIEW, ADD, CHANGE})
RACD = frozenset({VIEW, ADD, CHANGE, DELETE})

ALERT_WEBHOOK_SECRET = "alert-signing-secret-7f3a9c1e"

# Every model registered in the admin, and whether its records belong to a clinic (another
# clinic's user must not find them). A model missing here fails the test.
MODELS = {
    "auth.group": False,
    "auth.user": False,
    "axes.accessattempt": False,
    "axes.accesslog": False,
    "axes.accessfailurelog": False,
    "otp_totp.totpdevice": False,
    "django_celery_results.groupresult": False,
    "django_celery_results.taskresult": False,
    "patients.staffmembership": False,
    "patients.organization": True,
    "patients.patient": True,
    "patients.consentrecord": True,
    "patients.order": True,
    "patients.subscription": True,
    "patients.appointment": True,
    "patients.cart": True,
    "patients.questionnairesubmission": True,
    "patients.prescription": True,
    "patients.requisition": True,
    "patients.lead": True,
    "patients.task": True,
    "patients.patientnote": True,
    "patients.auditentry": True,
    "workflows.workflow": True,
    "workflows.customeventtype": True,
    "workflows.segment": True,
    "workflows.event": True,
    "workflows.run": True,
    "workflows.steprun": True,
    "workflows.enrollmentskip": True,
    "integrations.integration": True,
    "integrations.outboundmessage": True,
    "integrations.messagingpolicy": True,
    "integrations.inboundmessage": True,
    "integrations.alertsettings": True,
    "integrations.alert": True,
    "integrations.apikey": True,
    "integrations.broadcast": True,
}
PATIENT_RECORDS = [
    "patients.subscription",
    "patients.appointment",
    "patients.cart",
    "patients.questionnairesubmission",
    "patients.prescription",
    "patients.requisition",
    "patients.lead",
    "patients.task",
    "patients.patientnote",
]

# What each role can do with each model in the admin: "view" opens its list and its pages
# (read-only), "change" edits them, "add" and "delete" as named. Not listed: nothing.
# History (runs, messages, events, the audit trail) is never edited by anyone, consent
# records are added but never changed: that is the admin's rule, and it holds for every role.
ACCESS: dict[str, dict[str, frozenset[str]]] = {
    "support": {
        "patients.organization": RC,
        "patients.staffmembership": RACD,
        "integrations.integration": RAC,
        "integrations.alertsettings": RAC,
        **dict.fromkeys(
            [
                "patients.patient",
                "patients.consentrecord",
                "patients.order",
                *PATIENT_RECORDS,
                "patients.auditentry",
                "workflows.workflow",
                "workflows.customeventtype",
                "workflows.segment",
                "workflows.event",
                "workflows.run",
                "workflows.steprun",
                "workflows.enrollmentskip",
                "integrations.messagingpolicy",
                "integrations.outboundmessage",
                "integrations.inboundmessage",
                "integrations.alert",
                "integrations.apikey",
                "integrations.broadcast",
            ],
            R,
        ),
    },
    "clinic_admin": {
        "patients.organization": R,
        "patients.patient": RAC,
        "patients.consentrecord": RA,
        "patients.order": RAC,
        **dict.fromkeys(PATIENT_RECORDS, RAC),
        "patients.auditentry": R,
        "workflows.workflow": RACD,
        "workflows.customeventtype": RACD,
        "workflows.segment": RACD,
        "workflows.event": R,
        "workflows.run": R,
        "workflows.steprun": R,
        "workflows.enrollmentskip": R,
        "integrations.integration": R,
        "integrations.outboundmessage": R,
        "integrations.messagingpolicy": RAC,
        "integrations.inboundmessage": R,
        "integrations.alertsettings": RAC,
        "integrations.alert": R,
        "integrations.apikey": RAC,
        "integrations.broadcast": RAC,
    },
    "clinic_staff": {
        "patients.patient": R,
        "patients.patientnote": R,
        "patients.consentrecord": RA,
        "patients.order": R,
        "workflows.workflow": R,
        "workflows.segment": R,
        "workflows.run": R,
        "workflows.steprun": R,
        "workflows.enrollmentskip": R,
        "integrations.outboundmessage": R,
        "integrations.inboundmessage": R,
        "integrations.alert": R,
        "integrations.broadcast": R,
    },
    "anonymous": {},
}
# A clinic admin of another clinic, walking this clinic's objects.
ACCESS["other_clinic"] = ACCESS["clinic_admin"]

# The bulk actions each role is offered on a model's list. Not listed: none.
ACTIONS: dict[str, dict[str, set[str]]] = {
    "support": {
        "patients.organization": {"issue_webhook_token"},
        "patients.staffmembership": {"delete_selected"},
        "integrations.integration": {"check_credentials"},
        # A download of what the role may read anyway (workflows.transfer).
        "workflows.workflow": {"export_workflows"},
    },
    "clinic_admin": {
        "patients.subscription": {"renew"},
        "workflows.workflow": {"delete_selected", "disable_workflows", "export_workflows"},
        "workflows.customeventtype": {"delete_selected"},
        "workflows.segment": {"delete_selected"},
        "workflows.run": {"retry_failed_runs"},
        "integrations.inboundmessage": {"mark_reviewed"},
        "integrations.apikey": {"revoke_api_keys"},
    },
    "clinic_staff": {
        "integrations.inboundmessage": {"mark_reviewed"},
        "workflows.workflow": {"export_workflows"},
    },
}


@dataclass(frozen=True)
class Extra:
    """A view a ModelAdmin adds in get_urls(): GET page or POST endpoint, the capability
    on a model it needs, what it answers when allowed, and for another clinic's object."""

    method: str
    model: str
    needs: str
    allowed: str
    other_clinic: str = "404"


EXTRA: dict[tuple[str, bool], Extra] = {
    # (URL name, whether it names an object)
    ("workflows_workflow_builder_schema", False): Extra("GET", "workflows.workflow", VIEW, "200"),
    **{
        (f"workflows_workflow_builder_{name}", False): Extra(
            "POST", "workflows.workflow", ADD, "acts"
        )
        for name in ("validate", "diagram", "preview", "dry_run")
    },
    **{
        (f"workflows_workflow_builder_{name}", True): Extra(
            "POST", "workflows.workflow", VIEW, "acts"
        )
        for name in ("validate", "diagram", "preview", "dry_run")
    },
    ("workflows_workflow_live_test", True): Extra("POST", "workflows.workflow", CHANGE, "acts"),
    # The ready-made workflows: the page, and adding one (an empty POST: "choose one").
    ("workflows_workflow_recipes", False): Extra("GET POST", "workflows.workflow", ADD, "acts"),
    # Importing an export (an empty POST: "choose the export's file").
    ("workflows_workflow_import", False): Extra("GET POST", "workflows.workflow", ADD, "acts"),
    # The confirmation page (or, already in that state, a redirect), then the action.
    ("workflows_workflow_enable", True): Extra("GET POST", "workflows.workflow", CHANGE, "acts"),
    ("workflows_workflow_disable", True): Extra("GET POST", "workflows.workflow", CHANGE, "acts"),
    # The workflow's analytics (mounted through workflows.pages): whoever may view it.
    ("workflows_workflow_analytics", True): Extra("GET", "workflows.workflow", VIEW, "200"),
    # Its versions and the diff between two: whoever may view it (the walk's workflow has no
    # versions: the diff page says there is nothing to compare). Restoring one changes it
    # (no version named: a 400 saying to choose one).
    ("workflows_workflow_versions", True): Extra("GET", "workflows.workflow", VIEW, "200"),
    ("workflows_workflow_version_compare", True): Extra("GET", "workflows.workflow", VIEW, "200"),
    ("workflows_workflow_version_restore", True): Extra(
        "GET POST", "workflows.workflow", CHANGE, "acts"
    ),
    # A segment's live count: on the add page whoever may add one, on a segment's page
    # whoever may view it (an empty filter: every patient of the clinic).
    ("workflows_segment_count_new", False): Extra("POST", "workflows.segment", ADD, "acts"),
    ("workflows_segment_count", True): Extra("POST", "workflows.segment", VIEW, "acts"),
    # A broadcast's confirmation page, then sending it; cancelling it (POST only; a draft:
    # "nothing to cancel"); its live progress (JSON).
    ("integrations_broadcast_send", True): Extra(
        "GET POST", "integrations.broadcast", CHANGE, "acts"
    ),
    ("integrations_broadcast_cancel", True): Extra(
        "POST", "integrations.broadcast", CHANGE, "acts"
    ),
    ("integrations_broadcast_progress", True): Extra("GET", "integrations.broadcast", VIEW, "200"),
    ("auth_user_password_change", True): Extra("GET", "auth.user", CHANGE, "200", "403"),
    # A TOTP device's enrolment page and its QR code (django-otp), superuser-only.
    ("otp_totp_totpdevice_config", True): Extra("GET", "otp_totp.totpdevice", VIEW, "200", "403"),
    ("otp_totp_totpdevice_qrcode", True): Extra("GET", "otp_totp.totpdevice", VIEW, "200", "403"),
}

# Pages the project mounts under /admin/ outside the admin site, by URL name: every staff
# role may open them.
PROJECT_PAGES = {
    "careflow-home",  # the admin index, with the clinic home on top
    "careflow-reference",
    "careflow-reference-event",
}
URL_ARGUMENTS = {"name": "order.shipped"}  # a value for each such page's URL parameter

# The admin site's own views: what a logged-in staff user and an anonymous visitor get.
SITE = {
    "index": ("200", "→login"),
    "login": ("→index", "200"),  # already logged in: straight to the index
    "logout": ("405", "→index"),  # POST only since Django 5
    "password_change": ("200", "→login"),
    "password_change_done": ("200", "→login"),
    "jsi18n": ("200", "→login"),
}
# Site views expanded elsewhere: autocomplete (per field), view_on_site (per object), app_list
# (per app), and the catch-all (None: not a page).
SITE_EXPANDED = {"autocomplete", "view_on_site", "app_list", None}

STANDARD = ("changelist", "add", "change", "history", "delete")
# The names a ModelAdmin's URLs give the object's primary key (UserAdmin's password: "id",
# django-otp's device pages: "pk").
OBJECT_PARAMETERS = {"object_id", "id", "pk"}

# --- what the test knows must never appear --------------------------------------------------
AUTH_TOKEN = "f00dfacecafe1234f00dfacecafe5678"
EMAIL_TOKEN = "0ddba11e-postmark-token-5678"
EMAIL_WEBHOOK_SECRET = "0ddba11e-webhook-secret"


def _can(caps: frozenset[str], need: str) -> bool:
    # The admin's view pages open for "change" too (an editor can always look).
    return need in caps or (need == VIEW and CHANGE in caps)


@dataclass
class Walk:
    """The outcome of one role's walk: every mismatch, and every body served."""

    role: str
    client: Client
    mismatches: list[str]
    bodies: list[tuple[str, bytes]]

    def check(self, method: str, url: str, expected: str) -> None:
        if method == "GET":
            response = self.client.get(url)
        else:
            # An empty request: enough to be refused, or to be answered "choose a patient".
            response = self.client.post(url, data=json.dumps({}), content_type="application/json")
        got = _status(response)
        if not _matches(got, expected):
            self.mismatches.append(
                f"{self.role:13} {method:4} {url}  expected {expected}, got {got}"
            )
        self.bodies.append((f"{method} {url}", response.content))


def _status(response: HttpResponseBase) -> str:
    if response.status_code not in (301, 302):
        return str(response.status_code)
    target = response["Location"].split("?")[0]
    if target == reverse("admin:login"):
        return "→login"
    if target == reverse("admin:index"):
        return "→index"
    if target.endswith("/change/"):
        return "→change"
    return f"→{target}"


def _matches(got: str, expected: str) -> bool:
    if expected == "acts":
        return got not in ("403", "404", "405", "→login", "→index") and not got.startswith("5")
    return got == expected


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def clinic() -> dict[str, Any]:
    """One clinic with an object of every model registered in the admin, a second clinic,
    a user of every role, and the secrets that must never be shown."""
    sunrise, harbor = OrganizationFactory(name="Sunrise"), OrganizationFactory(name="Harbor")
    users = {
        "support": UserFactory(username="support-user"),
        "clinic_admin": StaffMembershipFactory(organization=sunrise).user,
        "clinic_staff": StaffMembershipFactory(organization=sunrise).user,
        "other_clinic": StaffMembershipFactory(organization=harbor).user,
        "superuser": UserFactory(username="root-user", is_superuser=True),
    }
    for role, group in [
        ("support", SUPPORT_STAFF),
        ("clinic_admin", CLINIC_ADMIN),
        ("clinic_staff", CLINIC_STAFF),
        ("other_clinic", CLINIC_ADMIN),
    ]:
        users[role].groups.add(Group.objects.get(name=group))

    integration = IntegrationFactory(organization=sunrise, auth_token=AUTH_TOKEN)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secrets FROM integrations_integration WHERE id = %s", [integration.pk]
        )
        ciphertext = cursor.fetchone()[0]
    email_integration = IntegrationFactory(
        organization=sunrise,
        adapter="email",
        name="Email",
        senders=["care@sunrise.example"],
        settings={"esp": "postmark", "message_stream": "outbound"},
        secrets={"server_token": EMAIL_TOKEN, "webhook_secret": EMAIL_WEBHOOK_SECRET},
    )
    webhook_token = organization_webhook_token_issue(organization=sunrise)
    api_key = api_key_issue(organization=sunrise, name="Patient portal", scope="write")
    sunrise.refresh_from_db()

    patient = PatientFactory(organization=sunrise, first_name="Maria", last_name="Garcia")
    order = OrderFactory(patient=patient)
    workflow = WorkflowFactory(organization=sunrise, enabled=False, name="Order shipped SMS")
    SmsStepFactory(workflow=workflow)
    event = Event.objects.create(
        organization=sunrise, type="order.shipped", dedupe_key="roles-e1", payload={}
    )
    run = Run.objects.create(workflow=workflow, event=event, status="failed")
    step_run = StepRun.objects.create(run=run, index=0, status="failed")
    consent = ConsentFactory(patient=patient)
    objects: dict[str, Any] = {
        "auth.group": Group.objects.get(name=CLINIC_STAFF),
        "auth.user": users["clinic_staff"],
        "axes.accessattempt": AccessAttempt.objects.create(
            username="someone", ip_address="192.0.2.1", failures_since_start=1
        ),
        "axes.accesslog": AccessLog.objects.create(username="someone", ip_address="192.0.2.1"),
        "axes.accessfailurelog": AccessFailureLog.objects.create(
            username="someone", ip_address="192.0.2.1"
        ),
        "otp_totp.totpdevice": TOTPDevice.objects.create(user=users["support"], name="phone"),
        "django_celery_results.taskresult": TaskResult.objects.create(task_id="roles-task"),
        "django_celery_results.groupresult": GroupResult.objects.create(group_id="roles-group"),
        "patients.staffmembership": users["clinic_staff"].membership,
        "patients.organization": sunrise,
        "patients.patient": patient,
        "patients.consentrecord": consent,
        "patients.order": order,
        "patients.subscription": SubscriptionFactory(patient=patient),
        "patients.appointment": AppointmentFactory(patient=patient),
        "patients.cart": CartFactory(patient=patient),
        "patients.questionnairesubmission": QuestionnaireSubmissionFactory(patient=patient),
        "patients.prescription": PrescriptionFactory(patient=patient),
        "patients.requisition": RequisitionFactory(patient=patient),
        "patients.lead": LeadFactory(organization=sunrise),
        "patients.task": TaskFactory(organization=sunrise, patient=patient),
        "patients.patientnote": PatientNoteFactory(patient=patient),
        "patients.auditentry": AuditEntry.objects.filter(organization=sunrise).first()
        or AuditEntry.objects.create(
            organization=sunrise, action="updated", model="x", object_id="1", object_repr="x"
        ),
        "workflows.workflow": workflow,
        "workflows.customeventtype": CustomEventType.objects.create(
            organization=sunrise, name="lab_results_ready", label="Lab results ready"
        ),
        "workflows.segment": Segment.objects.create(
            organization=sunrise, name="Florida", filter={"customer.provinceCode": "FL"}
        ),
        "workflows.event": event,
        "workflows.run": run,
        "workflows.steprun": step_run,
        "workflows.enrollmentskip": EnrollmentSkip.objects.create(
            workflow=workflow, event=event, reason="period", detail="enrolled 2 days ago (run 1)"
        ),
        "integrations.integration": integration,
        "integrations.outboundmessage": OutboundMessage.objects.create(
            organization=sunrise,
            integration=integration,
            step_run=step_run,
            patient=patient,
            idempotency_key="roles-k1",
            purpose="transactional",
            to=patient.phone,
            body="Hi Maria, your order has shipped!",
            status="delivered",
        ),
        "integrations.messagingpolicy": sunrise.messaging_policy,
        "integrations.inboundmessage": InboundMessage.objects.create(
            organization=sunrise,
            integration=integration,
            provider_sid="SM" + "0" * 32,
            from_number=patient.phone,
            to=integration.senders[0],
            body="please stop texting me",
            patient=patient,
            needs_review=True,
        ),
        "integrations.alertsettings": AlertSettings.objects.create(
            organization=sunrise,
            staff_emails=["ops@sunrise.example"],
            webhook_url="https://hooks.example.com/careflow-alerts",
            webhook_secret=ALERT_WEBHOOK_SECRET,
        ),
        "integrations.alert": Alert.objects.create(
            organization=sunrise,
            condition=Alert.Condition.RUN_FAILED,
            subject=f"workflow:{workflow.pk}",
            period_start=timezone.now().replace(minute=0, second=0, microsecond=0),
            summary=f"Workflow “{workflow.name}” (id {workflow.pk}): 1 failed run(s)",
            link="http://127.0.0.1:8000/admin/workflows/run/?status=failed",
        ),
        "integrations.apikey": api_key.api_key,
        "integrations.broadcast": Broadcast.objects.create(
            organization=sunrise,
            name="Flu shots",
            segment=Segment.objects.create(organization=sunrise, name="Everyone"),
            function="twilio.sendSMS",
            integration=integration,
            parameters={"message": "Hi {{customer.firstName}}", "from": integration.senders[0]},
        ),
    }
    secrets = {
        "the alert webhook signing secret": ALERT_WEBHOOK_SECRET,
        "the Twilio auth token": AUTH_TOKEN,
        "the encrypted Twilio auth token": ciphertext,
        "the email server token": EMAIL_TOKEN,
        "the email webhook secret": EMAIL_WEBHOOK_SECRET,
        "the webhook token": webhook_token,
        "the webhook token's hash": sunrise.webhook_token_hash,
        "the API key": api_key.token,
        "the API key's hash": api_key.api_key.key_hash,
        "SECRET_KEY": settings.SECRET_KEY,
        **{f"encryption key {i}": k for i, k in enumerate(settings.CAREFLOW_ENCRYPTION_KEYS)},
    }
    assert all(secrets.values())
    # Each provider's integration has its own form: every one's pages are walked.
    more_objects = {"integrations.integration": [email_integration]}
    return {"users": users, "objects": objects, "more_objects": more_objects, "secrets": secrets}


# --- the URLs -----------------------------------------------------------------------------


def _label(model: type[models.Model]) -> str:
    return model._meta.label_lower


def _fill(route: str, pattern: URLPattern, values: dict[str, str]) -> str:
    if not isinstance(pattern.pattern, RoutePattern):
        raise AssertionError(f"cannot fill the regex URL {route!r}: add a case for it")
    missing = set(pattern.pattern.converters) - values.keys()
    if missing:
        raise AssertionError(f"no value for {sorted(missing)} in the admin URL {route!r}")
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], route)


def _model_admin_urls(
    label: str, model_admin: "ModelAdmin[Any]", obj: models.Model
) -> Iterator[Any]:
    """(kind, name, takes object, URL) for each view of this ModelAdmin."""
    prefix = f"/admin/{label.replace('.', '/')}/"
    for pattern in model_admin.get_urls():
        route = str(pattern.pattern)
        takes_object = bool(OBJECT_PARAMETERS & set(getattr(pattern.pattern, "converters", {})))
        url = prefix + _fill(route, pattern, dict.fromkeys(OBJECT_PARAMETERS, str(obj.pk)))
        kind = None
        if pattern.name is None and route == "<path:object_id>/":
            kind = "legacy"  # the old URL of a change page: a redirect to it
        else:
            for standard in STANDARD:
                if pattern.name == f"{label.replace('.', '_')}_{standard}":
                    kind = standard
        yield kind or "extra", pattern.name, takes_object, url


def _project_admin_patterns() -> Iterator[tuple[str, URLPattern]]:
    """Every URL pattern under /admin/ that is not the admin site's own."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                if pattern.namespace != admin.site.name:
                    yield from walk(pattern.url_patterns, route)
            elif route.startswith("admin/"):
                yield route, pattern

    yield from walk(get_resolver().url_patterns, "")


# --- the walk -----------------------------------------------------------------------------


def _walk(role: str, clinic: dict[str, Any]) -> Walk:
    client = Client()
    if role != "anonymous":
        client.force_login(clinic["users"][role])
    walk = Walk(role, client, [], [])
    access = ACCESS[role]
    anonymous = role == "anonymous"
    other = role == "other_clinic"
    unknown: list[str] = []
    posts: list[tuple[str, str]] = []

    for model, model_admin in admin.site._registry.items():
        label = _label(model)
        if label not in MODELS:
            unknown.append(f"model {label}: add it to MODELS (and to ACCESS for who may see it)")
            continue
        obj = clinic["objects"].get(label)
        if obj is None:
            unknown.append(f"model {label}: add an object of it to the `clinic` fixture")
            continue
        caps = access.get(label, frozenset())
        theirs = other and MODELS[label]  # an object this user must not find
        if not other:
            actions = ACTIONS.get(role, {}).get(label, set())
            _check_actions(walk, model_admin, label, caps, actions)
        urls = [
            found
            for each in [obj, *clinic.get("more_objects", {}).get(label, [])]
            for found in _model_admin_urls(label, model_admin, each)
        ]
        for kind, name, takes_object, url in dict.fromkeys(urls):
            if other and not takes_object:
                continue
            if kind == "extra":
                extra = EXTRA.get((name, takes_object))
                if extra is None:
                    unknown.append(f"URL {name} ({url}): add it to EXTRA")
                    continue
                allowed = _can(access.get(extra.model, frozenset()), extra.needs)
                if anonymous:
                    expected = "→login"
                elif theirs and extra.other_clinic == "404":
                    expected = "404"  # looked up in the user's clinic before anything else
                elif not allowed:
                    expected = "403"
                else:
                    expected = extra.other_clinic if theirs else extra.allowed
                for method in extra.method.split():
                    if method == "GET":
                        walk.check("GET", url, expected)
                    else:
                        posts.append((url, expected))
                continue
            expected = _standard(kind, caps, anonymous=anonymous, theirs=theirs)
            walk.check("GET", url, expected)
            if kind == "add" and label == "integrations.integration":
                # One add page per provider (the bare URL asks which).
                for adapter in INTEGRATION_FORMS:
                    walk.check("GET", f"{url}?adapter={adapter}", expected)

    if not other:
        _walk_site(walk, clinic, anonymous, unknown)
    for url, expected in posts:  # after the pages: a POST may change what they show
        walk.check("POST", url, expected)
    walk.mismatches += [f"{role:13} NO EXPECTATION for {what}" for what in unknown]
    return walk


def _standard(kind: str, caps: frozenset[str], *, anonymous: bool, theirs: bool) -> str:
    if anonymous:
        return "→login"
    if kind == "legacy":
        return "→change"
    need = {"changelist": VIEW, "add": ADD, "change": VIEW, "history": VIEW, "delete": DELETE}
    allowed = _can(caps, need[kind])
    if theirs:
        # Django looks the object up in the user's queryset: history before the permission
        # check, change and delete after it.
        return "→index" if kind == "history" or allowed else "403"
    return "200" if allowed else "403"


def _check_actions(
    walk: Walk, model_admin: "ModelAdmin[Any]", label: str, caps: frozenset[str], expected: set[str]
) -> None:
    if walk.role == "anonymous" or not _can(caps, VIEW):
        if expected:
            walk.mismatches.append(
                f"{walk.role:13} ACTIONS {label}: expects {expected} but no list"
            )
        return
    url = reverse(f"admin:{label.replace('.', '_')}_changelist")
    response = walk.client.get(url)
    walk.bodies.append((f"GET {url}", response.content))
    form = response.context["action_form"] if response.status_code == 200 else None
    offered = {value for value, _ in form.fields["action"].choices if value} if form else set()
    if offered != expected:
        walk.mismatches.append(
            f"{walk.role:13} ACTIONS {label}: expected {sorted(expected)}, got {sorted(offered)}"
        )


def _walk_site(walk: Walk, clinic: dict[str, Any], anonymous: bool, unknown: list[str]) -> None:
    access = ACCESS[walk.role]
    for pattern in admin.site.get_urls():
        if isinstance(pattern, URLResolver):
            continue  # a ModelAdmin's URLs, walked above
        if pattern.name in SITE_EXPANDED:
            continue
        if pattern.name not in SITE:
            unknown.append(f"admin site URL {pattern.name} ({pattern.pattern}): add it to SITE")
            continue
        staff, visitor = SITE[pattern.name]
        walk.check("GET", reverse(f"admin:{pattern.name}"), visitor if anonymous else staff)

    # An app's index lists the models the role may see; with none, the app does not exist.
    for app_label in {model._meta.app_label for model in admin.site._registry}:
        sees = any(
            label.startswith(f"{app_label}.") and _can(caps, VIEW) for label, caps in access.items()
        )
        expected = "→login" if anonymous else "200" if sees else "404"
        walk.check("GET", reverse("admin:app_list", args=[app_label]), expected)

    # Autocomplete answers with the records of the model searched: who may view those.
    for model, model_admin in admin.site._registry.items():
        for field_name in model_admin.autocomplete_fields:
            target = _label(model._meta.get_field(field_name).related_model)
            query = (
                f"?app_label={model._meta.app_label}&model_name={model._meta.model_name}"
                f"&field_name={field_name}&term="
            )
            allowed = _can(access.get(target, frozenset()), VIEW)
            expected = "→login" if anonymous else "200" if allowed else "403"
            walk.check("GET", reverse("admin:autocomplete") + query, expected)

    # "View on site": none of our models has a public page.
    for obj in clinic["objects"].values():
        content_type = ContentType.objects.get_for_model(obj)
        url = reverse("admin:view_on_site", args=[content_type.pk, obj.pk])
        walk.check("GET", url, "→login" if anonymous else "404")

    for route, pattern in _project_admin_patterns():
        if pattern.name not in PROJECT_PAGES:
            unknown.append(f"project URL {pattern.name} (/{route}): add it to PROJECT_PAGES")
            continue
        url = "/" + _fill(route, pattern, URL_ARGUMENTS)
        walk.check("GET", url, "→login" if anonymous else "200")


# --- the tests ----------------------------------------------------------------------------

ROLES = ["support", "clinic_admin", "clinic_staff", "other_clinic", "anonymous"]


@pytest.mark.parametrize("role", ROLES)
def test_every_admin_url_answers_each_role_as_its_permissions_say(
    role: str, clinic: dict[str, Any]
) -> None:
    walk = _walk(role, clinic)
    assert walk.bodies, "no URL was walked"
    assert not walk.mismatches, f"{len(walk.mismatches)} URL(s) answer {role} unexpectedly:\n" + (
        "\n".join(walk.mismatches)
    )
    leaks = [
        f"{where} shows {what}"
        for where, body in walk.bodies
        for what, secret in clinic["secrets"].items()
        if secret.encode() in body
    ]
    assert not leaks, f"Secrets in pages served to {role}:\n" + "\n".join(leaks)


def test_no_page_shows_a_secret_to_the_superuser_or_fails(
    clinic: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The superuser may open everything, so what each URL answers is not this file's
    question for them; that none fails and none shows a secret is: the token is write-only
    for everyone, its holder included."""
    monkeypatch.setitem(ACCESS, "superuser", {})  # every expectation "403": only 5xx counts
    walk = _walk("superuser", clinic)
    assert len(walk.bodies) > 100, "the superuser's walk opened too few pages"
    failures = [m for m in walk.mismatches if re.search(r"got 5\d\d$", m) or "NO EXPECT" in m]
    assert not failures, "\n".join(failures)
    leaks = [
        f"{where} shows {what}"
        for where, body in walk.bodies
        for what, secret in clinic["secrets"].items()
        if secret.encode() in body
    ]
    assert not leaks, "Secrets in pages served to the superuser:\n" + "\n".join(leaks)


def test_the_walk_covers_the_pages_of_every_registered_model(clinic: dict[str, Any]) -> None:
    walk = _walk("support", clinic)
    walked = {where.split(" ", 1)[1] for where, _ in walk.bodies}
    for model in admin.site._registry:
        assert reverse(f"admin:{_label(model).replace('.', '_')}_changelist") in walked
    assert reverse("careflow-reference") in walked
    assert (
        reverse(
            "admin:workflows_workflow_enable", args=[clinic["objects"]["workflows.workflow"].pk]
        )
        in walked
    )


def test_only_a_role_with_the_review_permission_marks_inbound_messages_reviewed(
    clinic: dict[str, Any],
) -> None:
    message = clinic["objects"]["integrations.inboundmessage"]
    url = reverse("admin:integrations_inboundmessage_changelist")
    action = {"action": "mark_reviewed", "_selected_action": [message.pk]}

    support = Client()
    support.force_login(clinic["users"]["support"])  # may read every message, decides nothing
    support.post(url, action)
    message.refresh_from_db()
    assert message.needs_review and message.reviewed_by is None

    staff = Client()
    staff.force_login(clinic["users"]["clinic_staff"])
    staff.post(url, action)
    message.refresh_from_db()
    assert not message.needs_review
    assert message.reviewed_by == clinic["users"]["clinic_staff"]
    assert message.reviewed_at is not None and message.reviewed_at <= timezone.now()


def test_the_integration_page_never_shows_the_auth_token_even_read_only(
    clinic: dict[str, Any],
) -> None:
    integration = clinic["objects"]["integrations.integration"]
    url = reverse("admin:integrations_integration_change", args=[integration.pk])
    for role in ("clinic_admin", "support"):  # read-only and editable
        client = Client()
        client.force_login(clinic["users"][role])
        response = client.get(url)
        assert response.status_code == 200
        assert AUTH_TOKEN not in response.content.decode(), role
