"""The custom-event webhook: a clinic's own systems post events that trigger workflows.

    POST /webhooks/events/<organization uuid>/
    Authorization: Bearer <the clinic's webhook token>
    {"name": "lab_results_ready", "data": {...}, "customer": {"id" | "email" | "phone": ...},
     "idempotencyKey": "..."}

Answers: 202 recorded, 200 already recorded under this idempotency key, 400 with a message
naming what is wrong, 401 bad or missing token (also for an unknown clinic, so the answer
does not reveal which clinics exist), 413 body over 64 KB. Client mistakes never cause a 500.
"""

import json
import logging
from http import HTTPStatus
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from patients.inputs import json_constant_refuse, json_float_finite, json_problem
from patients.models import Organization
from patients.services import (
    CustomerNotFound,
    customer_resolve,
    organization_webhook_token_valid,
    webhook_event_record,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_NAME_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_DATA_DEPTH = 20


class BadRequest(ValueError):
    """A request the caller must fix; the message says what."""


def _error(status: HTTPStatus, message: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    if status == HTTPStatus.UNAUTHORIZED:
        response["WWW-Authenticate"] = 'Bearer realm="careflow"'
    return response


def _bearer_token(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _check_storable(value: Any, where: str) -> None:
    """Refuse what PostgreSQL cannot store or look up (a NUL, a lone surrogate: a 500 on
    insert, or on the customer lookup), other control characters, and absurd nesting."""
    problem = json_problem(value, max_depth=MAX_DATA_DEPTH)
    if problem:
        raise BadRequest(f"{where} {problem}")


def _parse(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON object")
    try:
        document = json.loads(
            body.decode("utf-8"), parse_float=json_float_finite, parse_constant=json_constant_refuse
        )
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object")
    _check_storable(document, "body")
    return document


def _string(document: dict[str, Any], key: str, max_length: int) -> str:
    if key not in document:
        raise BadRequest(f"{key} is required")
    value = document[key]
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key} must be a non-empty string")
    if len(value) > max_length:
        raise BadRequest(f"{key} is longer than {max_length} characters")
    if not value.isprintable():
        raise BadRequest(f"{key} contains control characters")
    return value


def _customer_lookup(document: dict[str, Any]) -> dict[str, str]:
    customer = document.get("customer")
    if customer is None:
        raise BadRequest('customer is required, e.g. {"id": "…"}, {"email": "…"} or {"phone": "…"}')
    if not isinstance(customer, dict):
        raise BadRequest("customer must be an object with an id, email or phone")
    lookup: dict[str, str] = {}
    for key in ("id", "email", "phone"):
        value = customer.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise BadRequest(f"customer.{key} must be a string")
        lookup[key] = value
    if not lookup:
        raise BadRequest("customer needs an id, email or phone")
    return lookup


# The bearer token is a local variable here: an error report must not list it.
@sensitive_variables("token")
@csrf_exempt
@require_POST
def custom_event(request: HttpRequest, organization_uuid: Any) -> JsonResponse:
    organization = Organization.objects.filter(uuid=organization_uuid).first()
    token = _bearer_token(request)
    if organization is None or not organization_webhook_token_valid(
        organization=organization, token=token
    ):
        logger.warning("rejected custom event for organization %s: bad token", organization_uuid)
        return _error(HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token")

    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _error(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
    if declared > MAX_BODY_BYTES:
        return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the body is larger than 64 KB")
    # Read at most one byte past the limit: a body longer than declared is not buffered.
    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the body is larger than 64 KB")

    try:
        document = _parse(body)
        name = _string(document, "name", MAX_NAME_LENGTH)
        idempotency_key = _string(document, "idempotencyKey", MAX_IDEMPOTENCY_KEY_LENGTH)
        data = document.get("data", {})
        if not isinstance(data, dict):
            raise BadRequest("data must be a JSON object")
        lookup = _customer_lookup(document)
        patient = customer_resolve(organization=organization, **lookup)
    except BadRequest as exc:
        return _error(HTTPStatus.BAD_REQUEST, str(exc))
    except ValidationError as exc:
        return _error(HTTPStatus.BAD_REQUEST, exc.messages[0])
    except CustomerNotFound as exc:
        return _error(HTTPStatus.BAD_REQUEST, str(exc))

    event, created = webhook_event_record(
        organization=organization,
        name=name,
        data=data,
        patient=patient,
        idempotency_key=idempotency_key,
    )
    return JsonResponse(
        {"status": "accepted" if created else "duplicate", "event": str(event.uuid)},
        status=HTTPStatus.ACCEPTED if created else HTTPStatus.OK,
    )
