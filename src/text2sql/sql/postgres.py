"""PostgreSQL's guards: what a query must pass before it reaches a live server.

The model writes SQLite SQL (what it was trained on). Before
:meth:`text2sql.ask.postgres.PostgresDatabase.run` runs it, it is checked to be one SELECT/WITH
query (:func:`text2sql.sql.sqlite.check_read_only_query`), translated to PostgreSQL with
sqlglot (a query sqlglot cannot read is a ``parse_error``), and refused when it calls server
functions with side effects or writes inside a query (:func:`beyond_reading`). Server errors
are classified as the SQLite runner's are (:func:`classify_error`). Passwords never appear in
what is printed, returned or raised: :func:`masked` shows a URL without it,
:func:`hide_password` cleans a message."""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from text2sql.io import DataError
from text2sql.sql.schema import Schema
from text2sql.sql.sqlite import (
    EXEC_ERROR,
    NOT_READ_ONLY,
    PARSE_ERROR,
    TIMEOUT,
    TOO_LARGE,
    UNKNOWN_COLUMN,
    UNKNOWN_TABLE,
)

URL_SCHEMES = ("postgresql://", "postgres://")
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
CONNECT_TIMEOUT_S = 10
VALUES_TTL_S = 300.0  # the value index of a live database is read again after this long
INTROSPECTION_TIMEOUT_S = 30.0
# Reading the value index of a big database: each column under this limit (a column too
# slow to scan gives no hints), and no more columns after the whole budget is spent.
VALUES_COLUMN_TIMEOUT_S, VALUES_BUDGET_S = 2.0, 20.0

# Server functions a question never needs and that act beyond reading the tables: signal or
# terminate backends, reload the configuration, sleep, take session locks, notify, touch
# sequences, large objects and server files, run a query given as text (query_to_xml,
# ts_stat), or reach other servers (dblink). A read-only transaction does not stop all of them.
SIDE_EFFECT_FUNCTIONS = re.compile(
    r"(pg_|lo_|dblink|query_to_xml|cursor_to_xml|ts_stat|set_config|nextval|setval|currval|"
    r"lastval|txid_|binary_upgrade_)\w*", re.IGNORECASE)

class ConnectionFailed(DataError):
    """The server cannot be reached or refuses the login (the message says where and why)."""


_SQLSTATE_KINDS = {"57014": TIMEOUT, "55P03": TIMEOUT, "42P01": UNKNOWN_TABLE,
                   "42703": UNKNOWN_COLUMN, "42702": UNKNOWN_COLUMN, "25006": NOT_READ_ONLY,
                   "42601": PARSE_ERROR, "54000": TOO_LARGE}


def is_postgres_url(text: object) -> bool:
    """Whether ``text`` is a PostgreSQL URL (``postgresql://...`` or ``postgres://...``)."""
    return isinstance(text, str) and text.lower().startswith(URL_SCHEMES)


def masked(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, hosts = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{hosts}"
    query = urlencode([(k, "***" if k.lower() == "password" else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def hide_password(message: str, url: str) -> str:
    """``message`` with every password of ``url`` (and ``PGPASSWORD``) replaced by ``***``."""
    from urllib.parse import unquote

    parts = urlsplit(url)
    secrets = [parts.password, unquote(parts.password or ""), os.environ.get("PGPASSWORD")]
    secrets += [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def beyond_reading(pg_sql: str) -> str | None:
    """What in ``pg_sql`` would act beyond reading tables, else ``None``: a call of a
    :data:`SIDE_EFFECT_FUNCTIONS` function, a write inside the query (``WITH x AS (DELETE
    ...)``, ``FOR UPDATE``) or ``SELECT ... INTO`` (which creates a table)."""
    import sqlglot
    from sqlglot.tokens import TokenType

    try:
        tokens = sqlglot.Dialect.get_or_raise("postgres").tokenize(pg_sql)
    except sqlglot.errors.SqlglotError as e:
        return f"SQL that sqlglot's PostgreSQL tokenizer rejects ({str(e).splitlines()[0]})"
    writes = (TokenType.INSERT, TokenType.UPDATE, TokenType.DELETE, TokenType.MERGE,
              TokenType.INTO)
    for token, after in zip(tokens, [*tokens[1:], None], strict=True):
        if token.token_type in writes:
            return f"{token.text.upper()} inside the query"
        if (after is not None and after.token_type == TokenType.L_PAREN
                and token.token_type not in (TokenType.STRING, TokenType.NUMBER)
                and SIDE_EFFECT_FUNCTIONS.fullmatch(token.text)):
            return f"a call of {token.text.lower()}(), a server function with side effects"
    return None


def exact_case(pg_sql: str, schema: Schema) -> str:
    """``pg_sql`` with unquoted names of mixed-case tables and columns quoted as the catalog
    spells them: SQLite matches names in any case, PostgreSQL folds unquoted ones to lower
    case (``Customers`` would be ``customers``). Unchanged when every name is lower case."""
    import sqlglot
    from sqlglot import exp

    spelled = {n.lower(): n for t in schema.tables for n in (t.name, *(c.name for c in t.columns))
               if n != n.lower()}
    if not spelled:
        return pg_sql
    try:
        tree = sqlglot.parse_one(pg_sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return pg_sql  # PostgreSQL will say what is wrong with it
    for ident in tree.find_all(exp.Identifier):
        if not ident.quoted and ident.name.lower() in spelled:
            ident.set("this", spelled[ident.name.lower()])
            ident.set("quoted", True)
    return tree.sql(dialect="postgres")


def classify_error(error: Exception) -> str:
    """The error kind of a psycopg error, by its SQLSTATE."""
    state = getattr(error, "sqlstate", None) or ""
    return _SQLSTATE_KINDS.get(state) or (TOO_LARGE if state.startswith("53") else EXEC_ERROR)
