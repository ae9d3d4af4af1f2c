"""The event catalogue and its payload schemas (the data reference).

The central test records EVERY catalogue event through the real code paths (receivers,
services, scans) from real records, and checks each payload against its schema: no
undocumented keys, no documented key missing, types as documented, nulls only where the
schema allows them, and every schema variable resolving in the payload.
"""

import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.short_links import link_click_record
from patients.models import (
    Appointment,
    AuditEntry,
    Lead,
    Order,
    Prescription,
    Requisition,
    Subscription,
    Task,
)
from patients.services import inbound_message_record, subscription_renew, webhook_event_record
from tests.factories import (
    AppointmentFactory,
    CartFactory,
    ConsentFactory,
    IntegrationFactory,
    LeadFactory,
    OrganizationFactory,
    PatientFactory,
    PrescriptionFactory,
    QuestionnaireSubmissionFactory,
    RequisitionFactory,
    ShortLinkFactory,
    SubscriptionFactory,
    TaskFactory,
)
from workflows import catalogue
from workflows.catalogue import (
    CATALOGUE,
    EVENT_TYPES,
    Field,
    event_choices,
    schema_field,
    schema_paths,
    schema_variables,
)
from workflows.models import Event
from workflows.outbox import event_record
from workflows.rendering import MISSING, resolve_path
from workflows.scans import appointment_reminders_scan, upcoming_renewals_scan

# DOMAIN.md §2: the names the modelled platform publishes.
CONFIRMED_NAMES = {
    "order.created",
    "order.subscription_cycle",
    "order.awaiting_payment",
    "order.processing",
    "order.awaiting_requirements",
    "order.awaiting_requisition",
    "order.awaiting_script",
    "order.awaiting_fulfillment",
    "order.awaiting_shipment",
    "order.shipped",
    "subscription.created",
    "subscription.active",
    "subscription.paused",
    "subscription.cancelled",
    "subscription.upcoming_renewal",
    "customer.signup",
    "cart.checkout",
    "questionnaire.submitted",
    "prescription.created",
    "prescription.fulfilled",
    "message.inbound",
    "webhook.event",
}
NAMED_HERE = {
    "appointment.booked",
    "appointment.confirmed",
    "appointment.cancelled",
    "appointment.completed",
    "appointment.no_show",
    # issue 16: a patient's reply asking for another time (the "Update record" step)
    "appointment.reschedule_requested",
    "appointment.reminder",
    "lead.created",
    "lead.converted",
    "lead.lost",
    "task.created",
    "task.completed",
    "task.cancelled",
    "customer.updated",
    "requisition.created",
    "requisition.submitted",
    "requisition.collected",
    "requisition.resulted",
    "requisition.cancelled",
    # issue 19: a patient clicked a short link in a text (integrations.short_links)
    "message.link_clicked",
}


# --- the catalogue ---------------------------------------------------------------------------


def test_catalogue_has_every_domain_event_and_nothing_unexplained() -> None:
    assert set(EVENT_TYPES) == CONFIRMED_NAMES | NAMED_HERE


def test_event_names_are_unique_and_in_entity_status_style() -> None:
    names = [event.name for event in CATALOGUE]
    assert len(names) == len(set(names))
    for name in names:
        entity, _, status = name.partition(".")
        assert entity and status and status == status.lower(), name


@pytest.mark.parametrize("event", CATALOGUE, ids=lambda e: e.name)
def test_every_event_is_described_with_a_subject_and_a_schema(event: Any) -> None:
    assert event.category
    assert event.description.endswith(".")
    assert event.subject
    assert event.schema
    assert "customer" in event.schema


@pytest.mark.parametrize("event", CATALOGUE, ids=lambda e: e.name)
def test_every_variable_is_documented_with_a_well_typed_example(event: Any) -> None:
    variables = schema_variables(event.name)
    assert variables
    for path, variable in variables:
        assert variable.description, path
        assert variable.example is not None, path
        assert not _type_error(variable.example, variable), path


def test_event_choices_group_every_event_by_category_in_catalogue_order() -> None:
    choices = event_choices()
    flat = [name for _, group in choices for name, _ in group]
    assert sorted(flat) == sorted(EVENT_TYPES)
    for _, group in choices:  # catalogue order within each category
        names = [name for name, _ in group]
        assert names == [e.name for e in CATALOGUE if e.name in names]
    categories = [category for category, _ in choices]
    assert len(categories) == len(set(categories))
    assert dict(choices)["Appointment"][0] == ("appointment.booked", "appointment.booked")


def test_shared_building_blocks_are_one_definition() -> None:
    # The customer summary nested in orders is the same object as in subscriptions.
    order = EVENT_TYPES["order.shipped"].schema["order"]
    subscription = EVENT_TYPES["subscription.active"].schema["subscription"]
    assert order.fields is not None and subscription.fields is not None
    assert order.fields["customer"] is subscription.fields["customer"]
    cart = EVENT_TYPES["cart.checkout"].schema["cart"]
    assert cart.fields is not None
    assert cart.fields["lineItems"].items is order.fields["lineItems"].items


@pytest.mark.parametrize(
    ("documented", "model"),
    [
        (catalogue.ORDER_STATUSES, Order),
        (catalogue.SUBSCRIPTION_STATUSES, Subscription),
        (catalogue.PRESCRIPTION_STATUSES, Prescription),
        (catalogue.REQUISITION_STATUSES, Requisition),
        (catalogue.APPOINTMENT_STATUSES, Appointment),
        (catalogue.LEAD_STATUSES, Lead),
        (catalogue.TASK_STATUSES, Task),
    ],
)
def test_documented_statuses_are_the_models(documented: tuple[str, ...], model: Any) -> None:
    assert list(documented) == model.Status.values


def test_every_order_status_has_its_event() -> None:
    assert {f"order.{status}" for status in Order.Status.values} <= set(EVENT_TYPES)


def test_customer_updated_paths_are_customer_variables() -> None:
    from patients.models import Patient
    from patients.payloads import CUSTOMER_FIELD_PATHS

    assert set(CUSTOMER_FIELD_PATHS) == set(Patient.tracked_fields)
    for path in CUSTOMER_FIELD_PATHS.values():
        assert schema_field("customer.updated", f"customer.{path}") is not None, path


def test_questionnaire_schema_offers_no_answers() -> None:
    paths = [path for path, _ in schema_paths("questionnaire.submitted")]
    assert not [path for path in paths if "answer" in path.lower()]


def test_clinical_variables_are_marked_sensitive() -> None:
    assert schema_field("prescription.fulfilled", "prescription.medication.name").sensitive
    assert schema_field("requisition.resulted", "requisition.testPanel").sensitive
    assert not schema_field("requisition.resulted", "requisition.labName").sensitive


# --- schema_variables / schema_field ---------------------------------------------------------


def test_schema_variables_list_scalar_paths_with_arrays_at_index_0() -> None:
    paths = [path for path, _ in schema_variables("order.shipped")]
    assert "order.lineItems.0.name" in paths
    assert "order.statusHistory.0.status" in paths
    assert "customer.defaultAddress.city" in paths
    assert "subscription.product.name" in paths
    # Containers are not variables: they would render as "[object Object]".
    assert "order.lineItems" not in paths and "customer" not in paths
    assert "customer.defaultAddress" not in paths


def test_schema_variables_include_arrays_of_scalars() -> None:
    assert [path for path, _ in schema_variables("customer.updated")][-1] == "changedFields.0"


def test_schema_variables_of_an_unknown_event_are_empty() -> None:
    assert schema_variables("order.teleported") == []


def test_schema_field_resolves_nested_paths_and_array_indexes() -> None:
    field = schema_field("order.shipped", "order.lineItems.3.price")
    assert field is not None and field.type == "number" and field.example == 49.0
    assert schema_field("order.shipped", "order.lineItems").type == "array"
    assert schema_field("order.shipped", "customer.defaultAddress").type == "object"
    assert schema_field("appointment.reminder", "appointment.startsAtLocal").type == "datetime"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "order.nope",
        "order.lineItems.first.name",  # arrays index by digits only
        "order.number.length",  # no path below a scalar
        "order..number",
        "appointment.startsAt",  # another event's data
        "order.lineItems.0.name.x",
    ],
)
def test_schema_field_rejects_unknown_paths(path: str) -> None:
    assert schema_field("order.shipped", path) is None


def test_schema_field_of_an_unknown_event_is_none() -> None:
    assert schema_field("order.teleported", "order.id") is None


def test_custom_webhook_data_is_free_form() -> None:
    field = schema_field("webhook.event", "webhook.data.kit.serial")
    assert field is not None and field.type == "string"
    assert schema_field("webhook.event", "webhook.nope") is None
    assert "webhook.name" in dict(schema_variables("webhook.event"))


def test_event_record_refuses_unknown_types() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        event_record(
            organization_id=0,
            type="order.teleported",
            payload={},
            dedupe_key="x",
        )


@pytest.mark.django_db
def test_event_record_writes_its_rows_in_its_statement_also_for_a_duplicate() -> None:
    organization = OrganizationFactory()

    def record(note: str) -> tuple[Any, AuditEntry, list[str]]:
        row = AuditEntry(organization=organization, action="created", model="m", changes={})
        row.object_repr = note
        with CaptureQueriesContext(connection) as queries:
            event = event_record(
                organization_id=organization.pk,
                type="order.shipped",
                payload={"n": 1},
                dedupe_key="with-rows",
                rows=[row],
            )
        return event, row, [q["sql"].split()[0] for q in queries.captured_queries]

    first, first_row, statements = record("first")
    assert statements == ["WITH"]
    assert first is not None and first.pk == Event.objects.get(dedupe_key="with-rows").pk
    duplicate, second_row, _ = record("second")
    assert duplicate is None
    for row in (first_row, second_row):
        assert row.pk is not None and row._state.adding is False
        assert AuditEntry.objects.get(pk=row.pk).object_repr == row.object_repr


# --- every event's real payload against its schema -------------------------------------------


def _type_error(value: Any, field: Field) -> str:
    expected = {
        "string": str,
        "number": (int, float),
        "boolean": bool,
        "date": str,
        "datetime": str,
        "object": dict,
        "array": list,
    }[field.type]
    if not isinstance(value, expected) or (field.type == "number" and isinstance(value, bool)):
        return f"expected {field.type}, got {type(value).__name__} {value!r}"
    try:
        if field.type == "date":
            date.fromisoformat(value)
        elif field.type == "datetime" and datetime.fromisoformat(value).tzinfo is None:
            return f"datetime without a time zone: {value!r}"
    except ValueError:
        return f"not an ISO {field.type}: {value!r}"
    return ""


def schema_errors(value: Any, field: Field, path: str = "") -> list[str]:
    """Where `value` disagrees with `field`, recursively; empty when it conforms."""
    where = path or "(payload)"
    if value is None:
        return [] if field.nullable else [f"{where}: null, but not nullable"]
    if error := _type_error(value, field):
        return [f"{where}: {error}"]
    errors: list[str] = []
    if field.type == "object" and field.fields is not None:
        prefix = f"{path}." if path else ""
        errors += [f"{prefix}{key}: undocumented" for key in value.keys() - field.fields.keys()]
        errors += [f"{prefix}{key}: documented but missing" for key in field.fields - value.keys()]
        for key in field.fields.keys() & value.keys():
            errors += schema_errors(value[key], field.fields[key], f"{prefix}{key}")
    elif field.type == "array" and field.items is not None:
        for index, item in enumerate(value):
            errors += schema_errors(item, field.items, f"{path}.{index}")
    return errors


def _resolves(payload: dict[str, Any], event_type: str, path: str) -> bool:
    """The variable has a value, or sits below a null the schema allows or an empty list."""
    parts = path.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        value = resolve_path(payload, prefix)
        if value is MISSING:
            return False
        node = schema_field(event_type, prefix)
        if value is None and node is not None and node.nullable:
            return True
        if value == [] and end < len(parts):
            return True
    return True


def _record_every_event() -> dict[str, list[dict[str, Any]]]:
    """Drive real records through their lives; every catalogue event gets recorded."""
    organization = OrganizationFactory(timezone="America/Chicago")
    patient = PatientFactory(
        organization=organization,
        first_name="Ann",
        dob=date(1985, 7, 14),
        gender="female",
        address1="100 Main St",
        address2="Apt 4",
        city="Tampa",
        province="Florida",
        province_code="FL",
        postal_code="33602",
        source="patient-portal",
    )
    ConsentFactory(patient=patient, purpose="marketing")  # customer.acceptMarketing: true
    patient.phone = "+14155550999"
    patient.save()  # customer.updated

    subscription = SubscriptionFactory(
        patient=patient,
        status=Subscription.Status.CREATED,
        next_cycle_date=timezone.localdate() + timedelta(days=3),
    )
    subscription.status = Subscription.Status.ACTIVE
    subscription.save()
    assert upcoming_renewals_scan() == 1
    order = subscription_renew(subscription=subscription)  # order.created + .subscription_cycle
    order.shipping_address = {"address1": "100 Main St", "city": "Tampa", "countryCode": "US"}
    order.coupon, order.discount_amount = "WELCOME5", Decimal("5")
    order.tracking_number = "1Z999AA10123456784"
    for status in [*Order.Status.values[1:], Order.Status.AWAITING_PAYMENT]:
        order.status = status
        order.save()
    for status in (Subscription.Status.PAUSED, Subscription.Status.CANCELLED):
        subscription.status = status
        subscription.save()

    cart = CartFactory(patient=patient)
    cart.checked_out_at = timezone.now()
    cart.save()
    QuestionnaireSubmissionFactory(patient=patient)
    PrescriptionFactory(patient=patient, status=Prescription.Status.FULFILLED)
    requisition = RequisitionFactory(patient=patient)
    for status in Requisition.Status.values[1:]:
        requisition.status = status
        requisition.save()

    appointment = AppointmentFactory(
        patient=patient, starts_at=timezone.now() + timedelta(hours=2), location="12 Bay St"
    )
    assert appointment_reminders_scan() == 1
    for status in Appointment.Status.values[1:]:
        appointment.status = status
        appointment.save()

    LeadFactory(organization=organization, status=Lead.Status.LOST)
    LeadFactory(organization=organization, status=Lead.Status.CONVERTED, converted_patient=patient)
    TaskFactory(organization=organization, patient=patient, status=Task.Status.COMPLETED)
    TaskFactory(organization=organization, status=Task.Status.CANCELLED)

    inbound_message_record(
        organization=organization,
        from_="(415) 555-0999",
        to="+15005550006",
        body="Can I move my appointment?",
        provider_sid="SM" + "a" * 32,
    )
    webhook_event_record(
        organization=organization,
        name="lab_results_ready",
        data={"kitId": "KIT-2291", "panels": [{"code": "LP"}]},
        patient=patient,
        idempotency_key="kit-2291",
    )
    _click_a_short_link(organization, patient)
    payloads: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event_type, payload in Event.objects.values_list("type", "payload"):
        payloads[event_type].append(payload)
    return payloads


def _click_a_short_link(organization: Any, patient: Any) -> None:
    """A text with a short link, clicked (integrations.short_links)."""
    link = ShortLinkFactory(
        message__integration=IntegrationFactory(organization=organization),
        message__patient=patient,
    )
    link_click_record(link=link, user_agent="Mozilla/5.0", now=timezone.now())


@pytest.fixture
def every_event_payload(db: Any) -> dict[str, list[dict[str, Any]]]:
    return _record_every_event()


def test_the_scenario_records_every_catalogue_event(
    every_event_payload: dict[str, list[dict[str, Any]]],
) -> None:
    assert set(every_event_payload) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_real_payload_matches_its_schema(
    event_type: str, every_event_payload: dict[str, list[dict[str, Any]]]
) -> None:
    schema = Field("object", fields=EVENT_TYPES[event_type].schema)
    assert every_event_payload[event_type], f"{event_type} was never recorded"
    for payload in every_event_payload[event_type]:
        # What the outbox stores is JSON: compare in that form.
        payload = json.loads(json.dumps(payload))
        assert schema_errors(payload, schema) == []
        unresolved = [
            path
            for path, _ in schema_variables(event_type)
            if not _resolves(payload, event_type, path)
        ]
        assert unresolved == []


def test_schema_errors_catch_undocumented_missing_and_mistyped_data() -> None:
    """The checker above must be able to fail."""
    schema = Field("object", fields=EVENT_TYPES["order.shipped"].schema)
    errors = schema_errors(
        {
            "order": {"id": 1},
            "customer": None,
            "subscription": None,
            "password": "x",
        },
        schema,
    )
    assert "password: undocumented" in errors
    assert "customer: null, but not nullable" in errors
    assert any(e.startswith("order.id: expected string") for e in errors)
    assert "order.number: documented but missing" in errors


def test_payloads_never_carry_questionnaire_answers(
    every_event_payload: dict[str, list[dict[str, Any]]],
) -> None:
    assert "chest pain" not in json.dumps(every_event_payload)
