from typing import Any

from django.db import transaction


def order_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if created or kwargs.get("raw") or instance.status != "shipped":
        return
    from django.conf import settings

    from bench.baseline.tasks import send_sms, send_sms_limited

    task = send_sms_limited if getattr(settings, "BENCH_RATE_LIMIT", None) else send_sms
    order_id = instance.pk
    transaction.on_commit(lambda: task.delay(order_id))
