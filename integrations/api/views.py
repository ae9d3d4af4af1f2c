"""The API's views: thin, over the same models the admin writes, so the records' post_save
receivers record their events exactly as for a change made in the admin.

`ApiView` is the base of every key-authenticated endpoint (authentication, scope, rate limit,
the clinic's objects only, errors in one shape); `ApiView.write` runs a change once per
Idempotency-Key, in one transaction, audited as the key's. New endpoints (custom events,
workflow runs) subclass it the same way.
"""

import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, models, transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, serializers
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from integrations.api.auth import ApiKeyAuthentication, ApiKeyScope, request_api_key
from integrations.api.errors import error_responses
from integrations.api.idempotency import HEADER, api_write
from integrations.api.refusals import ApiError
from integrations.api.serializers import (
    AppointmentSerializer,
    CartSerializer,
    ConsentSerializer,
    OrderSerializer,
    PatientSerializer,
    PrescriptionSerializer,
    RecordSerializer,
    RequisitionSerializer,
    SubscriptionSerializer,
)
from integrations.api.services import consent_record, patient_signup_consents_record
from integrations.api.throttling import ApiKeyRateThrottle
from integrations.models import ApiKey
from patients.inputs import control_character_problem
from patients.models import Patient
from patients.phones import phone_to_e164

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Any unique string (a UUID): a retry with the same key and body replays the "
    "first answer (header Idempotent-Replayed: true) instead of writing again. Kept 24 hours.",
)
READ_ERRORS = error_responses(400, 401, 404, 429)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429)


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class ApiView(GenericAPIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [ApiKeyScope]
    throttle_classes = [ApiKeyRateThrottle]
    pagination_class = Pagination
    lookup_url_kwarg = "uuid"
    what = "object"

    @property
    def api_key(self) -> ApiKey:
        return request_api_key(self.request)

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if isinstance(getattr(self.request, "auth", None), ApiKey):
            context["api_key"] = self.request.auth
        return context

    def get_object(self) -> Any:
        """The clinic's object with the uuid in the URL; another clinic's is "not found",
        as if it did not exist."""
        value = self.kwargs[self.lookup_url_kwarg]
        try:
            object_uuid = uuid.UUID(str(value))
        except ValueError:
            raise exceptions.NotFound(f"“{value}” is not a {self.what} id (a UUID).") from None
        found = self.get_queryset().filter(uuid=object_uuid).first()
        if found is None:
            raise exceptions.NotFound(f"No {self.what} with this id.")
        return found

    def write(self, request: Request, change: Any) -> Response:
        """Run `change()` once per Idempotency-Key, in one transaction, audited as the key's;
        a uniqueness the validation missed (a race) is a 409, not a 500."""

        def guarded() -> Response:
            try:
                with transaction.atomic():
                    return change()
            except IntegrityError:
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    "conflict",
                    "This conflicts with a record created meanwhile; read it and retry.",
                ) from None

        return api_write(request=request, api_key=self.api_key, write=guarded)


class ClinicScoped(ApiView):
    """The objects of one model, the key's clinic's only."""

    model: type[models.Model] = Patient

    def get_queryset(self) -> Any:
        return self.model._default_manager.filter(organization_id=self.api_key.organization_id)

    def created(self, serializer: serializers.BaseSerializer) -> Response:
        return Response(serializer.data, status=HTTPStatus.CREATED)


class ClinicScopedDetail(ClinicScoped):
    """Read and update one object of the key's clinic, by uuid: never PUT or DELETE."""

    http_method_names = ["get", "patch", "options"]

    def get(self, request: Request, uuid: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request: Request, uuid: str) -> Response:
        def change() -> Response:
            instance = self.get_object()
            serializer = self.get_serializer(instance, data=request.data, partial=True)
            serializer.is_valid(raise_exception=True)
            serializer.save()
            return Response(serializer.data)

        return self.write(request, change)


# --- patients -----------------------------------------------------------------------------


def query_param(request: Request, name: str) -> str:
    """A filter from the query string, trimmed; one PostgreSQL cannot compare (a NUL) or no
    stored value can hold (control characters) is a 400, not a 500."""
    value = request.query_params.get(name, "").strip()
    problem = control_character_problem(value, multiline=False)
    if problem:
        raise serializers.ValidationError({name: [f"This {problem}."]})
    return value


def _filter_patients(queryset: Any, request: Request) -> Any:
    email = query_param(request, "email")
    if email:
        queryset = queryset.filter(email__iexact=email)
    phone = query_param(request, "phone")
    if phone:
        try:
            queryset = queryset.filter(phone=phone_to_e164(phone))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"phone": exc.messages}) from None
    return queryset


PATIENT_EXAMPLE = OpenApiExample(
    "Sign up with SMS consent",
    request_only=True,
    value={
        "first_name": "Ann",
        "last_name": "Lee",
        "email": "ann.lee@example.com",
        "phone": "(415) 555-0123",
        "source": "patient-portal",
        "consents": [
            {
                "channel": "sms",
                "purpose": "transactional",
                "action": "opt_in",
                "source": "signup_form",
                "consent_text": "I agree to receive texts about my orders and care.",
                "ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0",
            }
        ],
    },
)


@extend_schema_view(
    get=extend_schema(
        summary="List patients",
        description="The clinic's patients, newest last name first; filter by email or phone.",
        parameters=[
            OpenApiParameter("email", OpenApiTypes.STR, description="Exact, case-insensitive."),
            OpenApiParameter(
                "phone", OpenApiTypes.STR, description="Any format; compared as E.164."
            ),
        ],
        responses={200: PatientSerializer(many=True), **READ_ERRORS},
    ),
    post=extend_schema(
        summary="Create a patient",
        description="Records customer.signup (once, however often the request is retried "
        "with its Idempotency-Key). Inline `consents` are recorded in the same transaction.",
        parameters=[IDEMPOTENCY_PARAMETER],
        examples=[PATIENT_EXAMPLE],
        responses={201: PatientSerializer, **WRITE_ERRORS},
    ),
)
class PatientList(ClinicScoped):
    model = Patient
    serializer_class = PatientSerializer
    what = "patient"

    def get_queryset(self) -> Any:
        return super().get_queryset().order_by("created_at", "id")

    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(_filter_patients(self.get_queryset(), request))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def post(self, request: Request) -> Response:
        def change() -> Response:
            serializer = self.get_serializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            consents = serializer.validated_data.pop("consents", [])
            patient = serializer.save(organization_id=self.api_key.organization_id)
            patient_signup_consents_record(
                patient=patient, decisions=consents, api_key=self.api_key
            )
            return self.created(serializer)

        return self.write(request, change)


@extend_schema_view(
    get=extend_schema(summary="Read a patient", responses={200: PatientSerializer, **READ_ERRORS}),
    patch=extend_schema(
        summary="Update a patient",
        description="Changes the fields sent; a real change of the profile records "
        "customer.updated once. Consent is not a field: append it at …/consents/.",
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: PatientSerializer, **WRITE_ERRORS},
    ),
)
class PatientDetail(ClinicScopedDetail):
    model = Patient
    serializer_class = PatientSerializer
    what = "patient"


@extend_schema_view(
    get=extend_schema(
        summary="A patient's consent history",
        description="Every decision, newest first. Append-only: there is no update or delete.",
        responses={200: ConsentSerializer(many=True), **READ_ERRORS},
    ),
    post=extend_schema(
        summary="Record a consent decision",
        description="Appends an opt-in or opt-out; the next send checks it. A marketing "
        "opt-in needs the consent text the patient was shown.",
        parameters=[IDEMPOTENCY_PARAMETER],
        examples=[
            OpenApiExample(
                "Opt out of marketing texts",
                request_only=True,
                value={
                    "channel": "sms",
                    "purpose": "marketing",
                    "action": "opt_out",
                    "source": "patient_portal",
                },
            )
        ],
        responses={201: ConsentSerializer, **WRITE_ERRORS},
    ),
)
class PatientConsents(ApiView):
    serializer_class = ConsentSerializer
    what = "patient"
    http_method_names = ["get", "post", "options"]

    def get_queryset(self) -> Any:
        return Patient.objects.filter(organization_id=self.api_key.organization_id)

    def get(self, request: Request, uuid: str) -> Response:
        patient = self.get_object()
        page = self.paginate_queryset(patient.consents.order_by("-occurred_at", "-id"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def post(self, request: Request, uuid: str) -> Response:
        def change() -> Response:
            patient = self.get_object()
            serializer = self.get_serializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            record = consent_record(
                patient=patient, decision=serializer.validated_data, api_key=self.api_key
            )
            return Response(self.get_serializer(record).data, status=HTTPStatus.CREATED)

        return self.write(request, change)


# --- a patient's records, one line each ---------------------------------------------------


@dataclass(frozen=True)
class RecordEndpoint:
    path: str  # "orders"
    serializer: type[RecordSerializer]
    noun: str  # "order"
    plural: str  # "orders"
    events: str  # what a write records, for the docs


RECORD_ENDPOINTS = (
    RecordEndpoint(
        "orders",
        OrderSerializer,
        "order",
        "orders",
        "order.created when created; order.<status> when the status really changes "
        "(sending the same status again records nothing).",
    ),
    RecordEndpoint(
        "appointments",
        AppointmentSerializer,
        "appointment",
        "appointments",
        "appointment.booked when created; appointment.<status> on a status change.",
    ),
    RecordEndpoint(
        "subscriptions",
        SubscriptionSerializer,
        "subscription",
        "subscriptions",
        "subscription.created; subscription.active/paused/cancelled on a status change.",
    ),
    RecordEndpoint(
        "prescriptions",
        PrescriptionSerializer,
        "prescription",
        "prescriptions",
        "prescription.created; prescription.fulfilled when fulfilled.",
    ),
    RecordEndpoint(
        "requisitions",
        RequisitionSerializer,
        "requisition",
        "requisitions",
        "requisition.created; requisition.<status> on a status change.",
    ),
    RecordEndpoint(
        "carts",
        CartSerializer,
        "cart",
        "carts",
        "cart.checkout when checked_out_at is set (again for a new time).",
    ),
)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def record_views(endpoint: RecordEndpoint) -> tuple[type[ApiView], type[ApiView]]:
    """The list/create and read/update views of one record model."""
    serializer_class = endpoint.serializer
    model = serializer_class.Meta.model
    has_status = any(f.name == "status" for f in model._meta.get_fields())
    list_parameters = [
        OpenApiParameter("patient", OpenApiTypes.UUID, description="Only this patient's.")
    ]
    if has_status:
        list_parameters.append(OpenApiParameter("status", OpenApiTypes.STR))

    @extend_schema_view(
        get=extend_schema(
            summary=f"List {endpoint.plural}",
            parameters=list_parameters,
            responses={200: serializer_class(many=True), **READ_ERRORS},
        ),
        post=extend_schema(
            summary=f"Create {_a(endpoint.noun)}",
            description=f"Records {endpoint.events}",
            parameters=[IDEMPOTENCY_PARAMETER],
            responses={201: serializer_class, **WRITE_ERRORS},
        ),
    )
    class List(ClinicScoped):
        what = endpoint.noun

        def get_queryset(self) -> Any:
            return super().get_queryset().select_related("patient")

        def get(self, request: Request) -> Response:
            queryset = self.get_queryset().order_by("-created_at", "-id")
            patient = query_param(request, "patient")
            if patient:
                try:
                    queryset = queryset.filter(patient__uuid=uuid.UUID(patient))
                except ValueError:
                    raise serializers.ValidationError(
                        {"patient": ["Must be a patient id (a UUID)."]}
                    ) from None
            status = query_param(request, "status")
            if status and has_status:
                queryset = queryset.filter(status=status)
            page = self.paginate_queryset(queryset)
            return self.get_paginated_response(self.get_serializer(page, many=True).data)

        def post(self, request: Request) -> Response:
            def change() -> Response:
                serializer = self.get_serializer(data=request.data)
                serializer.is_valid(raise_exception=True)
                serializer.save(organization_id=self.api_key.organization_id)
                return self.created(serializer)

            return self.write(request, change)

    @extend_schema_view(
        get=extend_schema(
            summary=f"Read {_a(endpoint.noun)}",
            responses={200: serializer_class, **READ_ERRORS},
        ),
        patch=extend_schema(
            summary=f"Update {_a(endpoint.noun)}",
            description=f"Changes the fields sent. Records {endpoint.events}",
            parameters=[IDEMPOTENCY_PARAMETER],
            responses={200: serializer_class, **WRITE_ERRORS},
        ),
    )
    class Detail(ClinicScopedDetail):
        what = endpoint.noun

    for view, suffix in ((List, "List"), (Detail, "Detail")):
        view.model = model
        view.serializer_class = serializer_class
        view.__name__ = view.__qualname__ = f"{model.__name__}{suffix}"
    return List, Detail
