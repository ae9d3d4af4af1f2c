"""The roles every deployment has (support staff, clinic admins, clinic staff) as auth groups.

The groups and their permissions are written out here as they were when this migration was
made, not imported from `patients.roles`: a migration is history, and it must still run on a
fresh database when the module later names a model that does not exist yet at this point.
After migrate, `patients.roles.roles_post_migrate` brings the groups to the module's current
definition; `tests/patients/test_roles.py` checks both.
"""

from typing import Any

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

# What support staff and clinic admins both read: a clinic's records, its workflows and their
# runs, and its messages (support staff in every clinic, clinic admins in their own).
READ_CLINIC = [
    "integrations.view_inboundmessage",
    "integrations.view_integration",
    "integrations.view_messagingpolicy",
    "integrations.view_outboundmessage",
    "patients.view_appointment",
    "patients.view_auditentry",
    "patients.view_cart",
    "patients.view_consentrecord",
    "patients.view_lead",
    "patients.view_order",
    "patients.view_organization",
    "patients.view_patient",
    "patients.view_prescription",
    "patients.view_questionnairesubmission",
    "patients.view_requisition",
    "patients.view_subscription",
    "patients.view_task",
    "workflows.view_event",
    "workflows.view_run",
    "workflows.view_step",
    "workflows.view_steprun",
    "workflows.view_workflow",
]

ROLES = {
    "Support staff": [
        *READ_CLINIC,
        "integrations.add_integration",
        "integrations.change_integration",
        "patients.change_organization",
        "patients.view_all_organizations",
    ],
    "Clinic admins": [
        *READ_CLINIC,
        "integrations.add_messagingpolicy",
        "integrations.change_messagingpolicy",
        "integrations.review_inboundmessage",
        "patients.add_appointment",
        "patients.add_cart",
        "patients.add_consentrecord",
        "patients.add_lead",
        "patients.add_order",
        "patients.add_patient",
        "patients.add_prescription",
        "patients.add_questionnairesubmission",
        "patients.add_requisition",
        "patients.add_subscription",
        "patients.add_task",
        "patients.change_appointment",
        "patients.change_cart",
        "patients.change_lead",
        "patients.change_order",
        "patients.change_patient",
        "patients.change_prescription",
        "patients.change_questionnairesubmission",
        "patients.change_requisition",
        "patients.change_subscription",
        "patients.change_task",
        "workflows.add_step",
        "workflows.add_workflow",
        "workflows.change_run",
        "workflows.change_step",
        "workflows.change_workflow",
        "workflows.delete_step",
        "workflows.delete_workflow",
    ],
    "Clinic staff": [
        "integrations.review_inboundmessage",
        "integrations.view_inboundmessage",
        "integrations.view_outboundmessage",
        "patients.add_consentrecord",
        "patients.view_consentrecord",
        "patients.view_order",
        "patients.view_patient",
        "workflows.view_run",
        "workflows.view_step",
        "workflows.view_steprun",
        "workflows.view_workflow",
    ],
}


def roles_create(apps: Any, schema_editor: Any) -> None:
    using = schema_editor.connection.alias
    # On a fresh database the permissions do not exist yet: Django creates them after
    # migrate (post_migrate), and this migration runs before that.
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, permissions in ROLES.items():
        wanted = {tuple(permission.split(".")) for permission in permissions}
        found = [
            permission
            for permission in Permission.objects.using(using).select_related("content_type")
            if (permission.content_type.app_label, permission.codename) in wanted
        ]
        if len(found) != len(wanted):
            missing = wanted - {(p.content_type.app_label, p.codename) for p in found}
            raise LookupError(f"Role {name!r}: no such permissions {sorted(missing)}")
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.set(found)


def roles_delete(apps: Any, schema_editor: Any) -> None:
    using = schema_editor.connection.alias
    apps.get_model("auth", "Group").objects.using(using).filter(name__in=ROLES).delete()
    apps.get_model("auth", "Permission").objects.using(using).filter(
        content_type__app_label="patients", codename="view_all_organizations"
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("patients", "0006_audit_trail"),
        ("workflows", "0004_requeue_stamps"),
        ("integrations", "0003_throttle"),
        # The clinic staff's permission to mark inbound messages reviewed.
        ("integrations", "0004_inbound_review_permission"),
        # The permissions themselves are created by auth and contenttypes.
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="organization",
            options={
                "ordering": ["name"],
                "permissions": [
                    ("view_all_organizations", "Can see and act on every clinic's records")
                ],
            },
        ),
        migrations.RunPython(roles_create, roles_delete),
    ]
