"""Panels at the top of a patient's admin page, contributed by the apps that hold the data.

The conversation with a patient lives in `integrations` (its messages), which `patients`
must not import: dependencies run records ← engine ← providers. So the patient page asks
this registry, and each app registers its panel in its AppConfig.ready(), as Wagtail's hooks
do. A panel is a template and a function giving its context, or None to show nothing (the
user may not see that data). The page renders in the patient's clinic's time zone.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from patients.models import Patient, PatientNote
from patients.selectors import patient_consent_summary

PanelContext = Callable[[HttpRequest, Patient], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class PatientPanel:
    name: str
    template: str
    context: PanelContext
    # Panels show in this order, lowest first.
    order: int = 100


@dataclass(frozen=True, slots=True)
class RenderedPanel:
    name: str
    template: str
    context: dict[str, Any]


_panels: dict[str, PatientPanel] = {}


def patient_panel_register(panel: PatientPanel) -> None:
    """Add (or, under the same name, replace) a panel: registering twice is harmless."""
    _panels[panel.name] = panel


def patient_panels(*, request: HttpRequest, patient: Patient) -> list[RenderedPanel]:
    """The panels this user may see on this patient's page, with their context."""
    shown = []
    for panel in sorted(_panels.values(), key=lambda p: (p.order, p.name)):
        context = panel.context(request, patient)
        if context is not None:
            shown.append(RenderedPanel(panel.name, panel.template, context))
    return shown


def consent_panel(request: HttpRequest, patient: Patient) -> dict[str, Any] | None:
    """The patient's current consent per purpose and any STOP in force: shown to whoever
    may see the patient."""
    user: Any = request.user
    return {
        "summary": patient_consent_summary(patient=patient),
        "can_record": user.has_perm("patients.add_consentrecord"),
        "patient": patient,
    }


CONSENT_PANEL = PatientPanel(
    name="consent",
    template="admin/patients/patient/consent_panel.html",
    context=consent_panel,
    order=10,
)


# The notes the panel shows, newest first; the rest are on the notes list.
NOTES_SHOWN = 10


def notes_panel(request: HttpRequest, patient: Patient) -> dict[str, Any] | None:
    """Staff notes about the patient (written by staff, or by a workflow's "Update record"
    step), newest first: shown to whoever may see notes."""
    user: Any = request.user
    if not user.has_perm("patients.view_patientnote"):
        return None
    notes = list(
        PatientNote.objects.filter(
            patient=patient, organization_id=patient.organization_id
        ).order_by("-created_at", "-id")[: NOTES_SHOWN + 1]
    )
    return {
        "notes": notes[:NOTES_SHOWN],
        "more": len(notes) > NOTES_SHOWN,
        "can_add": user.has_perm("patients.add_patientnote"),
        "patient": patient,
    }


NOTES_PANEL = PatientPanel(
    name="notes",
    template="admin/patients/patient/notes_panel.html",
    context=notes_panel,
    order=30,
)
