"""SQL helpers built on sqlglot (SQLite dialect)."""

from __future__ import annotations

import sqlglot
from sqlglot import exp


def referenced_tables(sql: str) -> set[str] | None:
    """Lower-cased names of the tables ``sql`` reads (CTE names excluded); ``None`` if unparsable."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return None
    if tree is None:
        return None
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    return {t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}
