from django.apps import AppConfig


class BaselineConfig(AppConfig):
    name = "bench.baseline"
    label = "baseline"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from bench.baseline import receivers
        from bench.baseline.models import BaseOrder

        post_save.connect(receivers.order_saved, sender=BaseOrder, dispatch_uid="base_order_saved")
