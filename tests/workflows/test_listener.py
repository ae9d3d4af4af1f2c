"""Events reach the broker through PostgreSQL NOTIFY and the beat's listener: the saving
process does no broker work, a rolled-back save notifies nothing, and the listener
survives losing its session."""

import threading
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

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_worker")]


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


def _dispatch_tasks() -> list[int]:
    """The event ids of the dispatch tasks waiting in the broker's events queue."""
    from config.celery import app

    ids = []
    with app.connection_for_read() as broker:
        queue = broker.SimpleQueue("events")
        try:
            while True:
                message = queue.get(timeout=0.5)
                assert message.headers["task"] == "workflows.tasks.dispatch_event"
                ids.append(message.payload[0][0])
                message.ack()
        except queue.Empty:
            return ids
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


def test_the_listener_publishes_each_event_and_outlives_its_session(order: Order) -> None:
    other: Order = OrderFactory(patient=order.patient, organization=order.organization)
    _dispatch_tasks()
    stop = threading.Event()
    listener = threading.Thread(target=events_listen, args=(stop,), daemon=True)
    listener.start()
    try:
        wait_for(_listening_pid, what="the listener's LISTEN")
        _ship(order)
        first = Event.objects.get(type="order.shipped", subject_id=str(order.pk))
        assert wait_for(_dispatch_tasks, what="the dispatch task") == [first.pk]
        # an administrator (or a failover) terminates the listener's session
        pid = _listening_pid()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_for(lambda: _listening_pid() not in (None, pid), timeout=10, what="a new session")
        _ship(other)
        second = Event.objects.get(type="order.shipped", subject_id=str(other.pk))
        assert wait_for(_dispatch_tasks, what="the next dispatch task") == [second.pk]
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
