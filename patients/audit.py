"""The audit trail: who changed which workflow, step, integration, consent record, messaging
policy, or patient record a workflow or the API can write (the patient, orders, appointments,
subscriptions, prescriptions, requisitions, carts, tasks, notes), and when, with before/after values. Captured from model signals so that no
code path can change an audited record without a trace; secrets are never recorded."""

import contextvars
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.apps import apps
from django.contrib.auth.models import AnonymousUser
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_save
from django.http import HttpRequest, HttpResponse

from common.db import ReplacedRowReturned, model_insert
from patients.models import AuditEntry

MASK = "••••••"
AUDITED = (
    "workflows.Workflow",
    "workflows.Step",
    "integrations.Integration",
    "integrations.MessagingPolicy",
    "patients.ConsentRecord",
    # What a workflow's "Update record" step writes (integrations.records).
    "patients.Patient",
    "patients.Appointment",
    "patients.Subscription",
    "patients.Task",
    "patients.PatientNote",
    # What the HTTP API writes (integrations.api), each change named by its API key.
    "patients.Order",
    "patients.Prescription",
    "patients.Requisition",
    "patients.Cart",
)
SECRET_FIELDS = {"integrations.Integration": {"secrets"}}
IGNORED_FIELDS = {"updated_at", "created_at"}

_actor: contextvars.ContextVar[Any] = contextvars.ContextVar("careflow_audit_actor", default=None)
# A non-user actor (a workflow's run) named by the code making the change.
_actor_name: contextvars.ContextVar[str] = contextvars.ContextVar(
    "careflow_audit_actor_name", default=""
)
ACTOR_LENGTH = AuditEntry._meta.get_field("actor_repr").max_length or 150


class AuditActorMiddleware:
    """Makes the request's user the actor of any audited change made while handling it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _actor.set(request)
        try:
            return self.get_response(request)
        finally:
            _actor.reset(token)


@contextmanager
def audit_actor(name: str) -> Iterator[None]:
    """Name the actor of the audited changes made inside, where no signed-in user makes
    them: a worker writing for a workflow ("workflow “Reminder” run 12")."""
    token = _actor_name.set(name[:ACTOR_LENGTH])
    try:
        yield
    finally:
        _actor_name.reset(token)


def audit_actor_name() -> str:
    """Who audited changes made now are by: the named actor, else the signed-in user, else
    "system"."""
    actor = audit_actor_user()
    return _actor_name.get() or (str(actor)[:ACTOR_LENGTH] if actor else "system")


def audit_actor_user() -> Any:
    request = _actor.get()
    user = getattr(request, "user", None) if request is not None else None
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return None
    return user


def _label(instance: models.Model) -> str:
    return f"{instance._meta.app_label}.{instance._meta.object_name}"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _secret_parts(name: str, value: Any) -> dict[str, Any]:
    """A secret field's parts: each secret of a JSON object of secrets (so the trail says
    that the Auth Token changed, not just "secrets"), or the field itself."""
    if isinstance(value, dict):
        return dict(value)
    return {name: value}


def _values(instance: models.Model) -> dict[str, Any]:
    secret = SECRET_FIELDS.get(_label(instance), set())
    values = {}
    for field in instance._meta.concrete_fields:
        if field.name in IGNORED_FIELDS:
            continue
        value = getattr(instance, field.attname)
        if field.name in secret:
            for name, part in _secret_parts(field.name, value).items():
                values[name] = MASK if part else ""
        else:
            values[field.name] = _jsonable(value)
    return values


def _organization_id(instance: models.Model) -> int | None:
    for path in ("organization_id", "workflow.organization_id", "patient.organization_id"):
        target: Any = instance
        for part in path.split("."):
            target = getattr(target, part, None)
        if target is not None:
            return int(target)
    return None


# The before values of a model whose UPDATE returns the row it replaced
# (common.db.ReplacedRowReturned): read after the save, from `replaced`, not by a SELECT here.
_FROM_UPDATE = "from the update"
# This save's entry was taken by a receiver that writes it (audit_entries_take).
_TAKEN = "taken"


def _before(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    state: dict[str, Any] | str | None = None
    if isinstance(instance, ReplacedRowReturned):
        instance.replaced = None
        if not kwargs.get("raw"):
            state = _FROM_UPDATE
    elif not (kwargs.get("raw") or instance._state.adding or instance.pk is None):
        state = _state(sender._default_manager.filter(pk=instance.pk).first())
    instance._audit_before = state  # type: ignore[attr-defined]


def _state(old: models.Model | None) -> dict[str, Any] | None:
    if old is None:
        return None
    secrets = SECRET_FIELDS.get(_label(old), set())
    return {"values": _values(old), "secrets": {name: getattr(old, name) for name in secrets}}


def _entry(instance: models.Model, action: str, changes: dict[str, Any]) -> AuditEntry:
    """An entry, unsaved. Written by model_insert (one prepared INSERT; the ORM's create built
    and compiled it anew for every save, about 0.2 ms of CPU on the request path) or with
    the event its save records (audit_entries_take)."""
    return AuditEntry(
        actor=audit_actor_user(),
        actor_repr=audit_actor_name(),
        organization_id=_organization_id(instance),
        action=action,
        model=_label(instance),
        object_id=str(instance.pk),
        object_repr=str(instance)[:200],
        changes=changes,
    )


def _saved_entry(instance: models.Model, created: bool, state: Any) -> AuditEntry | None:
    """The entry of a save (None when it changed nothing), from the state `_before` left."""
    after = _values(instance)
    if state == _FROM_UPDATE:
        state = _state(getattr(instance, "replaced", None))
    if created or state is None:
        return _entry(instance, AuditEntry.Action.CREATED, {k: [None, v] for k, v in after.items()})
    before = state["values"]
    changes = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
    for name, old_secret in state["secrets"].items():
        old_parts = _secret_parts(name, old_secret)
        for part, value in _secret_parts(name, getattr(instance, name)).items():
            if value and old_parts.get(part) and value != old_parts[part]:
                changes[part] = [MASK, f"{MASK} (changed)"]  # that it changed, never what to
    return _entry(instance, AuditEntry.Action.UPDATED, changes) if changes else None


def audit_entries_take(instance: models.Model, *, created: bool) -> list[AuditEntry]:
    """The audit entry of the save being signalled, unsaved, for a post_save receiver that
    writes it in a statement it runs anyway (patients.receivers: in the outbox INSERT of the
    event the save records, where an INSERT of its own cost a round trip on the request
    path); the audit's own receiver then writes nothing for this save. Empty when the
    record is not audited or the save changed nothing audited."""
    state = instance.__dict__.get("_audit_before", _TAKEN)
    if state == _TAKEN:
        return []
    instance._audit_before = _TAKEN  # type: ignore[attr-defined]
    entry = _saved_entry(instance, created, state)
    return [entry] if entry is not None else []


def _after(
    sender: type[models.Model], instance: models.Model, created: bool, **kwargs: Any
) -> None:
    if kwargs.get("raw"):
        return
    state = getattr(instance, "_audit_before", None)
    if state == _TAKEN:
        return
    entry = _saved_entry(instance, created, state)
    if entry is not None:
        model_insert(entry)


def _deleted(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    model_insert(
        _entry(
            instance,
            AuditEntry.Action.DELETED,
            {k: [v, None] for k, v in _values(instance).items()},
        )
    )


def audit_connect() -> None:
    for label in AUDITED:
        model = apps.get_model(label)
        uid = f"audit:{label}"
        pre_save.connect(_before, sender=model, dispatch_uid=f"{uid}:before")
        post_save.connect(_after, sender=model, dispatch_uid=f"{uid}:after")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"{uid}:deleted")
