from django.apps import AppConfig
from django.db.models.signals import post_migrate, post_save


class PatientsConfig(AppConfig):
    name = "patients"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from patients import receivers
        from patients.audit import audit_connect
        from patients.models import Cart, Order, Patient
        from patients.panels import CONSENT_PANEL, NOTES_PANEL, patient_panel_register
        from patients.roles import roles_post_migrate

        post_save.connect(receivers.patient_saved, sender=Patient, dispatch_uid="patient_saved")
        post_save.connect(receivers.order_saved, sender=Order, dispatch_uid="order_saved")
        post_save.connect(receivers.cart_saved, sender=Cart, dispatch_uid="cart_saved")
        for model in receivers.LIFECYCLES:
            post_save.connect(
                receivers.lifecycle_saved,
                sender=model,
                dispatch_uid=f"lifecycle_saved:{model._meta.label}",
            )
        audit_connect()
        # Roles are code: every migrate (and test-database flush) re-applies patients.roles.
        post_migrate.connect(roles_post_migrate, sender=self, dispatch_uid="roles_post_migrate")
        patient_panel_register(CONSENT_PANEL)
        patient_panel_register(NOTES_PANEL)
