"""SQL dialects: checking a dialect name, translating SQLite SQL to another dialect with
sqlglot, and naming a result's columns from the query.

The model writes SQLite-flavoured SQL (what it was trained on); ``ask`` and ``serve`` show
it translated, and run it translated on PostgreSQL (:mod:`text2sql.sql.postgres`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from text2sql.io import DataError
from text2sql.sql.sqlite import NOT_READ_ONLY, PARSE_ERROR, ExecResult, check_read_only_query


class CannotTranslate(ValueError):
    """sqlglot cannot read the SQL (its message, one line, without terminal colours)."""


def check_dialect(name: str) -> None:
    """Refuse a dialect sqlglot does not know, listing the ones it does."""
    import sqlglot
    from sqlglot.dialects import Dialects

    try:
        sqlglot.Dialect.get_or_raise(name)
    except ValueError:
        known = ", ".join(sorted(d.value for d in Dialects if d.value))
        raise DataError(f"--dialect {name!r}: unknown dialect (known: {known})") from None


def translate(sql: str, dialect: str) -> str:
    """``sql`` (SQLite) written in ``dialect``; :class:`CannotTranslate` with sqlglot's
    message when sqlglot cannot read it."""
    import sqlglot

    try:
        return ";\n".join(sqlglot.transpile(sql, read="sqlite", write=dialect, pretty=False))
    except sqlglot.errors.SqlglotError as e:
        raise CannotTranslate(re.sub(r"\x1b\[[0-9;]*m", "", str(e).splitlines()[0])) from None


def shown_or_why(sql: str, translate: Callable[[str], str]) -> str:
    """``translate(sql)``, or a note saying why there is none (for display)."""
    try:
        return translate(sql)
    except CannotTranslate as e:
        return f"(cannot translate: {e})"


def guarded_translation(sql: str, translate: Callable[[str], str],
                        beyond_reading: Callable[[str], str | None],
                        engine: str) -> str | ExecResult:
    """The SQL a server-side engine runs for SQLite ``sql``, or the :class:`ExecResult`
    refusing it: one SELECT/WITH query, not too hard to parse, ``translate``-able, and
    nothing ``beyond_reading`` (the engine's own list of functions with side effects)."""
    from text2sql.sql.parse import MAX_BARE_JOINS, too_hard_to_parse

    kind, message = check_read_only_query(sql)
    if kind is not None:
        return ExecResult(None, kind, message)
    if too_hard_to_parse(sql):  # sqlglot would take hours to translate it
        return ExecResult(None, PARSE_ERROR, f"more than {MAX_BARE_JOINS} JOINs in a row "
                          "without ON")
    try:
        translated = translate(sql)
    except CannotTranslate as e:
        return ExecResult(None, PARSE_ERROR, f"sqlglot cannot translate it to {engine}: {e}")
    why = beyond_reading(translated)
    if why is not None:
        return ExecResult(None, NOT_READ_ONLY, why)
    return translated


def transpile(sql: str, dialect: str) -> str:
    """``sql`` (SQLite) written in ``dialect``, or a note saying why it cannot be."""
    try:
        return translate(sql, dialect)
    except CannotTranslate as e:
        return f"(cannot translate: {e})"


def column_names(sql: str, schema: Any, width: int | None) -> list[str]:
    """Result column names as SQLite would show them, read from the query with sqlglot;
    ``col1``, ``col2``, ... where they cannot be known. ``width``: the number of columns
    in the result (``None`` when it has no rows to count them on)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.qualify import qualify

    fallback = [f"col{i + 1}" for i in range(width or 0)]
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
        if any(isinstance(s, exp.Star) or (isinstance(s, exp.Column) and s.is_star)
               for s in tree.selects):
            mapping = {t.name: {c.name: c.type or "text" for c in t.columns} for t in schema.tables}
            tree = qualify(tree, schema=mapping, dialect="sqlite", quote_identifiers=False)
            names = list(tree.named_selects)
        else:
            names = [s.alias_or_name if isinstance(s, (exp.Alias, exp.Column)) else
                     s.sql(dialect="sqlite") for s in tree.selects]
    except (sqlglot.errors.SqlglotError, AttributeError, KeyError):
        return fallback
    return names if width is None or len(names) == width else fallback
