"""Event payloads in the field names of the platform's Customer Data Reference (camelCase).

A payload is a JSON snapshot taken when the event is recorded; it never carries secrets.
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from patients.models import Order, Patient


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value else None


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def customer_summary(patient: Patient) -> dict[str, Any]:
    """The short customer object nested in orders, subscriptions and carts."""
    return {
        "id": str(patient.uuid),
        "email": patient.email,
        "phone": patient.phone,
        "firstName": patient.first_name,
        "lastName": patient.last_name,
    }


def customer_payload(patient: Patient) -> dict[str, Any]:
    return {
        **customer_summary(patient),
        "gender": patient.gender,
        "dob": _iso(patient.dob),
        "timezone": patient.timezone,
        "defaultAddress": {
            "address1": patient.address1,
            "address2": patient.address2,
            "city": patient.city,
            "province": patient.province,
            "provinceCode": patient.province_code,
            "postalCode": patient.postal_code,
            "countryCode": patient.country_code,
        },
        "source": patient.source,
        "acceptMarketing": patient.accept_marketing,
        "isTest": patient.is_test,
        "createdAt": _iso(patient.created_at),
        "updatedAt": _iso(patient.updated_at),
    }


def order_payload(order: Order) -> dict[str, Any]:
    return {
        "id": str(order.uuid),
        "number": order.number,
        "status": order.status,
        "statusHistory": list(order.status_history),
        "customer": customer_summary(order.patient),
        "lineItems": list(order.line_items),
        "shippingAddress": dict(order.shipping_address),
        "totalAmount": _money(order.total_amount),
        "discountAmount": _money(order.discount_amount),
        "coupon": order.coupon,
        "trackingNumber": order.tracking_number,
        "createdAt": _iso(order.created_at),
        "updatedAt": _iso(order.updated_at),
    }


def order_event_payload(order: Order) -> dict[str, Any]:
    """Order events carry the full customer too, so `{{customer.phone}}` works on them."""
    return {"order": order_payload(order), "customer": customer_payload(order.patient)}


def customer_event_payload(patient: Patient) -> dict[str, Any]:
    return {"customer": customer_payload(patient)}
