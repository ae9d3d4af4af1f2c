"""Workflows that travel (workflows.transfer): the export document, reading one, the import
plan, the all-or-nothing import, and an imported workflow dry-running as the original."""

import copy
import json
import re
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from integrations.models import Integration
from patients.models import ConsentRecord, Organization, Patient
from tests.factories import (
    ConsentFactory,
    CustomEventTypeFactory,
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
    WorkflowFactory,
)
from workflows.dry_run import workflow_dry_run
from workflows.models import Workflow, WorkflowVersion
from workflows.transfer import (
    FORMAT,
    MAX_DOCUMENT_BYTES,
    MAX_WORKFLOWS,
    SCHEMA_VERSION,
    ImportUnresolved,
    TransferRefused,
    document_read,
    export_json,
    import_plan,
    mapping_parse,
    organization_named,
    workflows_export,
    workflows_import,
)
from workflows.versions import workflow_document, workflow_document_save

pytestmark = pytest.mark.django_db

A_NUMBER, B_NUMBER, B_OTHER = "+15005550006", "+15005550011", "+15005550012"
A_MAIL, B_MAIL = "care@a.example", "care@b.example"
EXPORTED = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def clinic(name: str, numbers: list[str], mails: list[str]) -> Organization:
    organization: Organization = OrganizationFactory(name=name)
    IntegrationFactory(organization=organization, senders=numbers)
    if mails:
        IntegrationFactory(
            organization=organization,
            adapter="email",
            name="Email",
            senders=mails,
            settings={"esp": "postmark", "message_stream": "outbound"},
            secrets={"server_token": "tok", "webhook_secret": "hook"},
        )
    return organization


def definition(sms_from: str = A_NUMBER, mail_from: str = A_MAIL) -> dict[str, Any]:
    return {
        "trigger": "order.shipped",
        "filter": json.dumps({"order.totalAmount": {"$gte": 10}}),
        "steps": [
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {
                    "to": "{{customer.phone}}",
                    "from": sms_from,
                    "message": "Hi {{customer.firstName}}, order {{order.number}} has shipped!",
                },
                "purpose": "transactional",
            },
            {"type": "delay", "parameters": {"kind": "duration", "seconds": "3600"}},
            {
                "type": "adapter",
                "adapter": "email",
                "function": "sendEmail",
                "parameters": {
                    "to": "{{customer.email}}",
                    "from": mail_from,
                    "subject": "Order {{order.number}} shipped",
                    "body": "Hi {{customer.firstName}},\n\nit is on its way.",
                },
                "purpose": "transactional",
            },
        ],
        "goal": {"event": "questionnaire.submitted", "windowHours": 72},
    }


def saved_workflow(organization: Organization, name: str = "Shipped", **kwargs: Any) -> Workflow:
    workflow = Workflow(organization=organization, enabled=False)
    document = {"name": name, "description": "Tell them", "definition": definition(**kwargs)}
    workflow_document_save(workflow=workflow, document=document)
    return workflow


@pytest.fixture
def clinics() -> tuple[Organization, Organization]:
    return clinic("Clinic A", [A_NUMBER], [A_MAIL]), clinic("Clinic B", [B_NUMBER], [B_MAIL])


def exported(organization: Organization, *workflows: Workflow) -> dict[str, Any]:
    return workflows_export(organization=organization, workflows=workflows, now=EXPORTED)


# --- export ---------------------------------------------------------------------------------


def test_the_export_is_the_workflow_documents_with_what_they_need(clinics: Any) -> None:
    a, _ = clinics
    workflow = saved_workflow(a)
    Workflow.objects.filter(pk=workflow.pk).update(enabled=True)
    workflow.refresh_from_db()
    custom = WorkflowFactory(organization=a, name="Custom", trigger="custom.lab_ready")

    document = exported(a, workflow, custom)

    assert document["format"] == FORMAT and document["schemaVersion"] == SCHEMA_VERSION
    assert document["exportedAt"] == "2026-12-01T09:30:00+00:00"
    assert document["source"] == {"clinic": "Clinic A"}
    first = document["workflows"][0]
    assert {k: v for k, v in first.items() if k != "enabledAtExport"} == workflow_document(workflow)
    assert first["enabledAtExport"] is True
    assert document["workflows"][1]["enabledAtExport"] is True
    references = document["references"]
    assert references["adapters"]["twilio"] == {
        "label": "Twilio",
        "senders": [A_NUMBER],
        "workflows": ["Shipped"],
    }
    assert references["adapters"]["email"]["senders"] == [A_MAIL]
    assert references["customEventTypes"] == {"custom.lab_ready": {"workflows": ["Custom"]}}
    assert "no patient" in references["testPatients"]


def test_the_export_carries_no_ids_secrets_or_patients(clinics: Any) -> None:
    a, _ = clinics
    PatientFactory(organization=a, is_test=True, first_name="Secretive")
    workflow = saved_workflow(a)
    text = export_json(exported(a, workflow))

    for secret in ("tok", "hook", "auth_token", "account_sid", "Secretive"):
        assert f'"{secret}"' not in text and secret not in text.replace("Tell them", "")
    assert str(workflow.uuid) not in text and '"id"' not in text
    assert text == export_json(json.loads(text)), "the file is stable: sorted keys, one form"
    assert text.endswith("}\n") and text.startswith('{\n  "exportedAt"')


def test_another_clinics_workflow_is_not_exported(clinics: Any) -> None:
    a, b = clinics
    theirs = saved_workflow(b, sms_from=B_NUMBER, mail_from=B_MAIL)
    with pytest.raises(ValueError, match="not one of"):
        workflows_export(organization=a, workflows=[theirs])


# --- round trip -----------------------------------------------------------------------------


def test_an_export_imports_into_another_clinic_with_its_senders_mapped(clinics: Any) -> None:
    a, b = clinics
    original = saved_workflow(a)
    Workflow.objects.filter(pk=original.pk).update(enabled=True)
    text = export_json(exported(a, original))

    document = document_read(text)
    unmapped = import_plan(document=document, organization=b)
    assert not unmapped.ok
    needs = {(n.adapter, n.value): n for n in unmapped.workflows[0].senders}
    assert needs[("twilio", A_NUMBER)].choices == (B_NUMBER,)
    assert "map it to one of +15005550011" in needs[("twilio", A_NUMBER)].problem
    assert needs[("email", A_MAIL)].choices == (B_MAIL,)
    assert unmapped.workflows[0].problems == [], "an unmapped sender is said once, not twice"

    mapping = {"twilio": {A_NUMBER: B_NUMBER}, "email": {A_MAIL: B_MAIL}}
    plan = import_plan(document=document, organization=b, mapping=mapping)
    assert plan.ok, plan.lines()
    [imported] = workflows_import(document=document, organization=b, mapping=mapping)

    imported.refresh_from_db()
    assert imported.organization == b and imported.enabled is False
    expected = workflow_document(original)
    mapped = copy.deepcopy(expected)
    mapped["definition"]["steps"][0]["parameters"]["from"] = B_NUMBER
    mapped["definition"]["steps"][2]["parameters"]["from"] = B_MAIL
    assert workflow_document(imported) == mapped
    version = WorkflowVersion.objects.get(workflow=imported)
    assert version.comment == "Imported from Clinic A export of 2026-12-01"
    assert version.document == mapped


def test_a_sender_approved_in_both_clinics_maps_itself(clinics: Any) -> None:
    a, b = clinics
    Integration.objects.filter(organization=b, adapter="twilio").update(
        senders=[B_NUMBER, A_NUMBER]
    )
    Integration.objects.filter(organization=b, adapter="email").update(senders=[A_MAIL])
    document = document_read(export_json(exported(a, saved_workflow(a))))

    plan = import_plan(document=document, organization=b)

    assert plan.ok
    assert all(need.automatic and need.target == need.value for need in plan.workflows[0].senders)
    assert "approved here too, kept" in "\n".join(plan.lines())


def test_a_variable_sender_needs_no_mapping(clinics: Any) -> None:
    a, b = clinics
    workflow = saved_workflow(a, sms_from="{{customer.phone}}", mail_from=A_MAIL)
    document = document_read(export_json(exported(a, workflow)))
    plan = import_plan(document=document, organization=b, mapping={"email": {A_MAIL: B_MAIL}})
    assert [n.adapter for n in plan.workflows[0].senders] == ["email"]


def test_a_mapping_to_a_sender_the_clinic_lacks_is_refused(clinics: Any) -> None:
    a, b = clinics
    document = document_read(export_json(exported(a, saved_workflow(a))))
    mapping = {"twilio": {A_NUMBER: B_OTHER}, "email": {A_MAIL: B_MAIL}}

    plan = import_plan(document=document, organization=b, mapping=mapping)

    assert not plan.ok
    [need] = [n for n in plan.workflows[0].senders if n.adapter == "twilio"]
    assert need.problem.startswith(f"{B_OTHER} is not an approved sending number of this clinic")
    with pytest.raises(ImportUnresolved, match="Nothing was imported"):
        workflows_import(document=document, organization=b, mapping=mapping)
    assert not Workflow.objects.filter(organization=b).exists()


def test_a_clinic_without_the_integration_is_told_and_nothing_is_imported(clinics: Any) -> None:
    a, _ = clinics
    bare = clinic("Clinic C", [B_NUMBER], [])
    document = document_read(export_json(exported(a, saved_workflow(a))))

    plan = import_plan(
        document=document, organization=bare, mapping={"twilio": {A_NUMBER: B_NUMBER}}
    )

    assert plan.workflows[0].missing_integrations == [
        "Email: this clinic has no enabled email integration"
    ]
    assert not plan.ok
    with pytest.raises(ImportUnresolved):
        workflows_import(document=document, organization=bare, mapping={})
    assert not Workflow.objects.filter(organization=bare).exists()


def test_taken_names_are_imported_as_imported_and_numbered(clinics: Any) -> None:
    a, b = clinics
    workflow = saved_workflow(a)
    WorkflowFactory(organization=b, name="Shipped")
    WorkflowFactory(organization=b, name="Shipped (imported)")
    body = exported(a, workflow)
    body["workflows"].append(copy.deepcopy(body["workflows"][0]))
    document = document_read(export_json(body))
    mapping = {"twilio": {A_NUMBER: B_NUMBER}, "email": {A_MAIL: B_MAIL}}

    created = workflows_import(document=document, organization=b, mapping=mapping)

    assert [w.name for w in created] == ["Shipped (imported 2)", "Shipped (imported 3)"]


def test_a_long_name_keeps_its_suffix_within_the_limit(clinics: Any) -> None:
    a, b = clinics
    long_name = "N" * 200
    WorkflowFactory(organization=b, name=long_name)
    body = exported(
        a, saved_workflow(a, sms_from="{{customer.phone}}", mail_from="{{customer.email}}")
    )
    body["workflows"][0]["name"] = long_name
    plan = import_plan(document=document_read(export_json(body)), organization=b)
    assert plan.workflows[0].import_name == "N" * 189 + " (imported)"


def test_the_import_is_all_or_nothing(clinics: Any) -> None:
    a, b = clinics
    body = exported(a, saved_workflow(a))
    broken = copy.deepcopy(body["workflows"][0])
    broken["name"] = "Broken"
    broken["definition"]["steps"][1] = {"type": "teleport", "parameters": {}}
    body["workflows"].append(broken)
    document = document_read(export_json(body))
    mapping = {"twilio": {A_NUMBER: B_NUMBER}, "email": {A_MAIL: B_MAIL}}

    plan = import_plan(document=document, organization=b, mapping=mapping)
    assert plan.workflows[0].ok and not plan.workflows[1].ok
    assert any("teleport" in line for line in plan.workflows[1].problems)
    with pytest.raises(ImportUnresolved, match=r"1 workflow\(s\) are not ready \(Broken\)"):
        workflows_import(document=document, organization=b, mapping=mapping)
    assert not Workflow.objects.filter(organization=b).exists()
    assert not WorkflowVersion.objects.filter(workflow__organization=b).exists()


def test_the_report_lists_the_target_clinics_test_patients_or_says_there_are_none(
    clinics: Any,
) -> None:
    a, b = clinics
    document = document_read(export_json(exported(a, saved_workflow(a))))
    assert (
        "Clinic B has no test patients"
        in import_plan(document=document, organization=b).lines()[-1]
    )
    PatientFactory(organization=b, is_test=True, first_name="Tess", last_name="Ting")
    PatientFactory(organization=a, is_test=True, first_name="Other")
    plan = import_plan(document=document, organization=b)
    assert plan.test_patients == ["Tess Ting"]


def test_a_custom_trigger_is_reported_as_needed() -> None:
    a = clinic("Clinic A", [A_NUMBER], [])
    b = clinic("Clinic B", [B_NUMBER], [])
    body = exported(
        a, saved_workflow(a, sms_from="{{customer.phone}}", mail_from="{{customer.email}}")
    )
    body["workflows"][0]["definition"]["exits"] = [{"event": "custom.cancelled"}]
    del body["workflows"][0]["definition"]["steps"][2]
    plan = import_plan(document=document_read(export_json(body)), organization=b)
    assert plan.workflows[0].custom_event_types == ["custom.cancelled"]
    assert "Needs the custom event type custom.cancelled" in "\n".join(plan.lines())
    assert not plan.ok  # the exit's event is unknown to clinic B: validation says so too


def test_a_custom_trigger_the_target_clinic_declares_imports(clinics: Any) -> None:
    a, b = clinics
    body = exported(a, saved_workflow(a, sms_from="{{customer.phone}}"))
    definition = body["workflows"][0]["definition"]
    definition["trigger"] = "custom.lab_results_ready"
    definition["steps"] = [definition["steps"][0]]
    definition["steps"][0]["parameters"]["message"] = "Kit {{data.kitId}} is in"
    document = document_read(export_json(body))
    missing = import_plan(document=document, organization=b)
    assert missing.workflows[0].custom_event_types == ["custom.lab_results_ready"]
    assert not missing.ok
    CustomEventTypeFactory(organization=b)
    plan = import_plan(document=document, organization=b)
    assert plan.workflows[0].custom_event_types == []
    assert plan.ok, plan.lines()
    (workflow,) = workflows_import(document=document, organization=b)
    assert workflow.trigger == "custom.lab_results_ready"
    assert not workflow.enabled


# --- documents that are not exports -----------------------------------------------------------


def good_body() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "schemaVersion": 1,
        "exportedAt": "2026-12-01T09:30:00+00:00",
        "source": {"clinic": "Clinic A"},
        "workflows": [{"name": "W", "description": "", "definition": definition()}],
    }


def with_change(path: str, value: Any) -> str:
    body: Any = good_body()
    *parents, last = path.split(".")
    place = body
    for part in parents:
        place = place[int(part)] if isinstance(place, list) else place[part]
    key: Any = int(last) if isinstance(place, list) else last
    if value is KeyError:
        del place[key]
    else:
        place[key] = value
    return json.dumps(body)


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "The file is empty"),
        ("{nope", "is not valid JSON"),
        ("[]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        (with_change("format", "zapier"), "not a careflow workflows export"),
        (with_change("format", KeyError), "not a careflow workflows export"),
        (with_change("schemaVersion", 2), "schemaVersion is 2; this careflow reads version 1"),
        (with_change("schemaVersion", "1"), 'schemaVersion is "1"'),
        (with_change("schemaVersion", True), "schemaVersion is true"),
        (with_change("schemaVersion", KeyError), "schemaVersion is null"),
        (with_change("source", "Clinic A"), "which clinic it came from"),
        (with_change("exportedAt", "yesterday"), "“exportedAt” is not a date"),
        (with_change("exportedAt", 17), "“exportedAt” is not a date"),
        (with_change("workflows", {}), "has no workflows"),
        (with_change("workflows", []), "has no workflows"),
        (with_change("workflows.0", "W"), "Workflow 1 of the export is not an object"),
        (with_change("workflows.0.name", 5), "has no name"),
        (with_change("workflows.0.name", "  "), "has no name"),
        (with_change("workflows.0.description", ["x"]), "“description” must be text"),
        (with_change("workflows.0.definition", "{}"), "“definition” must be an object"),
        (with_change("workflows.0.enabledAtExport", "yes"), "must be true or false"),
        (
            with_change("workflows.0.name", "W\u0000"),
            "control character (U+0000) in “workflows.0.name”",
        ),
        ("[" * 5000 + "]" * 5000, "nested more than"),
        (json.dumps({"deep": nested(40)}), "nested more than 32 levels"),
    ],
)
def test_what_is_not_an_export_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(TransferRefused, match=re.escape(message)):
        document_read(text)


def test_a_huge_document_is_refused_before_it_is_parsed() -> None:
    body = good_body()
    body["padding"] = "x" * MAX_DOCUMENT_BYTES
    with pytest.raises(TransferRefused, match="an export is at most 2,000,000 bytes"):
        document_read(json.dumps(body))
    many = good_body()
    many["workflows"] = many["workflows"] * (MAX_WORKFLOWS + 1)
    with pytest.raises(TransferRefused, match="import at most 200 at a time"):
        document_read(json.dumps(many))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"adapter": "carrier-pigeon"}, "careflow has no adapter named “carrier-pigeon”"),
        ({"function": "sendFax"}, "sendFax"),
        ({"type": "teleport"}, "teleport"),
        ({"parameters": "not an object"}, "the parameters of step 1 are not an object"),
    ],
)
def test_forged_steps_are_reported_and_nothing_is_imported(
    clinics: Any, change: dict[str, Any], expected: str
) -> None:
    _, b = clinics
    body = good_body()
    body["workflows"][0]["definition"]["steps"][0].update(change)
    document = document_read(json.dumps(body))

    plan = import_plan(document=document, organization=b, mapping={"email": {A_MAIL: B_MAIL}})

    assert not plan.ok
    assert expected in "\n".join(plan.lines())
    with pytest.raises(ImportUnresolved):
        workflows_import(document=document, organization=b, mapping={"email": {A_MAIL: B_MAIL}})
    assert not Workflow.objects.filter(organization=b).exists()


def test_forged_references_change_nothing(clinics: Any) -> None:
    """The references are for people: the plan finds the senders in the steps themselves."""
    a, b = clinics
    body = exported(a, saved_workflow(a))
    body["references"] = {"adapters": {}, "customEventTypes": "lies"}
    plan = import_plan(document=document_read(json.dumps(body)), organization=b)
    assert {n.value for n in plan.workflows[0].senders} == {A_NUMBER, A_MAIL}
    assert not plan.ok


def test_sender_pairs_of_the_command(clinics: Any) -> None:
    a, _ = clinics
    document = document_read(export_json(exported(a, saved_workflow(a))))
    assert mapping_parse(
        [f"{A_NUMBER}={B_NUMBER}", f" {A_MAIL} = {B_MAIL} "], document=document
    ) == {
        "twilio": {A_NUMBER: B_NUMBER},
        "email": {A_MAIL: B_MAIL},
    }
    for bad, message in [("+1", "OLD=NEW"), ("=x", "OLD=NEW"), ("+1999=+1", "no workflow")]:
        with pytest.raises(ValueError, match=message):
            mapping_parse([bad], document=document)


def test_a_clinic_is_named_by_uuid_or_exact_name(clinics: Any) -> None:
    a, _ = clinics
    assert organization_named(str(a.uuid)) == a
    assert organization_named(" Clinic A ") == a
    with pytest.raises(LookupError, match="no clinic"):
        organization_named("clinic a")
    OrganizationFactory(name="Clinic A")
    with pytest.raises(LookupError, match="several clinics"):
        organization_named("Clinic A")


# --- dry-runs identically -------------------------------------------------------------------


def test_an_imported_workflow_dry_runs_as_the_original(clinics: Any) -> None:
    a, b = clinics
    original = saved_workflow(a)
    patients: list[Patient] = []
    for organization in (a, b):
        patient = PatientFactory(
            organization=organization,
            is_test=True,
            first_name="Dana",
            last_name="Ray",
            phone="+14155550123",
            email="dana@example.com",
        )
        ConsentFactory(patient=patient)
        ConsentFactory(patient=patient, channel=ConsentRecord.Channel.EMAIL)
        patients.append(patient)
    mapping = {"twilio": {A_NUMBER: B_NUMBER}, "email": {A_MAIL: B_MAIL}}
    document = document_read(export_json(exported(a, original)))
    [imported] = workflows_import(document=document, organization=b, mapping=mapping)

    now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    there = workflow_dry_run(workflow=original, patient=patients[0], now=now).as_dict()
    here = workflow_dry_run(workflow=imported, patient=patients[1], now=now).as_dict()

    def comparable(report: dict[str, Any]) -> list[str]:
        # Modulo the mapped senders and each clinic's own consent record's number.
        text = json.dumps(report["steps"], sort_keys=True, indent=1, default=str)
        text = re.sub(r"opt-in #\d+", "opt-in #N", text)
        text = re.sub(r'"consent_record_id": \d+', '"consent_record_id": N', text)
        return text.replace(B_NUMBER, A_NUMBER).replace(B_MAIL, A_MAIL).splitlines()

    assert [s["outcome"] for s in there["steps"]] == ["send", "wait", "send"], there["steps"]
    assert comparable(here) == comparable(there)
    assert here["steps"][0]["inputs"]["from"] == B_NUMBER
    assert "order" in here["steps"][0]["inputs"]["message"]
    assert (here["filter_matches"], here["enrolls"]) == (there["filter_matches"], there["enrolls"])


def test_a_decoded_document_is_bounded_as_a_file_is() -> None:
    body = good_body()
    body["workflows"][0]["description"] = "bell\u0007"
    with pytest.raises(TransferRefused, match=re.escape("control character (U+0007)")):
        document_read(body)
    assert document_read(good_body()).workflows[0]["name"] == "W"


@pytest.mark.django_db(transaction=True)
def test_two_imports_at_once_take_turns_for_the_names() -> None:
    """Both imports find "Shipped" free when they plan; the clinic's row lock makes the
    second plan again after the first commits, so it imports "Shipped (imported)"."""
    a = clinic("Clinic A", [A_NUMBER], [])
    b = clinic("Clinic B", [B_NUMBER], [])
    body = exported(a, saved_workflow(a, mail_from="{{customer.email}}"))
    del body["workflows"][0]["definition"]["steps"][2]
    document = document_read(export_json(body))
    mapping = {"twilio": {A_NUMBER: B_NUMBER}}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            workflows_import(document=document, organization=b, mapping=mapping)
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    names = sorted(Workflow.objects.filter(organization=b).values_list("name", flat=True))
    assert names == ["Shipped", "Shipped (imported)"]


def test_message_variants_per_language_travel_with_the_export_and_the_version(
    clinics: Any,
) -> None:
    a, b = clinics
    variants = {"es": {"message": "Hola {{customer.firstName}}, su pedido {{order.number}} salió."}}
    document = {"name": "Shipped", "description": "", "definition": definition()}
    document["definition"]["steps"][0]["parameters"]["variants"] = variants
    workflow = Workflow(organization=a, enabled=False)
    workflow_document_save(workflow=workflow, document=document)
    assert workflow.steps.get(position=1).parameters["variants"] == variants

    mapping = {"twilio": {A_NUMBER: B_NUMBER}, "email": {A_MAIL: B_MAIL}}
    [imported] = workflows_import(
        document=document_read(export_json(exported(a, workflow))), organization=b, mapping=mapping
    )
    # In the builder's definition shape, as a reply step's branches are: JSON text.
    step = workflow_document(imported)["definition"]["steps"][0]
    assert json.loads(step["parameters"]["variants"]) == variants
    version = WorkflowVersion.objects.get(workflow=imported)
    versioned = version.document["definition"]["steps"][0]["parameters"]["variants"]
    assert json.loads(versioned) == variants
    assert imported.steps.get(position=1).parameters["variants"] == variants
