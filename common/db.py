"""Database helpers any app may use: fewer statements, and statements PostgreSQL plans once.

Generic: they know Django's models and connections, no model of ours.
"""

import functools
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import psycopg
from django.contrib.postgres import operations as postgres_operations
from django.db import IntegrityError, connections, models, router, transaction
from django.db.backends.utils import CursorDebugWrapper
from django.db.migrations.operations import AddIndex, AlterField, RemoveIndex
from django.db.models import signals

M = TypeVar("M", bound=models.Model)


def insert_or_get(
    model: type[M],
    unique: dict[str, Any],
    defaults: dict[str, Any] | None = None,
    *,
    lazy: bool = False,
) -> M:
    """Create the row with these unique fields, or return the one that exists.

    Cheaper than get_or_create for the common case of a new row: one INSERT, and a savepoint
    only inside a transaction (where a failed INSERT would poison it on PostgreSQL). `lazy`:
    see model_insert.
    """
    obj = model(**unique, **(defaults or {}))
    try:
        if transaction.get_connection().in_atomic_block:
            with transaction.atomic():
                model_insert(obj)
        else:
            model_insert(obj, lazy=lazy)
    except IntegrityError:
        return model._default_manager.get(**unique)
    return obj


# In an INSERT's RETURNING list: the statement's own transaction (outside any other) then
# commits without waiting for the disk. PostgreSQL records a commit before it drops the
# transaction's local settings, so the setting made in the statement governs its commit,
# where `lazy_commits` spends a SET before and a RESET after it, two round trips.
_LAZY_RETURNING = ", set_config('synchronous_commit', 'off', true)"


def model_insert(obj: models.Model, *, lazy: bool = False) -> None:
    """`obj.save(force_insert=True)` for a new row, from an INSERT compiled once per model and
    database and prepared by PostgreSQL (`prepared_cursor`): a worker writes a step run and
    a message for every SMS, and the ORM built and compiled each INSERT anew, and PostgreSQL
    parsed and planned it anew. Where a save does more than write the row (signal receivers,
    a parent table, a pk or a value given as an expression), it is the ORM's save.

    `lazy`: outside a transaction, the INSERT commits as in `lazy_commits` (for a row whose
    loss in a crash of the database server would do no harm), in the same statement; inside
    one, or in the ORM's save, it commits as the rest does."""
    alias = router.db_for_write(type(obj), instance=obj)
    statement = model_insert_statement(obj, alias)
    if statement is None:
        with lazy_commits(using=alias) if lazy else nullcontext():
            obj.save(force_insert=True, using=alias)
        return
    sql, params = statement
    if lazy and _relaxable(connections[alias]):
        sql += _LAZY_RETURNING
    with prepared_cursor(connections[alias]) as cursor:
        cursor.execute(sql, params)
        model_inserted(obj, cursor.fetchone()[0], alias)


def model_insert_statement(obj: models.Model, alias: str) -> tuple[str, list[Any]] | None:
    """model_insert's statement for `obj`, `INSERT … RETURNING pk`, and its parameters, for a
    caller that runs it inside a statement of its own (as a WITH clause) and then calls
    `model_inserted`; None where model_insert is the ORM's save."""
    model = type(obj)
    connection = connections[alias]
    compiled = _insert_compiled(model, alias)
    if (
        compiled is None
        or obj.pk is not None
        or signals.pre_save.has_listeners(model)
        or signals.post_save.has_listeners(model)
    ):
        return None
    sql, fields = compiled
    obj._prepare_related_fields_for_save(operation_name="save")  # type: ignore[attr-defined]
    values = [field.pre_save(obj, True) for field in fields]
    if any(hasattr(value, "resolve_expression") for value in values):
        return None
    return sql, [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values, strict=True)
    ]


def model_inserted(obj: models.Model, pk: Any, alias: str) -> None:
    """Mark `obj` saved as row `pk`, as the ORM's save does."""
    obj.pk = pk
    obj._state.adding, obj._state.db = False, alias


@functools.cache
def _insert_compiled(model: type[models.Model], alias: str) -> tuple[str, list[Any]] | None:
    """The model's `INSERT … RETURNING pk` of every field but an automatic pk, as the ORM
    writes a new row, and those fields; None where the ORM's save is needed (a parent
    table, a backend that cannot return the pk). A field with a database default is in it:
    a row that leaves it to the database has an expression there, which model_insert leaves
    to the ORM's save (the messages a worker writes for every SMS give theirs)."""
    meta = model._meta
    connection = connections[alias]
    # Not a generated column: the database computes it (and refuses a value for it).
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field and not f.generated]
    if (
        meta.parents
        or meta.auto_field is None
        or not connection.features.can_return_columns_from_insert
    ):
        return None
    quote = connection.ops.quote_name
    returning, _ = connection.ops.return_insert_columns([meta.pk])
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"  # noqa: S608 — names from the model
        f" VALUES ({', '.join(['%s'] * len(fields))}) {returning}"
    )
    return sql, fields


@functools.cache
def _by_pk_read(
    model: type[models.Model], alias: str
) -> tuple[str, list[str], Any, dict[int, Any]]:
    """`model._base_manager.get(pk=…)` compiled once per model and database (no ORDER BY: a
    pk is unique): its SQL, each column's attribute name, and the compiler with its result
    converters. The converters (UUIDs and booleans on SQLite, for instance) read no session
    state, so one compiler serves every thread."""
    query = model._base_manager.db_manager(alias).filter(pk=0).order_by().query
    compiler = query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    if list(params) != [0]:
        raise RuntimeError(f"{model.__name__} by pk compiled with parameters {params!r}")
    columns = [expression for expression, _, _ in compiler.select]
    names = [column.target.attname for column in columns]
    return sql, names, compiler, compiler.get_converters(columns)


def _by_pk_row(model: type[M], alias: str, pk: Any) -> M | None:
    """The row with this pk as an instance (the ORM's `get`, compiled once), or None."""
    sql, names, compiler, converters = _by_pk_read(model, alias)
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [pk])
        row = cursor.fetchone()
    if row is None:
        return None
    if converters:
        row = next(iter(compiler.apply_converters([row], converters)))
    return model.from_db(alias, names, tuple(row))


def model_get(model: type[M], pk: Any) -> M:
    """`model._base_manager.get(pk=pk)` without the ORM building and compiling the query on
    every call, which cost more than the round trip itself (0.3 ms of a 0.45 ms read here).
    For reads on the request path: a record's patient when an event is recorded."""
    obj = _by_pk_row(model, router.db_for_read(model), pk)
    if obj is None:
        # Every concrete model has DoesNotExist; a TypeVar bound to Model does not say so.
        raise model.DoesNotExist(f"{model.__name__} matching query does not exist.")  # type: ignore[attr-defined]
    return obj


class ReplacedRowReturned(models.Model):
    """A model whose save, when it updates its row, also reads the row it replaces:
    `replaced` is that row as an instance after an UPDATE (None after an INSERT, until then
    whatever the last save left; a reader resets it before saving).

    On PostgreSQL the UPDATE reads it itself, under its own row lock, in one prepared
    statement: `UPDATE t SET … FROM (SELECT … FOR UPDATE) AS replaced … RETURNING
    replaced.*`. The audit trail's before values cost a SELECT of their own before (a round
    trip, about a third of a plain save's time), and that SELECT could miss a change
    committed between it and the UPDATE. Elsewhere, and for a value given as an expression,
    it is that SELECT and the ORM's UPDATE."""

    replaced: Any = None

    class Meta:
        abstract = True

    def _do_update(
        self,
        base_qs: Any,
        using: str | None,
        pk_val: Any,
        values: Any,
        update_fields: Any,
        forced_update: bool,
    ) -> bool:
        model = type(self)
        alias = using or router.db_for_write(model, instance=self)
        connection = connections[alias]
        compiled = _replacing_update(model, alias, tuple(field for field, _, _ in values))
        if (
            compiled is None
            or base_qs.model is not model
            or connection.vendor != "postgresql"
            or any(
                hasattr(value, "resolve_expression") or hasattr(value, "prepare_database_save")
                for _, _, value in values
            )
        ):
            self.replaced = _by_pk_row(model, alias, pk_val)
            return super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update)
        sql, names, compiler, converters = compiled
        params = [field.get_db_prep_save(value, connection) for field, _, value in values]
        with prepared_cursor(connection) as cursor:
            cursor.execute(sql, [*params, pk_val])
            row = cursor.fetchone()
        if row is None:
            self.replaced = None
            return False
        if converters:
            row = next(iter(compiler.apply_converters([row], converters)))
        self.replaced = model.from_db(alias, names, tuple(row))
        return True


@functools.cache
def _replacing_update(
    model: type[models.Model], alias: str, fields: tuple[Any, ...]
) -> tuple[str, list[str], Any, dict[int, Any]] | None:
    """ReplacedRowReturned's UPDATE of these fields, compiled once per model, database and
    fields, and the reading of its RETURNING row (the by-pk SELECT's own); None where the
    ORM's UPDATE is needed (no fields, a parent table, a field with a placeholder of its
    own, select_on_save)."""
    meta = model._meta
    if (
        not fields
        or meta.parents
        or meta.select_on_save
        or any(hasattr(field, "get_placeholder") for field in fields)
    ):
        return None
    select, names, compiler, converters = _by_pk_read(model, alias)
    quote = connections[alias].ops.quote_name
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    returning = ", ".join(f"replaced.{quote(column)}" for column in _select_columns(compiler))
    sql = (
        f"UPDATE {table} SET {assignments} FROM ({select} FOR UPDATE) AS replaced"  # noqa: S608 — names from the model
        f" WHERE {table}.{pk} = replaced.{pk} RETURNING {returning}"
    )
    return sql, names, compiler, converters


def _select_columns(compiler: Any) -> list[str]:
    """The column names of a single-table SELECT's list, as a subquery names them."""
    return [expression.target.column for expression, _, _ in compiler.select]


class _PreparedCursor(psycopg.Cursor[Any]):
    """Binds on the server and prepares every statement on first use. Django's cursors bind
    on the client, which never prepares."""

    def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
        return super().execute(query, params, **{**options, "prepare": True})


@contextmanager
def prepared_cursor(connection: Any) -> Iterator[Any]:
    """A cursor whose statements PostgreSQL parses and plans once per connection: for a
    statement run on every request that takes longer to plan than to run. Wrapped as
    Django's own (query logging, execute wrappers, error translation); elsewhere than on
    PostgreSQL, Django's own. Prepared only where the connection allows it (its
    `prepare_threshold` set: config.settings); behind PgBouncer in transaction mode, that
    needs its `max_prepared_statements` (1.21 and later)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = _PreparedCursor(connection.connection)
    wrapped = (
        _PreparedDebugWrapper(raw, connection)
        if connection.queries_logged
        else connection.make_cursor(raw)
    )
    with wrapped as cursor:
        yield cursor


class _PreparedDebugWrapper(CursorDebugWrapper):
    """Logs a prepared statement with its values, as Django logs its own: psycopg keeps no
    text of a statement it runs by name, where Django would read it from."""

    def execute(self, sql: Any, params: Any = None) -> Any:
        with self.debug_sql(self.db.ops.compose_sql(sql, params)):
            return self._execute_with_wrappers(sql, params, many=False, executor=self._execute)


def rows_update(
    model: type[M],
    objs: Sequence[M],
    fields: Sequence[str],
    *,
    guarded: Sequence[str] = (),
    only_where: tuple[str, Sequence[Any]] | None = None,
) -> None:
    """Write these fields of these saved rows, each its own values, in one statement:
    `UPDATE … FROM (VALUES …) WHERE pk = …`. What `bulk_update` does with a CASE per field
    and row, whose building cost about 4 ms of CPU per row here (JSON fields, dates),
    more than the statements it saves.

    The `guarded` fields are written only to rows where `only_where` holds, a field and the
    values it may have (a status that may only advance, say); the other rows keep theirs.
    """
    if not objs:
        return
    alias = router.db_for_write(model)
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = model._meta
    table = quote(meta.db_table)
    columns: list[Any] = [meta.pk, *(meta.get_field(name) for name in fields)]
    row = f"({', '.join(['%s'] * len(columns))})"
    # A VALUES list names its columns column1, column2, … (PostgreSQL and SQLite alike);
    # PostgreSQL types them from the first row, so a NULL there needs the column's type.
    typed = connection.vendor == "postgresql"
    assignments, params = [], []
    for i, column in enumerate(columns[1:], start=2):
        value = f"CAST(v.column{i} AS {column.db_type(connection)})" if typed else f"v.column{i}"
        if column.name in guarded and only_where is not None:
            name, allowed = only_where
            current = quote(next(f.column for f in meta.concrete_fields if f.name == name))
            value = (
                f"CASE WHEN {table}.{current} IN ({', '.join(['%s'] * len(allowed))})"
                f" THEN {value} ELSE {table}.{quote(column.column)} END"
            )
            params += list(allowed)
        assignments.append(f"{quote(column.column)} = {value}")
    sql = (
        f"UPDATE {table} SET {', '.join(assignments)}"  # noqa: S608 — names from the model
        f" FROM (VALUES {', '.join([row] * len(objs))}) AS v"
        f" WHERE {table}.{quote(meta.pk.column)} = v.column1"
    )
    params += [
        column.get_db_prep_save(getattr(obj, column.attname), connection)
        for obj in objs
        for column in columns
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def advisory_xact_lock(key: str) -> None:
    """Hold a lock named `key` until the current transaction ends (PostgreSQL's
    pg_advisory_xact_lock on a 64-bit hash of it). For decisions about something that has no
    row to lock (a phone number, say). SQLite runs one writing transaction at a time, so
    there it is not needed and does nothing."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("advisory_xact_lock needs a transaction to hold the lock")
    if connection.vendor != "postgresql":
        return
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)]
        )


class _ConcurrentlyOnPostgres:
    """Runs the PostgreSQL operation (CONCURRENTLY: writes to the table go on while the index
    is built or dropped, which a plain CREATE/DROP INDEX blocks for as long as it reads the
    table) on PostgreSQL, and its plain counterpart elsewhere (SQLite, `make run`). In a
    migration with `atomic = False`."""

    plain: Any

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        else:
            self.plain.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        else:
            self.plain.database_backwards(self, app_label, schema_editor, from_state, to_state)


class AddIndexConcurrently(_ConcurrentlyOnPostgres, postgres_operations.AddIndexConcurrently):
    plain = AddIndex


class RemoveIndexConcurrently(_ConcurrentlyOnPostgres, postgres_operations.RemoveIndexConcurrently):
    plain = RemoveIndex


class FieldIndexRemoveConcurrently(AlterField):
    """A field's own index taken away (its `db_index=True` made False: a ForeignKey's, or a
    CharField's with its `_like` twin) where an index that starts with the field serves its
    lookups already: each INSERT and each UPDATE that moves the row wrote it for nothing.

    The migration state changes as AlterField changes it. On PostgreSQL the field's
    single-column, non-unique indexes that no `Meta.indexes` names are dropped
    CONCURRENTLY (a plain DROP INDEX queues behind every transaction on the table, and every
    transaction after it queues behind it); elsewhere (SQLite, `make run`) AlterField does
    the work. In a migration with `atomic = False`. Backwards, AlterField builds the index
    again."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        model = from_state.apps.get_model(app_label, self.model_name)
        column = model._meta.get_field(self.name).column
        names = schema_editor._constraint_names(
            model,
            [column],
            index=True,
            unique=False,
            type_=models.Index.suffix,
            exclude={index.name for index in model._meta.indexes},
        )
        for name in names:
            schema_editor.execute(schema_editor._delete_index_sql(model, name, concurrently=True))

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        # AlterField goes back by going forwards between the states swapped: its own
        # forwards, which builds the index, not the drop above.
        super().database_forwards(app_label, schema_editor, from_state, to_state)


@contextmanager
def lazy_commits(*, atomic: bool = False, using: str | None = None) -> Iterator[None]:
    """Commits made inside do not wait for the write-ahead log to reach the disk
    (PostgreSQL's `synchronous_commit` off): for writes whose loss in a crash of the
    database server would do no more harm than the worker dying just before them. That
    wait is about 2 ms per commit here, more than most statements take. With `atomic`, the
    block is one transaction (`SET LOCAL` in it); without, each statement commits on its
    own, and the session's setting is restored at the end.

    The log is one sequence: the next durable commit of any session (a message's claim
    before its provider call, say) flushes these with it, and PostgreSQL's WAL writer does
    within a fraction of a second otherwise. So a decision that calls out of the system
    still rests only on durable rows, as long as its own claim commits durably: never call
    out inside this block. Inside a caller's transaction it changes nothing (the caller's
    commit keeps its own durability)."""
    connection = transaction.get_connection(using)
    relax = _relaxable(connection)
    if atomic:
        with transaction.atomic(using=using):
            if relax:
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO off")
            yield
        return
    if not relax:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def _relaxable(connection: Any) -> bool:
    """Whether this connection's next commit may be made lazy: on PostgreSQL, outside a
    caller's transaction (whose commit, which may be a claim, keeps its own durability)."""
    return not connection.in_atomic_block and connection.vendor == "postgresql"
