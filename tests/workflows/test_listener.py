"""Events reach the broker through PostgreSQL NOTIFY and the beat's listener: the saving
process does no broker work, a rolled-back save notifies nothing, the listener wakes a
worker once for however many events arrive before one starts on them, and it survives
losing its session."""

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction

from patients.models import Order
from tests.conftest import wait_for
from tests.factories import OrderFactory, SmsStepFactory, WorkflowFactory
from workflows.listener import EVENTS_CHANNEL, _connect, events_listen
from workflows.models import Event
from workflows.publishing import events_publish
from workflows.waiting import events_waiting_take

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("no_worker", "no_wake_up_pending"),
]


@pytest.fixture
def no_wake_up_pending() -> Iterator[None]:
    """No earlier test's events wait in the list, and no wake-up flag (no worker took its
    task) holds this one's back."""
    while events_waiting_take(1000):
        pass
    yield
    while events_waiting_take(1000):
        pass


@pytest.fixture
def order() -> Order:
    workflow = WorkflowFactory(trigger="order.shipped")
    SmsStepFactory(workflow=workflow)
    order: Order = OrderFactory(
        patient__organization=workflow.organization, organization=workflow.organization
    )
    return order


@pytest.fixture
def notified() -> Iterator[psycopg.Connection[Any]]:
    with _connect() as listening:
        listening.execute(f"LISTEN {EVENTS_CHANNEL}")
        list(listening.notifies(timeout=0.2))  # the fixtures' own events
        yield listening


def _ship(order: Order) -> None:
    order.status = Order.Status.SHIPPED
    order.save()


def _dispatch_tasks() -> list[list[Any]]:
    """The arguments of the dispatch tasks waiting in the broker's events queue (a wake-up
    has none: its worker takes the oldest events waiting), taken out of it with whatever
    else waits there."""
    from config.celery import app

    tasks = []
    with app.connection_for_read() as broker:
        queue = broker.SimpleQueue("events")
        # Non-blocking reads until the queue has stayed empty for half a second: a blocking
        # `get(timeout=…)` issues BRPOP, which once hung a CI run for good (kombu's Redis
        # poll never timed out).
        quiet_until = time.monotonic() + 0.5
        try:
            while time.monotonic() < quiet_until:
                try:
                    message = queue.get_nowait()
                except queue.Empty:
                    time.sleep(0.05)
                    continue
                # A beat stopped by `no_worker` may have left its periodic tasks queued.
                if message.headers["task"] == "workflows.tasks.events_dispatch":
                    tasks.append(message.payload[0])
                message.ack()
                quiet_until = time.monotonic() + 0.5
            return tasks
        finally:
            queue.close()


def test_an_event_is_notified_when_its_transaction_commits_and_not_before(
    order: Order, notified: psycopg.Connection[Any]
) -> None:
    with transaction.atomic():
        _ship(order)
        assert list(notified.notifies(timeout=0.3)) == []
    event = Event.objects.get(type="order.shipped")
    assert [n.payload for n in notified.notifies(timeout=2, stop_after=1)] == [str(event.pk)]


def test_a_rolled_back_save_notifies_nothing(
    order: Order, notified: psycopg.Connection[Any]
) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        _ship(order)
        raise RuntimeError("the request failed after the save")
    assert not Event.objects.filter(type="order.shipped").exists()
    assert list(notified.notifies(timeout=0.5)) == []


def test_the_saving_process_publishes_nothing_itself(order: Order) -> None:
    _dispatch_tasks()  # the fixtures' events
    _ship(order)
    assert _dispatch_tasks() == []  # no listener is running: only the relay would act


def test_events_published_before_a_worker_starts_share_one_wake_up() -> None:
    _dispatch_tasks()
    events_publish(event_ids=[11, 12])  # notified together
    events_publish(event_ids=[13])  # all three before any worker starts
    assert _dispatch_tasks() == [[]]
    # a worker starts on it and takes a batch: the events after that need a new wake-up
    assert events_waiting_take(2) == [11, 12]
    events_publish(event_ids=[14, 15])
    assert _dispatch_tasks() == [[]]
    assert events_waiting_take(20) == [13, 14, 15]
    assert events_waiting_take(20) == []


def test_without_the_shared_redis_events_get_a_task_per_batch(settings: Any) -> None:
    from workflows.tasks import DISPATCH_BATCH

    settings.CAREFLOW_THROTTLE_REDIS_URL = ""  # the embedded setup: no coordination Redis
    _dispatch_tasks()
    event_ids = list(range(1, DISPATCH_BATCH + 4))
    events_publish(event_ids=event_ids)
    assert _dispatch_tasks() == [[event_ids[:DISPATCH_BATCH]], [event_ids[DISPATCH_BATCH:]]]
    assert events_waiting_take(100) == []


def test_events_notified_together_are_published_together(
    order: Order, monkeypatch: pytest.MonkeyPatch
) -> None:
    others = [OrderFactory(patient=order.patient, organization=order.organization) for _ in "ab"]
    published: list[list[int]] = []
    monkeypatch.setattr(
        "workflows.listener.events_publish",
        lambda *, event_ids: published.append(list(event_ids)),
    )
    stop = threading.Event()
    listener = threading.Thread(target=events_listen, args=(stop,), daemon=True)
    listener.start()
    try:
        wait_for(_listening_pid, what="the listener's LISTEN")
        with transaction.atomic():  # three events, notified at one commit
            for each in (order, *others):
                _ship(each)
        shipped = set(Event.objects.filter(type="order.shipped").values_list("pk", flat=True))
        wait_for(lambda: {i for ids in published for i in ids} == shipped, what="the three")
    finally:
        stop.set()
        listener.join(timeout=5)
    assert len(published) < 3  # in one Redis round trip (two, should a read split them)


def test_the_listener_wakes_a_worker_and_outlives_its_session(order: Order) -> None:
    other: Order = OrderFactory(patient=order.patient, organization=order.organization)
    _dispatch_tasks()
    stop = threading.Event()
    listener = threading.Thread(target=events_listen, args=(stop,), daemon=True)
    listener.start()
    try:
        wait_for(_listening_pid, what="the listener's LISTEN")
        _ship(order)
        first = Event.objects.get(type="order.shipped", subject_id=str(order.pk))
        assert wait_for(_dispatch_tasks, what="the wake-up") == [[]]
        assert events_waiting_take(20) == [first.pk]  # as the worker woken does
        # an administrator (or a failover) terminates the listener's session
        pid = _listening_pid()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_for(lambda: _listening_pid() not in (None, pid), timeout=10, what="a new session")
        _ship(other)
        second = Event.objects.get(type="order.shipped", subject_id=str(other.pk))
        assert wait_for(_dispatch_tasks, what="the next wake-up") == [[]]
        assert events_waiting_take(20) == [second.pk]
    finally:
        stop.set()
        listener.join(timeout=5)
    assert not listener.is_alive()


def _listening_pid() -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND query = %s AND pid <> pg_backend_pid()",
            [f"LISTEN {EVENTS_CHANNEL}"],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else None
