from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from patients.recording import event_recorder_register
        from workflows.models import Event
        from workflows.outbox import event_record
        from workflows.publishing import dispatch_task_register
        from workflows.tasks import events_dispatch

        # The records record their events into the engine's outbox, which they cannot
        # import (the engine is above them): it is installed here.
        event_recorder_register(
            record=event_record, recorded=lambda key: Event.objects.get(dedupe_key=key)
        )
        # Publishing hands events to the dispatch task, whose module wakes workers through
        # publishing: so publishing is told the task rather than importing it.
        dispatch_task_register(events_dispatch)
