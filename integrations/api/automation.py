"""The API's way into the engine: post an event of one of the clinic's custom types, list its
workflows, start one for a patient, and read a run's status. Thin views over
`workflows.custom_events.custom_event_record`, `workflows.starts.workflow_start` and
`workflows.selectors.run_status`, on the same `ApiView` base as the records (key, scope,
rate limit, the clinic's objects only, one error shape, Idempotency-Key).

The services dedupe by an idempotency key of their own as well: the request's
Idempotency-Key when it has one (so a retry whose first answer was lost still finds the
same event or run, even after the API's replay record has been purged), else a fresh one.
"""

import uuid
from http import HTTPStatus
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from integrations.api.idempotency import HEADER
from integrations.api.refusals import ApiError
from integrations.api.serializers import PatientRefField, RefusesUnknownFields
from integrations.api.views import (
    IDEMPOTENCY_PARAMETER,
    READ_ERRORS,
    WRITE_ERRORS,
    ApiView,
    ClinicScoped,
    query_param,
)
from workflows.custom_events import custom_event_record
from workflows.models import CustomEventType, Event, Run, Workflow
from workflows.selectors import run_status
from workflows.starts import workflow_start

# Service refusals that are not about the request's fields: their status and error type.
_REFUSALS = {
    "disabled": (HTTPStatus.CONFLICT, "workflow_disabled"),
    "disabled_type": (HTTPStatus.CONFLICT, "event_type_disabled"),
    "trigger": (HTTPStatus.CONFLICT, "workflow_trigger_unknown"),
    "idempotency_key": (HTTPStatus.UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
}


def _service_key(request: Request) -> str:
    return request.headers.get(HEADER, "") or uuid.uuid4().hex


def _refused(exc: DjangoValidationError, field: str) -> Exception:
    """A service's ValidationError as the API's answer: a 409/422 for the refusals above,
    else a 400 naming `field` (data problems say their own place: "data.kitId: …")."""
    codes = {error.code for error in exc.error_list}
    for code, (status, type) in _REFUSALS.items():
        if code in codes:
            return ApiError(status, type, " ".join(exc.messages))
    return serializers.ValidationError({field: exc.messages})


# --- custom events ------------------------------------------------------------------------


class EventTypeSerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="type_name", read_only=True)
    schema = serializers.JSONField(read_only=True, help_text="JSON Schema of the event's data.")

    class Meta:
        model = CustomEventType
        fields = ["type", "label", "description", "schema", "enabled", "archived"]
        read_only_fields = fields


class EventSerializer(RefusesUnknownFields):
    type = serializers.CharField(
        max_length=80,
        help_text="One of the clinic's custom event types: custom.<name> (or the bare name).",
    )
    patient = PatientRefField(help_text="The patient's uuid.")
    data = serializers.JSONField(
        required=False, default=dict, help_text="The event's data, checked against its schema."
    )


class EventRecordedSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="The event's id.")
    type = serializers.CharField()
    patient = serializers.UUIDField()
    recorded = serializers.BooleanField(
        help_text="False when the Idempotency-Key had recorded this event before."
    )


@extend_schema_view(
    get=extend_schema(
        summary="List the clinic's custom event types",
        description="Declared in the admin (Workflows › Custom event types), each with the "
        "JSON Schema its data must follow.",
        responses={200: EventTypeSerializer(many=True), **READ_ERRORS},
    )
)
class EventTypeList(ClinicScoped):
    model = CustomEventType
    serializer_class = EventTypeSerializer
    what = "event type"

    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset().order_by("name", "id"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


@extend_schema_view(
    post=extend_schema(
        summary="Post a custom event for a patient",
        description="Records the event; the clinic's enabled workflows on that trigger start "
        "through the outbox, once, however often the request is retried with its "
        "Idempotency-Key. The data is checked against the type's schema, and a refusal says "
        "where (`data.kitId: 12 is not of type 'string'`).",
        parameters=[IDEMPOTENCY_PARAMETER],
        request=EventSerializer,
        examples=[
            OpenApiExample(
                "Lab results are in",
                request_only=True,
                value={
                    "type": "custom.lab_results_ready",
                    "patient": "0b9c7c9e-5d1e-4bb1-9c1e-6f0e3c1a2b3c",
                    "data": {"kitId": "KIT-2291"},
                },
            )
        ],
        responses={202: EventRecordedSerializer, **WRITE_ERRORS},
    )
)
class EventPost(ApiView):
    serializer_class = EventSerializer
    http_method_names = ["post", "options"]
    what = "event"

    def post(self, request: Request) -> Response:
        def change() -> Response:
            serializer = self.get_serializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            patient = serializer.validated_data["patient"]
            try:
                event, recorded = custom_event_record(
                    organization=self.api_key.organization,
                    type_name=serializer.validated_data["type"],
                    patient=patient,
                    data=serializer.validated_data["data"],
                    idempotency_key=_service_key(request),
                )
            except DjangoValidationError as exc:
                codes = {error.code for error in exc.error_list}
                raise _refused(exc, "type" if "unknown_type" in codes else "data") from None
            stored = Event.objects.only("uuid", "type").get(pk=event.pk)
            body = {
                "id": str(stored.uuid),
                "type": stored.type,
                "patient": str(patient.uuid),
                "recorded": recorded,
            }
            return Response(body, status=HTTPStatus.ACCEPTED)

        return self.write(request, change)


# --- workflows and their runs ---------------------------------------------------------------


class WorkflowSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)

    class Meta:
        model = Workflow
        fields = ["id", "name", "description", "trigger", "enabled", "version", "updated_at"]
        read_only_fields = fields


class StartSerializer(RefusesUnknownFields):
    patient = PatientRefField(help_text="The patient's uuid.")
    data = serializers.JSONField(
        required=False,
        default=dict,
        help_text="The trigger's data other than the customer (the patient's own): an order "
        'trigger takes {"order": {…}}, a custom type {"data": {…}}.',
    )


class RunWorkflowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    version = serializers.IntegerField(help_text="The version the run pinned when it started.")


class RunStepSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    type = serializers.CharField()
    action = serializers.CharField(required=False, help_text="adapter.function, for actions.")
    status = serializers.CharField()
    skipReason = serializers.CharField(allow_blank=True)
    startedAt = serializers.DateTimeField(allow_null=True)
    finishedAt = serializers.DateTimeField(allow_null=True)


class RunStatusSerializer(serializers.Serializer):
    """The schema of `workflows.selectors.run_status` (which makes the body)."""

    id = serializers.UUIDField()
    workflow = RunWorkflowSerializer()
    status = serializers.ChoiceField(choices=Run.Status.choices)
    test = serializers.BooleanField()
    createdAt = serializers.DateTimeField()
    startedAt = serializers.DateTimeField(allow_null=True)
    finishedAt = serializers.DateTimeField(allow_null=True)
    dueAt = serializers.DateTimeField(allow_null=True)
    nextStep = serializers.IntegerField(allow_null=True)
    steps = RunStepSerializer(many=True)
    exitReason = serializers.CharField(allow_blank=True)
    goalReached = serializers.BooleanField()
    goalReachedAt = serializers.DateTimeField(allow_null=True)


class SkippedSerializer(serializers.Serializer):
    reason = serializers.CharField()
    detail = serializers.CharField(allow_blank=True)


class StartedSerializer(serializers.Serializer):
    started = serializers.BooleanField(
        help_text="False when the workflow's enrollment rule refused this patient."
    )
    run = RunStatusSerializer(allow_null=True)
    skipped = SkippedSerializer(allow_null=True)


@extend_schema_view(
    get=extend_schema(
        summary="List the clinic's workflows",
        description="Their ids, to start one for a patient or to read its runs.",
        responses={200: WorkflowSerializer(many=True), **READ_ERRORS},
    )
)
class WorkflowList(ClinicScoped):
    model = Workflow
    serializer_class = WorkflowSerializer
    what = "workflow"

    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset().order_by("name", "id"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


@extend_schema_view(
    post=extend_schema(
        summary="Start a workflow for a patient",
        description="Starts this workflow, and no other, for the patient, with the data "
        "given, whatever its trigger's filter says (you chose it). Its enrollment rule "
        "applies: a refusal answers 200 with `started: false` and the reason. Consent, "
        "quiet hours and caps are checked when each message is sent. A disabled workflow "
        "is a 409. Retrying with the same Idempotency-Key returns the same run.",
        parameters=[IDEMPOTENCY_PARAMETER],
        request=StartSerializer,
        examples=[
            OpenApiExample(
                "Start an order follow-up",
                request_only=True,
                value={
                    "patient": "0b9c7c9e-5d1e-4bb1-9c1e-6f0e3c1a2b3c",
                    "data": {"order": {"number": "1001", "status": "shipped"}},
                },
            )
        ],
        responses={201: StartedSerializer, 200: StartedSerializer, **WRITE_ERRORS},
    )
)
class WorkflowRuns(ClinicScoped):
    model = Workflow
    serializer_class = StartSerializer
    http_method_names = ["post", "options"]
    what = "workflow"

    def post(self, request: Request, uuid: str) -> Response:
        def change() -> Response:
            workflow = self.get_object()
            serializer = self.get_serializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            try:
                result = workflow_start(
                    workflow=workflow,
                    patient=serializer.validated_data["patient"],
                    data=serializer.validated_data["data"],
                    idempotency_key=_service_key(request),
                )
            except DjangoValidationError as exc:
                raise _refused(exc, "data") from None
            body: dict[str, Any] = {
                "started": result.started,
                "run": run_status(run=result.run) if result.run is not None else None,
                "skipped": None,
            }
            if result.skip is not None:
                body["skipped"] = {
                    "reason": result.skip.get_reason_display(),
                    "detail": result.skip.detail,
                }
            status = HTTPStatus.CREATED if result.started and result.created else HTTPStatus.OK
            return Response(body, status=status)

        return self.write(request, change)


class RunSummarySerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    workflow = serializers.UUIDField(source="workflow.uuid", read_only=True)
    event = serializers.UUIDField(source="event.uuid", read_only=True)

    class Meta:
        model = Run
        fields = ["id", "workflow", "event", "status", "created_at", "finished_at"]
        read_only_fields = fields


def _uuid_param(request: Request, name: str, what: str) -> uuid.UUID | None:
    value = query_param(request, name)
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise serializers.ValidationError({name: [f"Must be {what} id (a UUID)."]}) from None


class ClinicRuns(ApiView):
    what = "run"

    def get_queryset(self) -> Any:
        return Run.objects.filter(
            workflow__organization_id=self.api_key.organization_id
        ).select_related("workflow", "event")


@extend_schema_view(
    get=extend_schema(
        summary="List runs",
        description="Newest first; filter by workflow, by patient, or by the event that "
        "started them (the id a posted event answered with).",
        parameters=[
            OpenApiParameter("workflow", OpenApiTypes.UUID),
            OpenApiParameter("patient", OpenApiTypes.UUID),
            OpenApiParameter("event", OpenApiTypes.UUID),
        ],
        responses={200: RunSummarySerializer(many=True), **READ_ERRORS},
    )
)
class RunList(ClinicRuns):
    serializer_class = RunSummarySerializer

    def get(self, request: Request) -> Response:
        queryset = self.get_queryset().order_by("-created_at", "-id")
        workflow = _uuid_param(request, "workflow", "a workflow")
        if workflow:
            queryset = queryset.filter(workflow__uuid=workflow)
        patient = _uuid_param(request, "patient", "a patient")
        if patient:
            # A run's patient is its event's customer id (the patient's uuid).
            queryset = queryset.filter(patient_key=str(patient))
        event = _uuid_param(request, "event", "an event")
        if event:
            queryset = queryset.filter(event__uuid=event)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


@extend_schema_view(
    get=extend_schema(
        summary="Read a run's status",
        description="Where a run is: its status, each step's status (with a skip's reason), "
        "how it ended. No patient data.",
        responses={200: RunStatusSerializer, **READ_ERRORS},
    )
)
class RunDetail(ClinicRuns):
    serializer_class = RunSummarySerializer  # the schema's is RunStatus; the body run_status's
    http_method_names = ["get", "options"]

    def get(self, request: Request, uuid: str) -> Response:
        return Response(run_status(run=self.get_object()))
