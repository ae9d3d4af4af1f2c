from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Everything that reads the adapter registry (admin forms, validation, the builder, a
        # worker's engine) runs after the apps are ready, so it finds it full.
        from django.db.models.signals import post_save

        from integrations import checks  # noqa: F401 — registers the deploy checks
        from integrations.alerts import alert_delivery_task_register
        from integrations.analytics_page import ANALYTICS_PAGE
        from integrations.models import MessagingPolicy
        from integrations.patient_panel import PANEL
        from integrations.policy import messaging_policy_forget
        from integrations.providers import providers_register
        from integrations.recipes import recipes_register
        from integrations.selectors import run_step_messages
        from integrations.sending import messages_of_ended_runs_skip
        from integrations.tasks import alert_deliver, message_send
        from patients.panels import patient_panel_register
        from workflows.adapters import step_messages_register
        from workflows.goals import runs_ended_register
        from workflows.pages import workflow_page_register
        from workflows.tasks import message_send_task_register

        post_save.connect(
            lambda sender, instance, **kw: messaging_policy_forget(instance.organization_id),
            sender=MessagingPolicy,
            weak=False,
            dispatch_uid="messaging_policy_forget",
        )
        # The conversation on the patient page: patients cannot import the messages.
        patient_panel_register(PANEL)
        # The engine hands a message its run waits on to the send queue through this.
        message_send_task_register(message_send)
        # Alerts queue their delivery through this: the tasks module imports the service.
        alert_delivery_task_register(alert_deliver)
        # The engine's adapters, the messaging core's transports and the integration admin's
        # forms: one line per provider.
        providers_register()
        # The ready-made workflows the admin offers: they name the providers' functions.
        recipes_register()
        # The run page's messages per step: the engine cannot import the messaging models.
        step_messages_register(run_step_messages)
        # A run a goal or an exit ends sends none of its messages still waiting.
        runs_ended_register(messages_of_ended_runs_skip)
        # The workflow's analytics page counts messages: the engine's admin mounts it.
        workflow_page_register(ANALYTICS_PAGE)
