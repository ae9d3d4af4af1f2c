"""patients.panels: the seam through which apps put panels on the patient page."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import RequestFactory

from patients import panels
from patients.panels import PatientPanel, patient_panel_register, patient_panels
from tests.factories import PatientFactory, PatientNoteFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(panels, "_panels", {})
    yield


def _request() -> Any:
    request = RequestFactory().get("/")
    request.user = UserFactory(is_superuser=True)
    return request


def test_both_apps_register_their_panels_at_startup() -> None:
    registered = patient_panels(request=_request(), patient=PatientFactory())
    assert [panel.name for panel in registered] == ["consent", "conversation", "notes"]


def test_panels_show_in_order_and_a_panel_may_decline(registry: None) -> None:
    patient_panel_register(PatientPanel("late", "late.html", lambda r, p: {"n": 2}, order=50))
    patient_panel_register(PatientPanel("early", "early.html", lambda r, p: {"n": 1}, order=5))
    patient_panel_register(PatientPanel("hidden", "hidden.html", lambda r, p: None))
    shown = patient_panels(request=_request(), patient=PatientFactory())
    assert [(p.name, p.template, p.context) for p in shown] == [
        ("early", "early.html", {"n": 1}),
        ("late", "late.html", {"n": 2}),
    ]


def test_registering_again_replaces_the_panel(registry: None) -> None:
    patient_panel_register(PatientPanel("one", "a.html", lambda r, p: {}))
    patient_panel_register(PatientPanel("one", "b.html", lambda r, p: {}))
    shown = patient_panels(request=_request(), patient=PatientFactory())
    assert [p.template for p in shown] == ["b.html"]


def test_notes_panel_shows_this_patients_notes_newest_first_to_who_may_see_notes() -> None:
    patient = PatientFactory()
    older = PatientNoteFactory(patient=patient, text="first")
    newer = PatientNoteFactory(patient=patient, text="second")
    PatientNoteFactory(text="someone else's")  # another patient (of another clinic)
    context = panels.notes_panel(_request(), patient)
    assert context is not None
    assert context["notes"] == [newer, older]
    assert context["more"] is False

    nobody = RequestFactory().get("/")
    nobody.user = UserFactory()  # no permission to view notes
    assert panels.notes_panel(nobody, patient) is None


def test_notes_panel_shows_the_latest_and_says_there_are_more() -> None:
    patient = PatientFactory()
    for n in range(panels.NOTES_SHOWN + 1):
        PatientNoteFactory(patient=patient, text=f"note {n}")
    context = panels.notes_panel(_request(), patient)
    assert context is not None
    assert len(context["notes"]) == panels.NOTES_SHOWN
    assert context["notes"][0].text == f"note {panels.NOTES_SHOWN}"
    assert context["more"] is True
