"""The ready-made conversation workflows (workflows.recipes): each texts the patient a question
from the clinic's own Twilio number, waits for the reply and acts on it with careflow records
(an appointment's status, a note or a task for staff) and a follow-up text.

They name Twilio's and careflow records' functions, so they live here, above the engine, and
`IntegrationsConfig.ready()` registers them; each is checked by the same save-time validation
as a workflow built by hand when a clinic adds it."""

from typing import Any

from integrations.records.adapter import ADD_NOTE, CREATE_TASK, SET_APPOINTMENT_STATUS
from integrations.twilio.adapter import SEND_SMS
from patients.models import Appointment
from workflows.recipes import Recipe, recipe_register
from workflows.replies import REPLY

TWILIO = "twilio"
RECORDS = "records"
PATIENT = "{{customer.firstName}} {{customer.lastName}}"
WHEN = '{{appointment.startsAtLocal | date:"%b %-d at %-I:%M %p"}}'
HOUR = 3600
DAY = 24 * HOUR


def _sms(sender: str, message: str) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": TWILIO,
        "function": SEND_SMS.name,
        "parameters": {"message": message, "to": "{{customer.phone}}", "from": sender},
    }


def _record(function: str, **parameters: str) -> dict[str, Any]:
    return {"type": "adapter", "adapter": RECORDS, "function": function, "parameters": parameters}


def _task(title: str) -> dict[str, Any]:
    return _record(CREATE_TASK.name, title=title, due_in_hours="24")


def _appointment_status(status: str) -> dict[str, Any]:
    return _record(SET_APPOINTMENT_STATUS.name, appointment="{{appointment.id}}", status=status)


def _wait(
    timeout: dict[str, str],
    branches: list[dict[str, Any]],
    *,
    otherwise: str | int = "end",
    reask: str = "",
    no_reply: str | int = "end",
) -> dict[str, Any]:
    return {
        "type": REPLY,
        "parameters": {
            **timeout,
            "branches": branches,
            "otherwise": {"goto": otherwise, "reask": reask},
            "no_reply": {"goto": no_reply},
        },
    }


def _duration(seconds: int) -> dict[str, str]:
    return {"kind": "duration", "seconds": str(seconds)}


def _keywords(label: str, goto: str | int, *words: str) -> dict[str, Any]:
    return {"label": label, "match": "keywords", "keywords": list(words), "goto": goto}


# --- appointment reminder: confirm / cancel / reschedule --------------------------------------

REMINDER_QUESTION = (
    "Hi {{customer.firstName}}, a reminder of your appointment on " + WHEN + ". "
    "Reply C to confirm, X to cancel, R to reschedule."
)
SECOND_REMINDER = (
    "Hi {{customer.firstName}}, we have not heard back about your appointment on "
    + WHEN
    + ". Reply C to confirm, X to cancel, R to reschedule."
)
REMINDER_REASK = (
    "Sorry, we did not understand. Please reply C to confirm, X to cancel or R to reschedule."
)
CONFIRMED = "Thank you, your appointment on " + WHEN + " is confirmed."
CANCELLED = "Your appointment on " + WHEN + " is cancelled. Call us when you want a new one."
RESCHEDULING = "Thank you: we will call you to find a new time."


def _reminder_answers(sender: str, *, wait: int, no_reply: str | int) -> list[dict[str, Any]]:
    """A reminder's wait (step number `wait`) and the eight steps of its answers: confirm,
    cancel, reschedule (a task for staff), and a reply not understood even after re-asking
    (a task for staff to call)."""
    cancel, reschedule, unclear = wait + 3, wait + 5, wait + 8
    return [
        _wait(
            _duration(6 * HOUR)
            if wait == 2
            # The second reminder waits until two hours before the appointment.
            else {
                "kind": "until_field",
                "path": "appointment.startsAt",
                "offset_seconds": str(-2 * HOUR),
            },
            [
                _keywords("Confirm", "next", "c", "confirm", "yes"),
                _keywords("Cancel", cancel, "x", "cancel appointment"),
                _keywords("Reschedule", reschedule, "r", "reschedule"),
            ],
            otherwise=unclear,
            reask=REMINDER_REASK,
            no_reply=no_reply,
        ),
        _appointment_status(Appointment.Status.CONFIRMED),
        _sms(sender, CONFIRMED),
        _appointment_status(Appointment.Status.CANCELLED),
        _sms(sender, CANCELLED),
        _appointment_status(Appointment.Status.RESCHEDULE_REQUESTED),
        _task("Call " + PATIENT + " to reschedule the appointment on " + WHEN),
        _sms(sender, RESCHEDULING),
        _task("Call " + PATIENT + ": reply to the appointment reminder not understood"),
    ]


def appointment_reminder_steps(sender: str) -> list[dict[str, Any]]:
    return [
        _sms(sender, REMINDER_QUESTION),
        *_reminder_answers(sender, wait=2, no_reply=11),
        _sms(sender, SECOND_REMINDER),
        *_reminder_answers(sender, wait=12, no_reply="end"),
    ]


# --- refill due: yes / no -----------------------------------------------------------------

REFILL_QUESTION = (
    "Hi {{customer.firstName}}, your refill is due soon. Reply YES to have us prepare it, "
    "or NO if you do not need it."
)
REFILL_REASK = "Sorry, we did not understand. Please reply YES or NO."
REFILL_THANKS = "Thank you: we are preparing your refill."


def refill_steps(sender: str) -> list[dict[str, Any]]:
    return [
        _sms(sender, REFILL_QUESTION),
        _wait(
            _duration(2 * DAY),
            [_keywords("Yes", "next", "yes", "y"), _keywords("No", 5, "no", "n")],
            reask=REFILL_REASK,
        ),
        _task("Refill request from " + PATIENT + " (replied to the refill reminder)"),
        _sms(sender, REFILL_THANKS),
        _record(ADD_NOTE.name, text="Replied NO to the refill reminder: no refill needed."),
    ]


# --- no-show follow-up ----------------------------------------------------------------------

NO_SHOW_QUESTION = (
    "Hi {{customer.firstName}}, we missed you at your appointment. Reply 1 to rebook and we "
    "will call you."
)
NO_SHOW_THANKS = "Thank you: we will call you to find a new time."


def no_show_steps(sender: str) -> list[dict[str, Any]]:
    return [
        _sms(sender, NO_SHOW_QUESTION),
        _wait(
            _duration(3 * DAY),
            [_keywords("Rebook", "next", "1", "rebook")],
        ),
        _task("Call " + PATIENT + " to rebook a missed appointment"),
        _sms(sender, NO_SHOW_THANKS),
    ]


# --- post-visit satisfaction 1-5 -------------------------------------------------------------

SATISFACTION_QUESTION = (
    "Hi {{customer.firstName}}, how was your visit today? Reply with a number from 1 (poor) "
    "to 5 (excellent)."
)
SATISFACTION_REASK = "Please reply with a number from 1 (poor) to 5 (excellent)."
SATISFACTION_SORRY = "We are sorry to hear that. Someone from our team will call you."
SATISFACTION_THANKS = "Thank you for your feedback, {{customer.firstName}}!"


def satisfaction_steps(sender: str) -> list[dict[str, Any]]:
    return [
        _sms(sender, SATISFACTION_QUESTION),
        _wait(
            _duration(2 * DAY),
            [
                {"label": "Low score", "match": "number", "min": 1, "max": 2, "goto": "next"},
                {"label": "Good score", "match": "number", "min": 3, "max": 5, "goto": 5},
            ],
            reask=SATISFACTION_REASK,
        ),
        _task("Low visit score ({{history.2.result.reply}}) from " + PATIENT + ": call them"),
        _sms(sender, SATISFACTION_SORRY),
        _sms(sender, SATISFACTION_THANKS),
    ]


RECIPES = (
    Recipe(
        slug="appointment-reminder",
        name="Appointment reminder: confirm, cancel or reschedule",
        description="24 hours before an appointment, ask the patient to reply C, X or R; "
        "sets the appointment's status, asks staff to call about a new time, and reminds "
        "once more if there is no reply.",
        trigger="appointment.reminder",
        sender_adapter=TWILIO,
        steps=appointment_reminder_steps,
    ),
    Recipe(
        slug="refill-due",
        name="Refill due: yes or no",
        description="Before a subscription renews, ask whether the patient wants the refill; "
        "YES creates a refill task for staff, NO adds a note.",
        trigger="subscription.upcoming_renewal",
        sender_adapter=TWILIO,
        steps=refill_steps,
    ),
    Recipe(
        slug="no-show-follow-up",
        name="No-show follow-up",
        description="After a missed appointment, offer to rebook: a reply of 1 creates a task "
        "for staff to call the patient.",
        trigger="appointment.no_show",
        sender_adapter=TWILIO,
        steps=no_show_steps,
    ),
    Recipe(
        slug="post-visit-satisfaction",
        name="Post-visit satisfaction 1–5",
        description="After a visit, ask for a score from 1 to 5: a low score (1–2) creates a "
        "task for staff with the score, a good one gets a thank-you text.",
        trigger="appointment.completed",
        sender_adapter=TWILIO,
        steps=satisfaction_steps,
    ),
)


def recipes_register() -> None:
    for recipe in RECIPES:
        recipe_register(recipe)
