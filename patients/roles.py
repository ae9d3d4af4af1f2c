"""The roles every deployment has, as data: one auth Group per role and the permissions it holds.

A role says what a user may do; tenancy (`patients.tenancy`) says where. Clinic roles act in the
clinic of their StaffMembership; support staff act in every clinic through the
`patients.view_all_organizations` permission, without being superusers.

Migration `patients/0007_roles` creates the groups in every database. After every `migrate`
(and every test-database flush) `roles_post_migrate` sets each group's permissions to exactly
this definition, so a change here reaches every deployment with its next migrate, and a
permission added to a role group by hand in the admin is taken away again: a custom role is
a new group, not an edited one. `tests/patients/test_roles.py` checks the groups against this
module, and `tests/admin/test_roles.py` checks what each role can open in the admin.
"""

from typing import Any

from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.recorder import MigrationRecorder

SUPPORT_STAFF = "Support staff"
CLINIC_ADMIN = "Clinic admins"
CLINIC_STAFF = "Clinic staff"

VIEW_ALL_ORGANIZATIONS = "patients.view_all_organizations"
REVIEW_INBOUND = "integrations.review_inboundmessage"

# The migration that first creates the groups; before it, there is nothing to keep in step.
ROLES_MIGRATION = ("patients", "0007_roles")

# A patient's records other than orders, as far as roles are concerned.
PATIENT_RECORDS = (
    "patients.subscription",
    "patients.appointment",
    "patients.cart",
    "patients.questionnairesubmission",
    "patients.prescription",
    "patients.requisition",
    "patients.lead",
    "patients.task",
    "patients.patientnote",
)


def _grant(actions: str, *models: str) -> set[str]:
    """`_grant("view add", "patients.order")` → {"patients.view_order", "patients.add_order"}."""
    granted = set()
    for model in models:
        app_label, model_name = model.split(".")
        granted |= {f"{app_label}.{action}_{model_name}" for action in actions.split()}
    return granted


ROLES: dict[str, frozenset[str]] = {
    # Every clinic; enters and rotates credentials (Twilio, the custom-event webhook token);
    # links staff accounts to their clinic (StaffMembership);
    # reads everything else to answer "why did this patient not get a text?"; changes no
    # clinic's workflows, policies, patients or messages.
    SUPPORT_STAFF: frozenset(
        {
            VIEW_ALL_ORGANIZATIONS,
            *_grant("view change", "patients.organization"),
            *_grant("view add change", "integrations.integration"),
            # Any clinic's failure alerts: who is told, and the log of what was.
            *_grant("view add change", "integrations.alertsettings"),
            # Who works in which clinic; accounts themselves stay with superusers.
            *_grant("view add change delete", "patients.staffmembership"),
            *_grant(
                "view",
                "patients.patient",
                "patients.consentrecord",
                "patients.order",
                *PATIENT_RECORDS,
                "patients.auditentry",
                "workflows.workflow",
                "workflows.step",
                "workflows.customeventtype",
                "workflows.segment",
                "workflows.event",
                "workflows.run",
                "workflows.steprun",
                "workflows.enrollmentskip",
                "integrations.messagingpolicy",
                "integrations.outboundmessage",
                "integrations.inboundmessage",
                "integrations.alert",
                "integrations.broadcast",
                # The API keys of every clinic (never the keys themselves: only a hash is kept).
                "integrations.apikey",
            ),
        }
    ),
    # Their own clinic: builds workflows, sets its messaging policy, keeps its patients and
    # their records, records consent (history is never edited), reviews inbound messages,
    # retries failed runs, reads its audit trail; sees its integrations without secrets.
    CLINIC_ADMIN: frozenset(
        {
            *_grant("view", "patients.organization", "patients.auditentry"),
            *_grant("view add change", "patients.patient", "patients.order", *PATIENT_RECORDS),
            *_grant("view add", "patients.consentrecord"),
            *_grant("view add change delete", "workflows.workflow", "workflows.step"),
            # The clinic's own event types (custom.*) and their data schemas; one a workflow
            # uses cannot be deleted (the admin refuses).
            *_grant("view add change delete", "workflows.customeventtype"),
            # The clinic's segments: saved filters over its patients, counted live.
            *_grant("view add change delete", "workflows.segment"),
            *_grant("view", "workflows.event", "workflows.steprun", "workflows.enrollmentskip"),
            # change_run is the permission to retry a failed run; runs are never edited.
            *_grant("view change", "workflows.run"),
            *_grant("view add change", "integrations.messagingpolicy"),
            # Who hears of failures, and when; the log of alerts is read-only for everyone.
            *_grant("view add change", "integrations.alertsettings"),
            # The clinic's API keys: creates them (each shown once) and revokes them (change
            # is the permission to revoke; keys are never edited).
            *_grant("view add change", "integrations.apikey"),
            # Broadcasts to the clinic's segments: drafts, sending, scheduling, cancelling
            # (change); a sent one is never edited.
            *_grant("view add change", "integrations.broadcast"),
            *_grant(
                "view",
                "integrations.integration",
                "integrations.outboundmessage",
                "integrations.inboundmessage",
                "integrations.alert",
            ),
            REVIEW_INBOUND,
        }
    ),
    # Their own clinic: reads patients, orders, staff notes, workflows, runs and messages;
    # records consent; marks inbound messages reviewed. Edits no workflow, policy or record.
    CLINIC_STAFF: frozenset(
        {
            *_grant("view", "patients.patient", "patients.order", "patients.patientnote"),
            *_grant("view add", "patients.consentrecord"),
            *_grant(
                "view",
                "workflows.workflow",
                "workflows.step",
                "workflows.segment",
                "workflows.run",
                "workflows.steprun",
                "workflows.enrollmentskip",
                "integrations.outboundmessage",
                "integrations.inboundmessage",
                "integrations.alert",
                "integrations.broadcast",
            ),
            REVIEW_INBOUND,
        }
    ),
}


def role_groups_sync(*, apps: Apps = global_apps, using: str = DEFAULT_DB_ALIAS) -> None:
    """Create each role's group and set its permissions to exactly `ROLES`.

    Creates missing permissions first (on a fresh database, or after a flush, the post_migrate
    handler of a later app may not have run yet). A permission no model declares is an
    error, not a silent omission: a typo here must not quietly shrink a role.
    """
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    known = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.using(using).values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    for name, permissions in ROLES.items():
        unknown = sorted(permissions - known.keys())
        if unknown:
            raise LookupError(f"The role {name!r} names permissions that do not exist: {unknown}")
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.set([known[permission] for permission in permissions])


def roles_post_migrate(
    sender: Any, *, apps: Apps = global_apps, using: str = DEFAULT_DB_ALIAS, **kwargs: Any
) -> None:
    """post_migrate: bring the role groups back to `ROLES` once their migration is applied
    (a database migrated back before it has no roles to keep). `flush` sends no `apps`."""
    if ROLES_MIGRATION not in MigrationRecorder(connections[using]).applied_migrations():
        return
    role_groups_sync(apps=apps, using=using)
