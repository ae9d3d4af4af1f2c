"""Claims under concurrency, on PostgreSQL with real connections per thread: two relays
dispatching one event make one run; two workers claiming one run, one wins; a run whose
worker died is taken over after its lease, not before."""

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from common.coordination import coordination_redis
from patients.models import Order
from tests.factories import OrderFactory, SmsStepFactory, WorkflowFactory
from workflows.engine import event_dispatch, events_dispatch, run_claim, runs_due
from workflows.models import Event, Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_worker")]


def _in_threads(target: Callable[[], Any], count: int = 6) -> list[Any]:
    results: list[Any] = []
    barrier = threading.Barrier(count)

    def run() -> None:
        try:
            barrier.wait()
            results.append(target())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _shipped_event() -> Event:
    workflow = WorkflowFactory(trigger="order.shipped")
    SmsStepFactory(workflow=workflow)
    order = OrderFactory(
        patient__organization=workflow.organization, organization=workflow.organization
    )
    order.status = Order.Status.SHIPPED
    order.save()
    return Event.objects.get(type="order.shipped")


def test_concurrent_dispatches_of_one_event_make_one_run() -> None:
    event = _shipped_event()
    results = _in_threads(lambda: event_dispatch(event_id=event.pk))
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 0, 1]
    assert Run.objects.filter(event=event).count() == 1


def test_concurrent_claims_of_one_run_have_one_winner() -> None:
    event = _shipped_event()
    (run_id,) = event_dispatch(event_id=event.pk)
    results = _in_threads(lambda: run_claim(run_id=run_id))
    assert results.count(True) == 1


def test_a_dead_workers_run_is_taken_over_after_its_lease_only() -> None:
    event = _shipped_event()
    (run_id,) = event_dispatch(event_id=event.pk)
    assert run_claim(run_id=run_id)
    assert not run_claim(run_id=run_id)  # leased
    assert run_id not in [r for r, _ in runs_due()]
    Run.objects.filter(pk=run_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert run_id in [r for r, _ in runs_due()]
    assert run_claim(run_id=run_id)


def test_a_run_created_claimed_is_taken_over_after_its_lease_when_its_worker_died() -> None:
    # events_dispatch creates the runs it advances inline already claimed; a worker killed
    # before continuing one leaves it running, which is recovered like any dead claim.
    event = _shipped_event()
    _, (run,) = events_dispatch(event_ids=[event.pk], claim_per_event=1)
    assert run.status == Run.Status.RUNNING and run.lease_expires_at is not None
    assert not run_claim(run_id=run.pk)
    assert run.pk not in [r for r, _ in runs_due()]
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert run.pk in [r for r, _ in runs_due()]
    assert run_claim(run_id=run.pk)


def test_only_the_asked_number_of_runs_is_created_claimed() -> None:
    event = _shipped_event()
    for _ in range(2):
        workflow = WorkflowFactory(organization=event.organization, trigger="order.shipped")
        SmsStepFactory(workflow=workflow)
    claimed, runs = events_dispatch(event_ids=[event.pk], claim_per_event=2)
    assert claimed == 1
    assert [run.status for run in runs] == [Run.Status.RUNNING] * 2 + [Run.Status.PENDING]
    # dispatched once
    assert events_dispatch(event_ids=[event.pk], claim_per_event=2) == (0, [])


def test_the_sweeper_releases_waiting_runs_at_their_due_time() -> None:
    event = _shipped_event()
    (run_id,) = event_dispatch(event_id=event.pk)
    due = timezone.now() + timedelta(seconds=3)
    Run.objects.filter(pk=run_id).update(status=Run.Status.WAITING, due_at=due)
    assert runs_due() == []
    assert runs_due(lookahead=timedelta(seconds=5)) == [(run_id, due)]


def test_relays_claim_each_stale_event_once_and_retry_only_after_a_while() -> None:
    from workflows.engine import REQUEUE_AFTER, events_undispatched

    _shipped_event()
    old = timezone.now() - timedelta(seconds=30)
    Event.objects.update(created_at=old)
    claimed = _in_threads(events_undispatched, count=4)
    ids = [event_id for batch in claimed for event_id in batch]
    assert sorted(ids) == sorted(Event.objects.values_list("id", flat=True))  # each once
    assert events_undispatched() == []  # still queued: not relayed again
    Event.objects.update(relayed_at=timezone.now() - REQUEUE_AFTER - timedelta(seconds=1))
    assert len(events_undispatched()) == Event.objects.count()  # its task may be lost: again


def test_sweepers_push_each_run_once_while_it_is_queued() -> None:
    event = _shipped_event()
    (run_id,) = event_dispatch(event_id=event.pk)
    Run.objects.filter(pk=run_id).update(created_at=timezone.now() - timedelta(seconds=30))
    pushed = _in_threads(runs_due, count=4)
    assert sorted(len(batch) for batch in pushed) == [0, 0, 0, 1]
    assert runs_due() == []


def test_a_woken_run_is_swept_again_only_if_its_wake_up_was_lost(settings: Any) -> None:
    from workflows.engine import run_wake

    settings.CAREFLOW_RELAY_AFTER_SECONDS = 5.0
    event = _shipped_event()
    (run_id,) = event_dispatch(event_id=event.pk)
    later = timezone.now() + timedelta(days=1)
    Run.objects.filter(pk=run_id).update(status=Run.Status.WAITING, due_at=later)
    run_wake(run_id=run_id)  # a reply came: its task is queued on commit
    run = Run.objects.get(pk=run_id)
    assert run.due_at is not None and run.due_at <= timezone.now()
    assert runs_due() == []  # queued behind other work: no second task for it
    # Still waiting 5 s after its wake-up: that task was lost, the sweeper pushes it.
    Run.objects.filter(pk=run_id).update(
        pushed_at=F("pushed_at") - timedelta(seconds=5, milliseconds=10)
    )
    assert runs_due() == [(run_id, run.due_at)]


@pytest.fixture(autouse=True)
def published_at_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The saving process hands each event to the broker as its transaction commits, in the
    saving thread. Its background publisher batches whatever has piled up by the time its
    thread runs: how many tasks the queue gets for N events then depends on scheduling (one
    each on an idle machine, fewer under load), and these tests count the tasks queued."""
    from workflows.publishing import events_publish, publisher

    monkeypatch.setattr(publisher, "submit", lambda event_id: events_publish(event_ids=[event_id]))


@pytest.fixture
def publishing(settings: Any) -> None:
    """The saving process publishes each event after commit (as on SQLite), and without the
    shared Redis each gets a dispatch task of its own: the broker's events queue holds one
    task per event, without a beat listener."""
    settings.CAREFLOW_EVENTS_NOTIFY = False
    settings.CAREFLOW_THROTTLE_REDIS_URL = ""


def _ship_orders(count: int) -> list[int]:
    """Ship `count` orders; the only events left (and queued) are their order.shipped."""
    from config.celery import app as celery_app

    workflow = WorkflowFactory(trigger="order.shipped")
    SmsStepFactory(workflow=workflow)
    orders = OrderFactory.create_batch(
        count, patient__organization=workflow.organization, organization=workflow.organization
    )
    from workflows.waiting import events_waiting_take

    # the orders' and patients' creation events, published as they committed
    Event.objects.all().delete()
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("events")
    while events_waiting_take(1000):
        pass
    for order in orders:
        order.status = Order.Status.SHIPPED
        order.save()
    return list(Event.objects.order_by("id").values_list("id", flat=True))


@pytest.mark.usefixtures("publishing")
def test_a_relay_takes_only_the_oldest_events_the_queue_cannot_account_for() -> None:
    from workflows.engine import events_undispatched

    shipped = _ship_orders(5)
    Event.objects.update(created_at=timezone.now() - timedelta(seconds=30))
    assert events_undispatched(queued=5) == []  # all five may still be in the queue
    assert events_undispatched(queued=3) == shipped[:2]  # at least two were lost: the oldest
    assert events_undispatched(queued=0) == shipped[2:]


@pytest.mark.usefixtures("publishing")
def test_under_steady_traffic_a_relay_takes_the_events_that_later_dispatches_overtook() -> None:
    from workflows.engine import REQUEUE_AFTER, events_undispatched

    now = timezone.now()
    queued = _ship_orders(3)  # their tasks wait in the queue, behind a few of beat's
    Event.objects.filter(pk__in=queued).update(created_at=now - timedelta(seconds=5))
    organization = Event.objects.get(pk=queued[0]).organization

    def event(key: str, age: float, **fields: Any) -> int:
        created_at = now - timedelta(seconds=age)
        return Event.objects.create(
            organization=organization,
            type="order.shipped",
            dedupe_key=key,
            created_at=created_at,
            **fields,
        ).pk

    lost = event("lost", 30)
    relayed_lost = event("relayed-lost", 200, relayed_at=now - REQUEUE_AFTER * 2)
    # no event dispatched yet: nothing shows the queue has moved past any of them
    assert events_undispatched(queued=6) == []
    # an event recorded 10 s ago has been dispatched: everything published before it is gone
    event("dispatched", 10, dispatched_at=now)
    assert events_undispatched(queued=6) == sorted([lost, relayed_lost])
    # and once relayed, they are not taken again until REQUEUE_AFTER has passed
    assert events_undispatched(queued=6) == []


@pytest.mark.usefixtures("publishing")
def test_relay_events_leaves_a_backlog_in_the_broker_alone_and_relays_lost_tasks() -> None:
    from config.celery import app as celery_app
    from workflows.tasks import _queued, events_relay

    # given five events whose dispatch tasks wait in the broker (no worker is consuming)
    _ship_orders(5)
    assert _queued("events") == 5
    Event.objects.update(created_at=timezone.now() - timedelta(seconds=30))
    # then the relay, seeing them queued, queues nothing more
    assert events_relay() == 0
    assert _queued("events") == 5
    # and once the broker has lost them, it relays them all
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("events")
    assert events_relay() == 5
    assert _queued("events") == 1  # one task dispatches a batch of relayed events


def test_relay_events_leaves_events_waiting_in_the_list_alone_and_relays_lost_ones(
    settings: Any,
) -> None:
    from config.celery import app as celery_app
    from workflows.tasks import _queued, events_relay
    from workflows.waiting import events_waiting_take

    settings.CAREFLOW_EVENTS_NOTIFY = False  # the saving process publishes, with Redis
    # given five events waiting in the list, with one wake-up queued (no worker consuming)
    shipped = _ship_orders(5)
    assert _queued("events") == 1
    Event.objects.update(created_at=timezone.now() - timedelta(seconds=30))
    # then the relay, seeing them waiting, queues nothing more
    assert events_relay() == 0
    # and once a worker died holding them (taken off the list, never dispatched), it relays
    # them all
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("events")
    assert events_waiting_take(20) == shipped
    assert events_relay() == 5


def test_a_worker_woken_dispatches_every_event_waiting_a_batch_at_a_time(settings: Any) -> None:
    from workflows.tasks import DISPATCH_BATCH, events_dispatch
    from workflows.waiting import events_waiting_count

    settings.CAREFLOW_EVENTS_NOTIFY = False  # the saving process publishes, with Redis
    shipped = _ship_orders(DISPATCH_BATCH * 2 + 5)
    assert events_waiting_count() == len(shipped)
    events_dispatch()  # what the one wake-up queued for all of them does
    assert events_waiting_count() == 0
    assert not Event.objects.filter(dispatched_at__isnull=True).exists()
    assert sorted(Run.objects.values_list("event_id", flat=True)) == shipped
    # every run was advanced to its end in that task (this clinic has no Twilio
    # integration: failed, saying so), none left to a sweeper
    assert set(Run.objects.values_list("error", flat=True)) == {
        "step 1: this clinic has no enabled Twilio integration"
    }


def test_the_relay_wakes_a_worker_for_events_left_waiting_without_a_wake_up(
    settings: Any,
) -> None:
    from config.celery import app as celery_app
    from workflows.tasks import _queued, events_relay
    from workflows.waiting import WAKE_KEY, events_waiting_count

    settings.CAREFLOW_EVENTS_NOTIFY = False  # the saving process publishes, with Redis
    shipped = _ship_orders(3)
    assert events_waiting_count() == len(shipped)
    # the wake-up was lost (its worker died, the broker lost it) and its flag expired
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("events")
    coordination_redis().delete(WAKE_KEY)
    assert events_relay() == 0  # the events are not relayed one by one: they wait in the list
    assert _queued("events") == 1  # but a worker is woken for them
    assert events_waiting_count() == len(shipped)


def test_a_worker_woken_for_a_long_backlog_leaves_the_rest_to_a_fresh_wake_up(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config.celery import app as celery_app
    from workflows import tasks
    from workflows.waiting import events_waiting_count

    settings.CAREFLOW_EVENTS_NOTIFY = False
    monkeypatch.setattr(tasks, "DISPATCH_BATCH", 2)
    monkeypatch.setattr(tasks, "WAKE_BATCHES", 2)
    shipped = _ship_orders(5)
    assert events_waiting_count() == len(shipped)
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("events")  # the wake-up this task stands for
    tasks.events_dispatch()
    assert Event.objects.filter(dispatched_at__isnull=True).count() == 1
    assert events_waiting_count() == 1
    assert tasks._queued("events") == 1  # a fresh wake-up for the one left
