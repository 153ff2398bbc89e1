"""Pull one SQL statement out of whatever a model wrote.

Models wrap their answer in code fences, put ``SQL:`` in front of it, explain
themselves before or after it, write several statements, or stop without a
semicolon. :func:`extract_sql` undoes all of that with the SQLite dialect of
sqlglot's tokenizer and parser, and never rewrites the query itself: the text
returned is the model's own, cut to one statement. The raw output is kept by the
caller (the ``raw`` field of every prediction) so an extraction can be audited.

An answer that reasons first (``prepare.answer: reasoning``) ends with its query: of
several SQL code blocks the last is taken, as OmniSQL's own ``parse_response`` does
(``train_and_evaluate/infer.py``), and thinking in ``<think>...</think>`` is skipped, with
an ``<answer>...</answer>`` read alone (SLM-SQL's SynSQL-Think format).

A write statement the model produced (``DELETE ...``) is extracted as it is, so
that the execution guard can refuse it by name instead of silently running some
sub-query found inside it.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot.tokens import Tokenizer, TokenType

from text2sql.sql.parse import too_hard_to_parse

# Text after an end-of-turn marker is not part of the answer.
_END_OF_TURN = re.compile(r"<\|im_end\|>|<\|eot_id\|>|<\|endoftext\|>|<end_of_turn>|</s>")
_SPECIAL = re.compile(r"<\|[^|>\n]*\|>|<s>")
_THINKING = re.compile(r"^.*</think>", re.S)  # up to the last end of thinking
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.S)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n`]*\n?(.*?)(?:```|\Z)", re.S)
_SQL_FENCE_LANGS = {"sql", "sqlite", "sqlite3", "postgresql", "mysql", ""}
_INLINE = re.compile(r"`([^`\n]*\b(?:SELECT|WITH)\b[^`\n]*)`", re.I)
# Where a statement may begin: a query anywhere (any case), a write statement only in
# upper case at the start of a line or after a colon (in prose, "delete" is a verb).
_QUERY_START = re.compile(r"\b(?:SELECT|WITH)\b", re.I)
_WRITE_START = re.compile(
    r"(?:^|(?<=[:>]))[ \t]*\b(?:INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|PRAGMA|ATTACH|DETACH|"
    r"REPLACE\s+INTO|VACUUM)\b", re.M)
_NEW_STATEMENT = {TokenType.SELECT, TokenType.WITH, TokenType.INSERT, TokenType.UPDATE,
                  TokenType.DELETE, TokenType.DROP, TokenType.CREATE, TokenType.ALTER,
                  TokenType.PRAGMA}
_SET_OPERATORS = {TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT, TokenType.ALL,
                  TokenType.DISTINCT, TokenType.L_PAREN}
_SQL_WORDS = frozenset(k.upper() for k in Tokenizer.KEYWORDS) | {
    "COUNT", "SUM", "AVG", "MIN", "MAX", "DISTINCT", "CAST", "COALESCE", "IFNULL", "LIKE"}
# "This query returns ...", "Note: ...", "- it joins ...", "1. First ...": prose, not SQL.
_PROSE_LINE = re.compile(
    r"^[ \t]*(?:(?P<w1>[A-Z][a-z']+)[ \t]+(?P<w2>[a-z']{2,})\b"
    r"|[A-Za-z][A-Za-z ]{0,30}:(?:[ \t]|$)"
    r"|[-*•][ \t]+\w|\d+[.)][ \t]+[A-Za-z])")


def extract_sql(raw: str) -> str:
    """The first SQL statement in ``raw``, without fences, prefixes, prose or semicolon.

    Returns an empty string when nothing that looks like a query is found. When no
    cut of the text parses (a truncated answer, say), the best cut is returned as it
    is, so the evaluation reports it as a parse error rather than a guess.
    """
    text = _END_OF_TURN.split(raw, maxsplit=1)[0]
    text = _SPECIAL.sub("", text).replace("\r\n", "\n").strip()
    region = _answer_region(_final_answer(text))
    first_unparsed = ""
    for start in _statement_starts(region):
        for candidate in _cuts(region[start:]):
            if _parses(candidate):
                return candidate
            first_unparsed = first_unparsed or candidate
    return first_unparsed


def answer_sql(prediction: str) -> str:
    """The SQL of a prediction that may hold a whole answer: one that reasons first (with a
    code block or ``<think>``) is extracted, plain SQL is kept as it is given."""
    if "```" in prediction or "</think>" in prediction or "<answer>" in prediction:
        return extract_sql(prediction)
    return prediction


def _final_answer(text: str) -> str:
    """``text`` without its thinking: what follows ``</think>``, the inside of ``<answer>``."""
    after = _THINKING.sub("", text, count=1).strip()
    if after:  # an answer cut off inside its thinking is searched whole
        text = after
    answer = _ANSWER_TAG.search(text)
    return answer.group(1).strip() if answer else text


def _answer_region(text: str) -> str:
    """The part of ``text`` that holds the answer: the last fenced SQL block (an answer that
    reasons first may show drafts before it), an inline code span, or the whole text."""
    fences = _FENCE.findall(text)
    if fences:
        sql_like = [body for lang, body in fences
                    if lang.lower() in _SQL_FENCE_LANGS and _QUERY_START.search(body)]
        sql_like = sql_like or [body for _, body in fences if _QUERY_START.search(body)]
        if sql_like:
            return sql_like[-1].strip()
    inline = _INLINE.search(text)
    if inline and not _QUERY_START.search(text[: inline.start()]):
        return inline.group(1).strip()
    return text


def _statement_starts(text: str) -> list[int]:
    """Offsets where a statement may begin, in order of appearance."""
    starts = {m.start() for m in _QUERY_START.finditer(text)}
    starts |= {m.start() + len(m.group()) - len(m.group().lstrip()) for m in _WRITE_START.finditer(text)}
    return sorted(starts)


def _cuts(text: str) -> list[str]:
    """Ways to end the statement that starts ``text``, most plausible first: at the end of
    the first statement with trailing prose removed, then without removing prose."""
    statement = _first_statement(text)
    without_prose = _strip_prose(statement)
    cuts = [without_prose, statement]
    return [c for i, c in enumerate(cuts) if c and c not in cuts[:i]]


def _first_statement(text: str) -> str:
    """``text`` up to the first top-level semicolon or the start of a second statement."""
    try:
        tokens = sqlglot.tokenize(text, read="sqlite")
    except sqlglot.errors.SqlglotError:  # an unterminated string or quote
        return text.split(";")[0].strip()
    if tokens and tokens[0].token_type not in (TokenType.SELECT, TokenType.WITH):
        # INSERT ... SELECT, CREATE ... AS SELECT: a write statement ends at its semicolon only.
        end = next((t.start for t in tokens if t.token_type == TokenType.SEMICOLON), len(text))
        return text[:end].strip()
    depth = 0
    main_query_seen = False  # a WITH statement's main SELECT comes after its CTEs
    for i, tok in enumerate(tokens):
        kind = tok.token_type
        if kind == TokenType.SEMICOLON:
            return text[: tok.start].strip()
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN:
            depth = max(0, depth - 1)
        elif depth == 0 and kind in _NEW_STATEMENT and i > 0:
            if tokens[i - 1].token_type in _SET_OPERATORS:
                continue
            if kind == TokenType.SELECT and tokens[0].token_type == TokenType.WITH \
                    and not main_query_seen:
                main_query_seen = True
                continue
            return text[: tok.start].strip()
    return text.strip()


def _strip_prose(statement: str) -> str:
    """Cut ``statement`` where an explanation starts: a sentence end (``. `` outside strings)
    or a line that reads as prose."""
    cut = len(statement)
    try:
        tokens = sqlglot.tokenize(statement, read="sqlite")
    except sqlglot.errors.SqlglotError:
        tokens = []
    for tok in tokens:
        if tok.token_type == TokenType.DOT:
            after = statement[tok.end + 1: tok.end + 2]
            if after == "" or after.isspace():
                cut = tok.start
                break
    offset = 0
    for n, line in enumerate(statement[:cut].split("\n")):
        if n > 0 and _is_prose(line):
            cut = min(cut, offset)
            break
        offset += len(line) + 1
    return statement[:cut].strip().rstrip(".").strip()


def _is_prose(line: str) -> bool:
    m = _PROSE_LINE.match(line)
    if m is None:
        return False
    words = [w for w in (m.group("w1"), m.group("w2")) if w]
    return not any(w.upper() in _SQL_WORDS for w in words)


def _parses(sql: str) -> bool:
    """Exactly one statement that sqlglot's SQLite dialect parses completely."""
    if too_hard_to_parse(sql):
        return False
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except sqlglot.errors.SqlglotError:
        return False
    return len(statements) == 1
