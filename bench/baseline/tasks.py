"""The baseline's one task: read the row, call Twilio through the same HTTP client class
careflow uses (same timeout, same keep-alive pool), at the same sandbox."""

from functools import lru_cache

from celery import shared_task
from django.conf import settings
from twilio.rest import Client

from integrations.twilio.client import BaseUrlHttpClient


@lru_cache(maxsize=1)
def _client() -> Client:
    return Client(
        settings.BENCH_TWILIO_ACCOUNT_SID,
        settings.BENCH_TWILIO_AUTH_TOKEN,
        http_client=BaseUrlHttpClient(
            base_url=settings.TWILIO_API_BASE_URL, timeout=settings.TWILIO_HTTP_TIMEOUT
        ),
    )


def _send(order_id: int) -> str:
    from bench.baseline.models import BaseOrder

    order = BaseOrder.objects.get(pk=order_id)
    message = _client().messages.create(
        to=order.phone,
        from_=settings.BENCH_TWILIO_FROM,
        body=f"Hi {order.first_name}, order {order.number} has shipped!",
    )
    return message.sid


@shared_task
def send_sms(order_id: int) -> str:
    return _send(order_id)


# The hand-written shaping baseline for bench/burst.py: Celery's own token bucket, applied
# per worker node (one node here), configured from the environment.
@shared_task(
    rate_limit=settings.BENCH_RATE_LIMIT if hasattr(settings, "BENCH_RATE_LIMIT") else None
)
def send_sms_limited(order_id: int) -> str:
    return _send(order_id)
