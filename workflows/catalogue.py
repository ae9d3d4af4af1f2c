"""The event catalogue: every event type, the fields of its payload (the data reference) and
what makes it fire. Pure data and functions over it: no model, no database, no broker."""

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from django.conf import settings

FieldType = Literal["string", "number", "boolean", "date", "datetime", "object", "array"]


@dataclass(frozen=True, slots=True)
class Field:
    """One variable of a payload schema (the "data reference").

    Objects list their `fields`; arrays describe one element as `items`. Templates may only
    use scalar leaves; `{{order.lineItems.0.name}}` indexes into an array. An object without
    `fields` is free-form (caller-defined data such as a custom webhook's `data`).
    `nullable`: the value may be null (e.g. no customer matched an inbound number).
    `sensitive`: clinical information; keep it out of SMS bodies (filters may use it).
    """

    type: FieldType
    description: str = ""
    example: Any = None
    fields: Mapping[str, "Field"] | None = None
    items: "Field | None" = None
    nullable: bool = False
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    category: str
    # As written in the catalogue; a `{placeholder}` names a setting's value (CONFIGURED).
    description_template: str
    # Top-level payload keys (e.g. "customer", "order") and what they hold.
    schema: Mapping[str, Field] = field(default_factory=dict)
    # What the event is about, for re-reading current data after a delay ("order", …).
    subject: str = ""

    @property
    def description(self) -> str:
        """What makes the event fire, with the configured values filled in ("24 hours
        before"): read when shown, so the catalogue stays data and a changed setting shows."""
        return configured_text(self.description_template)


def _amount(value: float, unit: str) -> str:
    return f"{value:g} {unit}" + ("" if value == 1 else "s")


def _hours(value: float) -> str:
    return (
        _amount(value, "hour")
        if float(value).is_integer()
        else _amount(round(value * 60), "minute")
    )


# Placeholders a description may use, and the setting each shows as people say it.
CONFIGURED: dict[str, Callable[[], str]] = {
    "renewal_lead": lambda: _amount(settings.CAREFLOW_RENEWAL_LEAD_DAYS, "day"),
    "appointment_reminder_lead": lambda: _hours(settings.CAREFLOW_APPOINTMENT_REMINDER_HOURS),
}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def configured_text(text: str) -> str:
    """`text` with each known `{placeholder}` replaced by its setting's current value."""
    return _PLACEHOLDER.sub(
        lambda match: CONFIGURED[match[1]]() if match[1] in CONFIGURED else match[0], text
    )


# --- schema building blocks: one definition per idea -----------------------------------------


def _string(description: str, example: Any, **options: Any) -> Field:
    return Field("string", description, example, **options)


def _number(description: str, example: Any, **options: Any) -> Field:
    return Field("number", description, example, **options)


def _boolean(description: str, example: bool, **options: Any) -> Field:
    return Field("boolean", description, example, **options)


def _date(description: str, example: str, **options: Any) -> Field:
    return Field("date", description, example, **options)


def _datetime(description: str, example: str, **options: Any) -> Field:
    return Field("datetime", description, example, **options)


def _object(description: str, fields: Mapping[str, Field], **options: Any) -> Field:
    return Field("object", description, fields=fields, **options)


def _array(description: str, items: Field, **options: Any) -> Field:
    return Field("array", description, items=items, **options)


def _id(what: str, example: str) -> Field:
    return _string(f"Unique id of the {what} (a UUID).", example)


def _timestamps(what: str) -> dict[str, Field]:
    return {
        "createdAt": _datetime(f"When the {what} was created (ISO 8601, UTC).", _CREATED_AT),
        "updatedAt": _datetime(f"When the {what} was last changed (ISO 8601, UTC).", _UPDATED_AT),
    }


def _status(what: str, choices: Sequence[str], example: str) -> Field:
    return _string(f"Status of the {what}: one of {', '.join(choices)}.", example)


_CREATED_AT = "2025-03-01T14:05:09.120000+00:00"
_UPDATED_AT = "2025-03-02T09:30:00+00:00"
_PHONE = "+14155550123"

ADDRESS = _object(
    "A postal address.",
    {
        "address1": _string("Street address.", "100 Main St"),
        "address2": _string("Apartment, suite, unit (may be empty).", "Apt 4"),
        "city": _string("City.", "Tampa"),
        "province": _string("State or province.", "Florida"),
        "provinceCode": _string("State or province code.", "FL"),
        "postalCode": _string("ZIP or postal code.", "33602"),
        "countryCode": _string("Country, ISO 3166-1 alpha-2.", "US"),
    },
)

CUSTOMER_SUMMARY_FIELDS: dict[str, Field] = {
    "id": _id("patient", "7f6c2a4e-9a55-4c1e-8c0e-3b1d1f2a9c11"),
    "email": _string("Email address (may be empty).", "ann.lee@example.com"),
    "phone": _string("Mobile phone in E.164 form (may be empty).", _PHONE),
    "firstName": _string("First name.", "Ann"),
    "lastName": _string("Last name (may be empty).", "Lee"),
}

CUSTOMER_SUMMARY = _object("The patient, in short.", CUSTOMER_SUMMARY_FIELDS)

CUSTOMER = _object(
    "The patient (the platform calls patients customers).",
    {
        **CUSTOMER_SUMMARY_FIELDS,
        "gender": _string("female, male, other, unknown, or empty.", "female"),
        "dob": _date("Date of birth (YYYY-MM-DD).", "1985-07-14", nullable=True),
        "timezone": _string("IANA time zone (may be empty).", "America/New_York"),
        "language": _string(
            "Preferred language, a BCP 47 primary tag such as es (may be empty: the "
            "clinic's fallback language).",
            "es",
        ),
        "defaultAddress": ADDRESS,
        "source": _string("Where the patient signed up (may be empty).", "patient-portal"),
        "acceptMarketing": _boolean(
            "Whether a marketing text may rely on the patient's consent history: their latest "
            "marketing decision is an opt-in in writing, with no STOP since.",
            False,
        ),
        "isTest": _boolean("A test patient (live test sends from the builder).", False),
        **_timestamps("patient"),
    },
)

LINE_ITEM = _object(
    "One product in an order or cart.",
    {
        "name": _string("Product name.", "Vitamin D 2000 IU"),
        "productId": _string("Product id in the shop.", "prod_vitd_2000"),
        "price": _number("Unit price in dollars; format it with | money.", 49.0),
        "quantity": _number("Quantity.", 1),
        "isSubscription": _boolean("Whether the item is bought on subscription.", False),
    },
)

PRODUCT = _object(
    "The product subscribed to.",
    {
        "id": _string("Product id in the shop.", "prod_vitd_2000"),
        "name": _string("Product name.", "Vitamin D 2000 IU"),
    },
)

ORDER_STATUSES = (
    "awaiting_payment",
    "processing",
    "awaiting_requirements",
    "awaiting_requisition",
    "awaiting_script",
    "awaiting_fulfillment",
    "awaiting_shipment",
    "shipped",
)

ORDER = _object(
    "The order.",
    {
        "id": _id("order", "0b0c1c5e-51a4-4a1d-9a61-7d8a4b7d2e55"),
        "number": _string("Order number shown to the patient.", "100234"),
        "status": _status("order", ORDER_STATUSES, "shipped"),
        "statusHistory": _array(
            "Every status the order has had, oldest first.",
            _object(
                "One status change.",
                {
                    "status": _string("The status entered.", "shipped"),
                    "at": _datetime("When (ISO 8601, UTC).", _UPDATED_AT),
                },
            ),
        ),
        "customer": CUSTOMER_SUMMARY,
        "lineItems": _array("The products ordered.", LINE_ITEM),
        "shippingAddress": ADDRESS,
        "totalAmount": _number("Total charged in dollars; format it with | money.", 49.0),
        "discountAmount": _number("Discount given in dollars.", 5.0),
        "coupon": _string("Coupon code used (may be empty).", "WELCOME5"),
        "trackingNumber": _string("Carrier tracking number (may be empty).", "1Z999AA10123456784"),
        **_timestamps("order"),
    },
)

SUBSCRIPTION_STATUSES = ("created", "active", "paused", "cancelled")

SUBSCRIPTION = _object(
    "The subscription.",
    {
        "id": _id("subscription", "5a1f3e2d-8b7c-4d6e-9f01-2a3b4c5d6e7f"),
        "customer": CUSTOMER_SUMMARY,
        "product": PRODUCT,
        "status": _status("subscription", SUBSCRIPTION_STATUSES, "active"),
        "price": _number("Price per cycle in dollars; format it with | money.", 49.0),
        "intervalDays": _number("Days between renewals.", 30),
        "currentCycle": _number("Number of the cycle now running (the first is 1).", 3),
        "nextCycleDate": _date(
            "Date of the next renewal (YYYY-MM-DD).", "2025-04-01", nullable=True
        ),
        **_timestamps("subscription"),
    },
)

CART = _object(
    "The cart.",
    {
        "id": _id("cart", "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f"),
        "customer": CUSTOMER_SUMMARY,
        "lineItems": _array("The products in the cart.", LINE_ITEM),
        "checkoutUrl": _string(
            "Link back to the checkout.", "https://shop.example.com/checkout/c2d3"
        ),
        "checkedOutAt": _datetime(
            "When the patient started checkout (ISO 8601, UTC).", _UPDATED_AT, nullable=True
        ),
        **_timestamps("cart"),
    },
)

QUESTIONNAIRE = _object(
    "The submitted questionnaire (never the answers: they can be clinical).",
    {
        "id": _id("submission", "9d8c7b6a-5e4f-4a3b-8c2d-1e0f9a8b7c6d"),
        "name": _string("Questionnaire name.", "Intake questionnaire"),
        "submittedAt": _datetime("When it was submitted (ISO 8601, UTC).", _CREATED_AT),
    },
)

PRESCRIPTION_STATUSES = ("created", "fulfilled")

PRESCRIPTION = _object(
    "The prescription.",
    {
        "id": _id("prescription", "3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6a7b"),
        "status": _status("prescription", PRESCRIPTION_STATUSES, "fulfilled"),
        "medication": _object(
            "The medication prescribed.",
            {
                "name": _string(
                    "Medication name. Clinical: keep it out of SMS bodies.",
                    "Atorvastatin 10 mg",
                    sensitive=True,
                )
            },
        ),
        **_timestamps("prescription"),
    },
)

REQUISITION_STATUSES = ("created", "submitted", "collected", "resulted", "cancelled")

REQUISITION = _object(
    "The lab requisition.",
    {
        "id": _id("requisition", "6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e"),
        "status": _status("requisition", REQUISITION_STATUSES, "submitted"),
        "labName": _string("The lab that draws the sample.", "Quest Diagnostics"),
        "testPanel": _string(
            "Tests ordered. Clinical: keep it out of SMS bodies.",
            "Lipid panel",
            sensitive=True,
        ),
        **_timestamps("requisition"),
    },
)

APPOINTMENT_STATUSES = (
    "booked",
    "confirmed",
    "cancelled",
    "completed",
    "no_show",
    "reschedule_requested",
)

APPOINTMENT = _object(
    "The appointment.",
    {
        "id": _id("appointment", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
        "status": _status("appointment", APPOINTMENT_STATUSES, "confirmed"),
        "startsAt": _datetime("Start time (ISO 8601, UTC).", "2025-03-05T15:00:00+00:00"),
        "startsAtLocal": _datetime(
            "Start time in the patient's time zone (else their address's state's, else the "
            'clinic\'s), with its offset; format with | date:"%b %-d at %-I:%M %p".',
            "2025-03-05T10:00:00-05:00",
        ),
        "timezone": _string("The time zone of startsAtLocal.", "America/New_York"),
        "durationMinutes": _number("Length in minutes.", 30),
        "providerName": _string("Who sees the patient (may be empty).", "Dr. Maria Gomez"),
        "location": _string("Where, for in-person visits (may be empty).", "12 Bay St, Tampa"),
        "videoUrl": _string(
            "Link for video visits (may be empty).", "https://meet.example.com/r/8fd2"
        ),
        **_timestamps("appointment"),
    },
)

LEAD_STATUSES = ("created", "converted", "lost")

LEAD = _object(
    "The lead (a prospective patient).",
    {
        "id": _id("lead", "4c5d6e7f-8a9b-4c0d-9e1f-2a3b4c5d6e7f"),
        "firstName": _string("First name.", "Sam"),
        "lastName": _string("Last name (may be empty).", "Rivera"),
        "email": _string("Email address (may be empty).", "sam.rivera@example.com"),
        "phone": _string("Mobile phone in E.164 form (may be empty).", "+14155550188"),
        "source": _string("Where the lead came from (may be empty).", "facebook-ad"),
        "status": _status("lead", LEAD_STATUSES, "created"),
        **_timestamps("lead"),
    },
)

TASK_STATUSES = ("open", "completed", "cancelled")

TASK = _object(
    "The staff task.",
    {
        "id": _id("task", "8e9f0a1b-2c3d-4e4f-8a5b-6c7d8e9f0a1b"),
        "title": _string("What is to be done.", "Call patient about missing ID"),
        "status": _status("task", TASK_STATUSES, "open"),
        "dueAt": _datetime(
            "When it is due (ISO 8601, UTC).", "2025-03-03T17:00:00+00:00", nullable=True
        ),
        **_timestamps("task"),
    },
)

MESSAGE = _object(
    "The inbound message.",
    {
        "sid": _string(
            "The provider's message id (may be empty).", "SM0123456789abcdef0123456789abcdef"
        ),
        "channel": _string("SMS or WEB.", "SMS"),
        "body": _string("The text the patient sent.", "Can I move my appointment to Friday?"),
        "from": _string("Sender's number (E.164 when it is one).", _PHONE),
        "to": _string("The clinic number it was sent to.", "+15005550006"),
        "receivedAt": _datetime("When it was received (ISO 8601, UTC).", _CREATED_AT),
        "customer": replace(
            CUSTOMER_SUMMARY,
            description="The patient whose phone sent it; null when no patient matches.",
            nullable=True,
        ),
    },
)

LINK = _object(
    "The short link the patient clicked (in a text the clinic sent).",
    {
        "url": _string(
            "The original link, as written in the message.", "https://sunrise.example/book"
        ),
        "clickedAt": _datetime("When it was clicked (ISO 8601, UTC).", _UPDATED_AT),
    },
)

SENT_MESSAGE = _object(
    "The message the link was in.",
    {"id": _id("message", "6f1c2b9e-3f4a-4d5b-9c8e-1a2b3c4d5e6f")},
)

WEBHOOK = _object(
    "The custom event as posted to the clinic's webhook endpoint.",
    {
        "name": _string("The event name the caller chose.", "lab_results_ready"),
        # No `fields`: free-form, any key the caller sends may be used.
        "data": Field(
            "object",
            "Free-form data sent by the caller; use its keys as sent, e.g. webhook.data.kitId.",
            {"kitId": "KIT-2291", "status": "ready"},
        ),
    },
)

_CUSTOMER_OR_NULL = replace(
    CUSTOMER, description="The patient, when there is one; otherwise null.", nullable=True
)

CUSTOMER_SCHEMA: dict[str, Field] = {"customer": CUSTOMER}
ORDER_SCHEMA: dict[str, Field] = {
    "order": ORDER,
    "customer": CUSTOMER,
    "subscription": replace(
        SUBSCRIPTION,
        description="The subscription a renewal order belongs to; null for one-off orders.",
        nullable=True,
    ),
}


def _schema(key: str, entity: Field, customer: Field = CUSTOMER) -> dict[str, Field]:
    return {key: entity, "customer": customer}


# --- the catalogue ---------------------------------------------------------------------------

_ORDER_STATUS_DESCRIPTIONS = {
    "subscription_cycle": "A subscription renewal created a new order.",
    "awaiting_payment": "The order is waiting for payment.",
    "processing": "Payment received; the order is being processed.",
    "awaiting_requirements": "The order waits for information from the patient.",
    "awaiting_requisition": "The order waits for a lab requisition.",
    "awaiting_script": "The order waits for a prescription.",
    "awaiting_fulfillment": "The order waits for the pharmacy to fulfil it.",
    "awaiting_shipment": "The order is packed and waits for the carrier.",
    "shipped": "The order was handed to the carrier (tracking number available).",
}


def _events(
    category: str, subject: str, schema: Mapping[str, Field], described: Mapping[str, str]
) -> tuple[EventType, ...]:
    return tuple(
        EventType(name, category, description, schema, subject)
        for name, description in described.items()
    )


CATALOGUE: tuple[EventType, ...] = (
    *_events(
        "Customer",
        "customer",
        CUSTOMER_SCHEMA,
        {"customer.signup": "A patient account was created."},
    ),
    EventType(
        "customer.updated",
        "Customer",
        "A patient's profile (name, contact details, address, …) changed.",
        {
            **CUSTOMER_SCHEMA,
            "changedFields": _array(
                "The customer fields that changed, as variable paths.",
                _string("A changed field.", "phone"),
            ),
        },
        "customer",
    ),
    *_events("Order", "order", ORDER_SCHEMA, {"order.created": "A new order was placed."}),
    *_events(
        "Order",
        "order",
        ORDER_SCHEMA,
        {f"order.{status}": text for status, text in _ORDER_STATUS_DESCRIPTIONS.items()},
    ),
    *_events(
        "Subscription",
        "subscription",
        _schema("subscription", SUBSCRIPTION),
        {
            "subscription.created": "A subscription was created.",
            "subscription.active": "A subscription became active.",
            "subscription.paused": "A subscription was paused.",
            "subscription.cancelled": "A subscription was cancelled.",
            "subscription.upcoming_renewal": "An active subscription renews soon "
            "({renewal_lead} before its next cycle date; once per cycle).",
        },
    ),
    *_events(
        "Cart",
        "cart",
        _schema("cart", CART),
        {"cart.checkout": "A patient started checkout (e.g. for abandoned-cart reminders)."},
    ),
    *_events(
        "Questionnaire",
        "questionnaire",
        _schema("questionnaire", QUESTIONNAIRE),
        {"questionnaire.submitted": "A patient submitted a questionnaire."},
    ),
    *_events(
        "Prescription",
        "prescription",
        _schema("prescription", PRESCRIPTION),
        {
            "prescription.created": "A prescription was written.",
            "prescription.fulfilled": "The pharmacy fulfilled a prescription.",
        },
    ),
    *_events(
        "Requisition",
        "requisition",
        _schema("requisition", REQUISITION),
        {
            "requisition.created": "A lab requisition was created for a patient.",
            "requisition.submitted": "The requisition was sent to the lab.",
            "requisition.collected": "The lab collected the patient's sample.",
            "requisition.resulted": "The lab's results are in.",
            "requisition.cancelled": "The requisition was cancelled.",
        },
    ),
    *_events(
        "Appointment",
        "appointment",
        _schema("appointment", APPOINTMENT),
        {
            "appointment.booked": "An appointment was booked.",
            "appointment.confirmed": "An appointment was confirmed.",
            "appointment.cancelled": "An appointment was cancelled.",
            "appointment.completed": "An appointment took place.",
            "appointment.no_show": "The patient did not attend an appointment.",
            "appointment.reschedule_requested": "The patient asked to move an appointment "
            "(e.g. replied to a reminder); staff arrange a new time.",
            "appointment.reminder": "A booked or confirmed appointment starts soon "
            "({appointment_reminder_lead} before; again if rescheduled).",
        },
    ),
    *_events(
        "Lead",
        "lead",
        _schema("lead", LEAD, _CUSTOMER_OR_NULL),
        {
            "lead.created": "A lead (prospective patient) was captured.",
            "lead.converted": "A lead became a patient (customer is that patient).",
            "lead.lost": "A lead was marked as lost.",
        },
    ),
    *_events(
        "Task",
        "task",
        _schema("task", TASK, _CUSTOMER_OR_NULL),
        {
            "task.created": "A staff task was created.",
            "task.completed": "A staff task was completed.",
            "task.cancelled": "A staff task was cancelled.",
        },
    ),
    *_events(
        "Message",
        "customer",
        _schema("message", MESSAGE, _CUSTOMER_OR_NULL),
        {"message.inbound": "A patient sent an SMS or chat message to the clinic."},
    ),
    EventType(
        "message.link_clicked",
        "Message",
        "A patient clicked a short link in a text the clinic sent (a goal or exit: “clicked "
        "within N days” is a goal with a window of N days).",
        {"link": LINK, "message": SENT_MESSAGE, "customer": CUSTOMER},
        "customer",
    ),
    *_events(
        "Webhook",
        "customer",
        _schema("webhook", WEBHOOK),
        {"webhook.event": "A custom event was posted to the clinic's webhook endpoint."},
    ),
)

EVENT_TYPES: dict[str, EventType] = {event.name: event for event in CATALOGUE}


def _walk(fields: Mapping[str, Field], prefix: str = "") -> Iterator[tuple[str, Field]]:
    for name, node in fields.items():
        path = f"{prefix}{name}"
        yield path, node
        if node.type == "object" and node.fields:
            yield from _walk(node.fields, f"{path}.")
        elif node.type == "array" and node.items is not None:
            yield f"{path}.0", node.items
            if node.items.type == "object" and node.items.fields:
                yield from _walk(node.items.fields, f"{path}.0.")


# The prefix of a clinic's own event types (`custom.lab_results_ready`), declared in the admin
# (workflows.custom_events builds their EventType; this module stays data).
CUSTOM_PREFIX = "custom."
CUSTOM_CATEGORY = "Custom"


def _event_of(event_type: "str | EventType") -> EventType | None:
    """The catalogue's type of this name, or the EventType given (a clinic's custom type,
    resolved by workflows.custom_events.event_types)."""
    return event_type if isinstance(event_type, EventType) else EVENT_TYPES.get(event_type)


def schema_paths(event_type: "str | EventType") -> list[tuple[str, Field]]:
    """Every path of the event's schema, objects and arrays included, in schema order."""
    event = _event_of(event_type)
    return list(_walk(event.schema)) if event else []


def _example(node: Field) -> Any:
    if node.type == "object":
        return {name: _example(child) for name, child in (node.fields or {}).items()}
    if node.type == "array":
        return [_example(node.items)] if node.items is not None else []
    return node.example


def schema_example(event_type: "str | EventType") -> dict[str, Any]:
    """A payload made of the schema's examples: what the data reference shows, and what test
    mode uses for the parts a test patient has no record of."""
    event = _event_of(event_type)
    return {name: _example(node) for name, node in event.schema.items()} if event else {}


def schema_variables(event_type: "str | EventType") -> list[tuple[str, Field]]:
    """The scalar variables a template can use, e.g. ("order.lineItems.0.name", Field)."""
    return [(path, node) for path, node in schema_paths(event_type) if node.type not in _CONTAINERS]


_CONTAINERS = ("object", "array")

# What a path below a free-form object (a custom webhook's data) resolves to.
FREE_FORM_VALUE = Field("string", "A value from caller-defined data; its type is not known.")


def schema_field(event_type: "str | EventType", path: str) -> Field | None:
    """The field at `path` (digits index arrays), or None when the event has no such field."""
    event = _event_of(event_type)
    if event is None or not path:
        return None
    node: Field | None = _object("", event.schema)
    for part in path.split("."):
        if node is None or not part:
            return None
        if node.type == "object":
            if node.fields is None:
                return FREE_FORM_VALUE
            node = node.fields.get(part)
        elif node.type == "array" and part.isdigit():
            node = node.items
        else:
            return None
    return node


def event_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Model/form choices grouped by category, in catalogue order."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for event in CATALOGUE:
        groups.setdefault(event.category, []).append((event.name, event.name))
    return list(groups.items())
