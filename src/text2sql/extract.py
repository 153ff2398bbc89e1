"""Pull one SQL query out of whatever a model wrote."""

from __future__ import annotations

import re

import sqlglot

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|$)", re.S)
_PREFIX = re.compile(r"^\s*(?:sql\s*query|sqlite|sql|query|answer)\s*[:：]\s*", re.I)
_START = re.compile(r"\b(SELECT|WITH)\b", re.I)
_SPECIAL = re.compile(r"<\|[^|>]*\|>")


def extract_sql(raw: str) -> str:
    """The first SQL statement in ``raw``, without code fences, prefixes or trailing prose.

    Returns an empty string when nothing that looks like a query is found.
    """
    text = _SPECIAL.sub("", raw).strip()
    fences = _FENCE.findall(text)
    if fences:
        sql_fences = [body for lang, body in fences if lang.lower() in ("sql", "sqlite", "")]
        text = (sql_fences or [fences[0][1]])[0].strip()
    text = _PREFIX.sub("", text)
    m = _START.search(text)
    if m is None:
        return ""
    text = text[m.start():]
    return _first_statement(text).strip()


def _first_statement(text: str) -> str:
    """Cut ``text`` at the first top-level semicolon, or where prose starts after the query."""
    try:
        tokens = sqlglot.tokenize(text, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return text.split(";")[0]
    for tok in tokens:
        if tok.token_type == sqlglot.tokens.TokenType.SEMICOLON:
            return text[: tok.start]
    # No semicolon: drop trailing lines that do not parse as part of the query.
    lines = text.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        try:
            sqlglot.parse_one(candidate, read="sqlite")
            return candidate
        except sqlglot.errors.SqlglotError:
            continue
    return lines[0] if lines else ""
