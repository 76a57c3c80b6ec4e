"""Hand-written SELECTs for the API's hottest reads (`GET /v1/jobs/{id}`, `GET /v1/jobs`).

The ORM compiles a queryset's SQL again on every request, about as much CPU as the rest of such
a request together. Here the SQL is written once per statement from the model's own table and
column names, and each row goes through the converters that Django itself applies to those
columns (JSON decoding; on SQLite datetimes, UUIDs and booleans), so the values are exactly what
`values()` would return. Anything else uses the ORM.
"""

import json
import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, JSONField, Model


class Columns:
    """Some columns of one model's table: `select` formats `{field}` in the SQL that follows
    the SELECT list as that field's quoted column, prepares the parameters as the fields do,
    and returns each row as a dict by field name."""

    def __init__(self, model: type[Model], names: Sequence[str]) -> None:
        self.table = model._meta.db_table
        self.fields: dict[str, Field[Any, Any]] = {}
        for name in names:
            field = model._meta.get_field(name)
            assert isinstance(field, Field) and field.concrete, name
            self.fields[name] = field
        self._model = model
        self._statements: dict[tuple[str, str], str] = {}
        # Per connection object (one per thread and alias), forgotten with it.
        self._converters_by_connection: weakref.WeakKeyDictionary[
            BaseDatabaseWrapper, list[tuple[int, Any, Any]]
        ] = weakref.WeakKeyDictionary()

    def _column(self, connection: BaseDatabaseWrapper, name: str) -> str:
        quote = connection.ops.quote_name
        return f"{quote(self.table)}.{quote(self.field_of(name).column or name)}"

    def _statement(self, connection: BaseDatabaseWrapper, tail: str, extra: str) -> str:
        key = (connection.vendor, tail + extra)
        statement = self._statements.get(key)
        if statement is None:
            names = {name: self._column(connection, name) for name in self._model_names()}
            names["table"] = connection.ops.quote_name(self.table)
            select = ", ".join(names[name] for name in self.fields)
            statement = (
                f"SELECT {select}{extra.format(**names)} FROM {names['table']} "
                + tail.format(**names)
            )
            self._statements[key] = statement
        return statement

    def _model_names(self) -> Iterable[str]:
        for field in self._model._meta.concrete_fields:
            yield field.name
            if field.attname != field.name:
                yield field.attname

    def select(
        self,
        tail: str,
        parameters: Sequence[tuple[str | None, Any]],
        *,
        extra: str = "",
        using: str = "default",
    ) -> list[tuple[dict[str, Any], tuple[Any, ...]]]:
        """Rows of `SELECT <columns><extra> FROM <table> <tail>`. Each parameter is (field name,
        value), prepared as that field prepares it, or (None, value) as it is, in the order of
        the SQL text (`extra`'s first). `extra` adds raw select expressions, returned
        unconverted as each row's second part. In `tail` and `extra`, `{field}` is that field's
        quoted column and `{table}` the quoted table."""
        connection = connections[using]
        statement = self._statement(connection, tail, extra)
        prepared = [
            value if name is None else self.field_of(name).get_db_prep_value(value, connection)
            for name, value in parameters
        ]
        converters = self._converters(connection)
        count = len(self.fields)
        with connection.cursor() as cursor:
            cursor.execute(statement, prepared)
            rows = cursor.fetchall()
        result = []
        for row in rows:
            values = list(row[:count])
            for index, converter, column in converters:
                values[index] = converter(values[index], column, connection)
            result.append((dict(zip(self.fields, values, strict=True)), tuple(row[count:])))
        return result

    def _converters(self, connection: BaseDatabaseWrapper) -> list[tuple[int, Any, Any]]:
        """The converters Django applies to each column, worked out once per connection (they
        are methods of its `ops` and fields: the same for every query on that connection)."""
        converters = self._converters_by_connection.get(connection)
        if converters is None:
            converters = [
                (index, converter, column)
                for index, field in enumerate(self.fields.values())
                for column in (field.get_col(self.table),)
                for converter in (
                    *connection.ops.get_db_converters(column),
                    *column.get_db_converters(connection),
                )
            ]
            self._converters_by_connection[connection] = converters
        return converters

    def field_of(self, name: str) -> Field[Any, Any]:
        field = self._model._meta.get_field(name)
        assert isinstance(field, Field)
        return field


_Insert = tuple[str, list[Field[Any, Any]], str | None]
_INSERTS: dict[tuple[str, type[Model]], _Insert] = {}


def _insert_of(connection: BaseDatabaseWrapper, model: type[Model]) -> _Insert:
    """The INSERT of one `model` row (its statement, fields and the attribute that RETURNING
    fills, if the database assigns the primary key), built once per vendor and model."""
    key = (connection.vendor, model)
    cached = _INSERTS.get(key)
    if cached is None:
        meta = model._meta
        pk = meta.pk
        assert pk is not None
        generated = pk if getattr(pk, "db_returning", False) else None
        fields = [f for f in meta.concrete_fields if f is not generated]
        quote = connection.ops.quote_name
        statement = (
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})"
        )
        if generated is not None:
            statement += f" RETURNING {quote(str(generated.column))}"
        returned = generated.attname if generated is not None else None
        cached = _INSERTS[key] = (statement, fields, returned)
    return cached


def rows_insert(*objs: Model, using: str = "default") -> None:
    """INSERT each of `objs` as `obj.save(force_insert=True)` would, in order, without compiling
    the statements on every call: the fields' `pre_save` (auto_now) and `get_db_prep_save` give
    the values, and a model whose primary key the database assigns gets it back (RETURNING). On
    PostgreSQL the rows go in one statement (each but the last a data-modifying WITH, which
    PostgreSQL always runs), one round trip; only the last may have its key assigned. No signals
    are sent (no model of the hot path has receivers)."""
    connection = connections[using]
    inserts = [_insert_of(connection, type(obj)) for obj in objs]
    values = [
        [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
        for obj, (_, fields, _) in zip(objs, inserts, strict=True)
    ]
    if connection.vendor == "postgresql" and len(objs) > 1:
        assert all(returned is None for _, _, returned in inserts[:-1]), "only the last"
        head = ", ".join(
            f"inserted_{index} AS ({statement})"
            for index, (statement, _, _) in enumerate(inserts[:-1])
        )
        statement = f"WITH {head} {inserts[-1][0]}"
        batches = [(statement, [v for row in values for v in row], objs[-1], inserts[-1][2])]
    else:
        batches = [
            (statement, row, obj, returned)
            for (statement, _, returned), row, obj in zip(inserts, values, objs, strict=True)
        ]
    with connection.cursor() as cursor:
        for statement, parameters, last, returned in batches:
            cursor.execute(statement, parameters)
            if returned is not None:
                setattr(last, returned, cursor.fetchone()[0])
    rows_saved(*objs, using=using)


def rows_saved(*objs: Model, using: str = "default") -> None:
    """Mark `objs` as rows of the database, as `save()` leaves them."""
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using


# A cast to `varchar(n)` would cut a longer text short without a word; to `varchar` the
# column's own length still refuses it, as a plain INSERT does.
_LENGTH = re.compile(r"^(character varying|varchar)\(\d+\)$")


def _cast_type(field: Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    db_type = field.db_type(connection)
    assert db_type is not None, field
    return _LENGTH.sub(r"\1", db_type)


def rows_insert_from(
    source: str, *objs: Model, using: str = "default"
) -> tuple[list[str], list[Any]]:
    """PostgreSQL: the INSERT of each of `objs` as `INSERT INTO <table> (<columns>) SELECT
    <values> FROM <source>`, written only if `source` (a common table expression of the same
    statement, one row at most) yields a row: a guarded write that needs no round trip of its
    own. Returns the statements, for the caller's WITH, and their parameters in order; call
    `rows_saved` once the statement ran and wrote. The values are those `rows_insert` sends,
    each cast to its column's type, since a SELECT list, unlike VALUES, takes no type from the
    INSERT's columns. A primary key that the database assigns is not read back."""
    connection = connections[using]
    statements, parameters = [], []
    for obj in objs:
        statement, fields = _insert_from_of(connection, type(obj), source)
        statements.append(statement)
        parameters += [
            field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields
        ]
    return statements, parameters


_INSERTS_FROM: dict[tuple[str, type[Model], str], tuple[str, list[Field[Any, Any]]]] = {}


def _insert_from_of(
    connection: BaseDatabaseWrapper, model: type[Model], source: str
) -> tuple[str, list[Field[Any, Any]]]:
    key = (connection.vendor, model, source)
    cached = _INSERTS_FROM.get(key)
    if cached is None:
        statement, fields, _ = _insert_of(connection, model)
        columns = statement[: statement.index(" VALUES ")]
        casts = ", ".join(f"CAST(%s AS {_cast_type(field, connection)})" for field in fields)
        from_source = f"{columns} SELECT {casts} FROM {connection.ops.quote_name(source)}"
        cached = _INSERTS_FROM[key] = (from_source, fields)
    return cached


def row_json(obj: Model, using: str = "default") -> str:
    """`obj`'s row as one JSON object, column name to value, for SQL that builds the row with
    `jsonb_populate_record(NULL::<table>, ...)` (a function that writes a row whose columns it
    need not list). The values are those `rows_insert` sends (`pre_save`, `get_db_prep_save`),
    a JSON column's as the document itself, the rest in their text form (UUIDs, datetimes),
    which PostgreSQL reads back as the column's type. A primary key that the database assigns
    is left out."""
    connection = connections[using]
    _, fields, _ = _insert_of(connection, type(obj))
    row = {}
    for field in fields:
        value = field.pre_save(obj, True)
        if not isinstance(field, JSONField):
            value = field.get_db_prep_save(value, connection)
        row[str(field.column)] = value
    return json.dumps(row, default=str)
