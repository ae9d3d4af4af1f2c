"""patients.0008: the "Accept marketing" checkbox goes without inventing consent, and
without losing what it said (the audit trail keeps it; reversing restores it)."""

from tests.patients.conftest import latest_migrations, migrate

BEFORE = [("patients", "0007_roles")]
ACTOR = "migration patients.0008 (the checkbox was no consent evidence)"


def test_ticked_boxes_go_to_the_audit_trail_not_to_the_consent_history(
    migrated_back: None,
) -> None:
    old = migrate(BEFORE)
    Organization = old.get_model("patients", "Organization")
    Patient = old.get_model("patients", "Patient")
    clinic = Organization.objects.create(name="Clinic", slug="c", timezone="UTC")
    ticked = Patient.objects.create(
        organization=clinic, first_name="Ann", last_name="Lee", accept_marketing=True
    )
    Patient.objects.create(organization=clinic, first_name="Bo", accept_marketing=False)

    new = migrate(latest_migrations())
    assert "accept_marketing" not in {
        f.name for f in new.get_model("patients", "Patient")._meta.get_fields()
    }
    assert not new.get_model("patients", "ConsentRecord").objects.exists()  # nothing invented
    entries = list(new.get_model("patients", "AuditEntry").objects.all())
    assert [(e.object_id, e.object_repr, e.organization_id, e.changes) for e in entries] == [
        (str(ticked.pk), "Ann Lee", clinic.pk, {"accept_marketing": [True, None]})
    ]
    assert entries[0].actor_repr == ACTOR and entries[0].action == "updated"

    # Reversing puts the tick back where it was, and the entries go with the change.
    old = migrate(BEFORE)
    Patient = old.get_model("patients", "Patient")
    assert dict(Patient.objects.values_list("first_name", "accept_marketing")) == {
        "Ann": True,
        "Bo": False,
    }
    assert not old.get_model("patients", "AuditEntry").objects.exists()
