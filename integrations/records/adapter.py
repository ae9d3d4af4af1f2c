"""careflow records → the "Update record" step: set an appointment's status, add a note or a
task for staff, set a field from an allow-list (integrations.records.writes).

It needs no integration and no credentials: every clinic can use it, on its own records. A
record is written only if it is the run's patient's, in the run's clinic. A live test (or a
run for a test patient) writes for real, to that test patient's records only; a test run for
anyone else writes nothing.
"""

from collections.abc import Mapping
from datetime import datetime

from integrations.records.writes import (
    APPOINTMENT_STATUSES,
    SETTABLE_FIELDS,
    WriteRefused,
    hours_problem,
    record_write,
    reference_problem,
    write_plan,
)
from patients.models import Appointment, Organization, Patient
from workflows.adapters import (
    Adapter,
    DryRunResult,
    Function,
    Outcome,
    Parameter,
    StepContext,
)
from workflows.models import StepRun


def _records_function(name: str, label: str, *parameters: Parameter) -> Function:
    # The writes stay in the clinic's own records, so clinical details may be used (a note
    # can say which refill the patient confirmed); nothing is sent to the patient.
    return Function(
        name=name,
        label=label,
        parameters=parameters,
        clinical_data_allowed=True,
        messages_patient=False,
    )


APPOINTMENT_PARAMETER = Parameter(
    "appointment",
    "Appointment",
    "Which appointment: {{appointment.id}} for the trigger's appointment; leave blank for the "
    "patient's next upcoming one. It must be this patient's, in this clinic.",
    required=False,
    example="{{appointment.id}}",
    check=reference_problem,
)

SET_APPOINTMENT_STATUS = _records_function(
    "setAppointmentStatus",
    "Set appointment status",
    APPOINTMENT_PARAMETER,
    Parameter(
        "status",
        "Status",
        "An appointment already cancelled, completed or missed is left as it is.",
        example=Appointment.Status.CONFIRMED,
        choices=tuple((s.value, s.label) for s in APPOINTMENT_STATUSES),
    ),
)

ADD_NOTE = _records_function(
    "addNote",
    "Add a note for staff",
    Parameter(
        "text",
        "Note",
        "Shown on the patient's page to the clinic's staff.",
        example="Replied {{history.2.result.reply}} to the reminder.",
        multiline=True,
    ),
)

CREATE_TASK = _records_function(
    "createTask",
    "Create a task for staff",
    Parameter("title", "Title", example="Call {{customer.firstName}} to reschedule"),
    Parameter(
        "due_in_hours",
        "Due in (hours)",
        "Blank: no due time.",
        required=False,
        example="24",
        check=hours_problem,
    ),
)

SET_FIELD = _records_function(
    "setField",
    "Set a field",
    Parameter(
        "field",
        "Field",
        "Only these fields can be set; the value is checked as the record's own form checks it.",
        choices=tuple(SETTABLE_FIELDS.items()),
    ),
    Parameter(
        "record",
        "Record",
        "For an appointment or subscription field: which one ({{appointment.id}}, "
        "{{subscription.id}}); blank: the patient's next upcoming appointment, or their "
        "active subscription. Not used for the patient's own fields.",
        required=False,
        check=reference_problem,
    ),
    Parameter("value", "Value", example="{{history.2.result.reply}}", required=False),
)


def _actor(context: StepContext) -> str:
    """The run the write is made for, as the audit trail and a note's author name it."""
    found = (
        StepRun.objects.filter(pk=context.step_run_id)
        .values_list("run_id", "run__workflow__name")
        .first()
        if context.step_run_id
        else None
    )
    if found is None:
        return "workflow step"
    run_id, name = found
    return f"workflow “{name}” run {run_id}"


class RecordsAdapter(Adapter):
    name = "records"
    label = "careflow records"
    functions = {f.name: f for f in (SET_APPOINTMENT_STATUS, ADD_NOTE, CREATE_TASK, SET_FIELD)}

    def execute(self, *, function: str, context: StepContext) -> Outcome:
        """Write once for `context.idempotency_key` (integrations.records.writes)."""
        if function not in self.functions:
            return Outcome("failed", reason=f"careflow records has no function {function!r}")
        patient = context.patient
        if patient is None:
            return Outcome("failed", reason="this run has no patient of this clinic to write to")
        if context.is_test and not patient.is_test:
            return Outcome("skipped", reason="test run: only a test patient's records are written")
        return record_write(
            function,
            organization=context.organization,
            patient=patient,
            inputs=context.inputs,
            idempotency_key=context.idempotency_key,
            actor=_actor(context),
        )

    def dry_run(
        self,
        function: str,
        *,
        organization: Organization,
        patient: Patient,
        inputs: Mapping[str, str],
        purpose: str,
        urgent: bool,
        clock: datetime,
    ) -> DryRunResult:
        """What the step would write, from the records as they are now; nothing is written."""
        try:
            write = write_plan(
                function, organization=organization, patient=patient, inputs=inputs, now=clock
            )
        except WriteRefused as exc:
            return DryRunResult("error", f"would fail: {exc}")
        if write.skip:
            return DryRunResult("skip", f"would not write: {write.skip}")
        if not write.changed:
            return DryRunResult("send", f"would {write.summary} (it already is: no change)")
        return DryRunResult("send", f"would {write.summary}")
