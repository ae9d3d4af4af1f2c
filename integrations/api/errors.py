"""One JSON shape for every 4xx the API answers, DRF's own included:

    {"error": {"type": "invalid_request", "message": "…", "fields": {"phone": ["…"]}}}

`type` is a stable machine-readable word (the table below); `message` is for the person
reading it; `fields` (validation errors only) maps each field (dotted for nested ones,
`consents.0.consent_text`) to its problems.
"""

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler, set_rollback

from integrations.api.refusals import ApiError

# DRF's exception codes, as our error types.
TYPES = {
    "parse_error": "parse_error",
    "invalid": "invalid_request",
    "not_authenticated": "authentication_failed",
    "authentication_failed": "authentication_failed",
    "permission_denied": "permission_denied",
    "not_found": "not_found",
    "method_not_allowed": "method_not_allowed",
    "not_acceptable": "not_acceptable",
    "unsupported_media_type": "unsupported_media_type",
    "throttled": "rate_limited",
}


def error_body(
    type: str, message: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def _flatten(detail: Any, path: str = "") -> dict[str, list[str]]:
    """DRF's nested validation detail as {"dotted.field": ["message", …]}."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            child = path or "non_field_errors" if key == "non_field_errors" else f"{path}.{key}"
            flat.update(_flatten(value, child.lstrip(".")))
    elif isinstance(detail, list) and any(isinstance(item, (dict, list)) for item in detail):
        for index, item in enumerate(detail):
            if item:
                flat.update(_flatten(item, f"{path}.{index}".lstrip(".")))
    else:
        items = detail if isinstance(detail, list) else [detail]
        flat[path or "non_field_errors"] = [str(item) for item in items]
    return flat


def _validation_body(exc: exceptions.ValidationError) -> dict[str, Any]:
    detail = exc.detail
    if not isinstance(detail, dict):
        messages = detail if isinstance(detail, list) else [detail]
        return error_body("invalid_request", " ".join(str(m) for m in messages))
    fields = _flatten(detail)
    first_field, first = next(iter(fields.items()), ("", [""]))
    where = "" if first_field == "non_field_errors" else f"{first_field}: "
    more = f" (and {len(fields) - 1} more field(s))" if len(fields) > 1 else ""
    return error_body("invalid_request", f"{where}{first[0]}{more}", fields)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """REST_FRAMEWORK's EXCEPTION_HANDLER: DRF's answer (its status and headers: Retry-After,
    WWW-Authenticate), in our shape. Anything else stays an exception (a 500, reported)."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        response.data = _validation_body(exc)
    else:
        type = (
            exc.type if isinstance(exc, ApiError) else TYPES.get(exc.default_code, exc.default_code)
        )
        message = str(exc.detail)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            message = f"Too many requests with this API key; retry in {int(exc.wait) + 1} s."
        response.data = error_body(type, message)
    set_rollback()
    return response


class NotFoundView(APIView):
    """Every other path under /api/v1/: a 404 in the API's shape, not the site's HTML page."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    schema = None

    def _nothing(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        if not request.path.endswith("/"):
            # A POST cannot be redirected to the slashed URL (APPEND_SLASH); say so instead.
            raise exceptions.NotFound(f"API paths end with a slash: {request.path}/")
        raise exceptions.NotFound("There is no such API endpoint; see /api/v1/docs/.")

    get = post = put = patch = delete = _nothing


# --- the schema ---------------------------------------------------------------------------

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "type": serializers.CharField(
                    help_text="invalid_request, parse_error, body_too_large, "
                    "authentication_failed, permission_denied, insufficient_scope, not_found, "
                    "method_not_allowed, unsupported_media_type, conflict, "
                    "idempotency_key_reused, rate_limited"
                ),
                "message": serializers.CharField(),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()),
                    required=False,
                    help_text="Validation errors by field (dotted for nested fields).",
                ),
            },
        )
    },
)


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error component for these statuses, for `extend_schema(responses=…)`."""
    descriptions = {
        400: "Invalid request (the fields say which and why), or a body that is not JSON.",
        401: "Missing, unknown or revoked API key.",
        403: "The key's scope does not allow this (a read key writing).",
        404: "No such object in this key's clinic.",
        405: "Method not allowed.",
        409: "Conflicts with a record that exists (e.g. an order number in use).",
        413: "Body too large.",
        415: "Send Content-Type: application/json.",
        422: "The Idempotency-Key was used for another request.",
        429: "Rate limit reached; see Retry-After.",
    }
    return {
        status: OpenApiResponse(ErrorSerializer, description=descriptions[status])
        for status in statuses
    }
