"""The JSON bodies the API accepts: :class:`SqlRequest` (``/v1/sql``) and OpenAI's
:class:`ChatRequest` (``/v1/chat/completions``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from text2sql.io import DataError

MAX_SAMPLES = 16
MAX_QUESTION_CHARS = 2000


class SqlRequest(BaseModel):
    """The body of POST /v1/sql."""

    model_config = ConfigDict(extra="forbid")
    db: str = Field(description="a database name from GET /v1/databases")
    question: str | None = Field(None, max_length=MAX_QUESTION_CHARS,
                                 description="the question in plain words")
    sql: str | None = Field(None, description="run this SQL instead of asking the model "
                                              "(same read-only checks)")
    dialect: str | None = Field(None, description="also translate the SQL to this sqlglot "
                                                  "dialect (postgres, mysql, duckdb, ...)")
    num_samples: int | None = Field(None, ge=1, le=MAX_SAMPLES,
                                    description="sample N queries and vote by result "
                                                "(default: infer.num_samples)")
    execute: bool = Field(True, description="run the SQL (false: only write/translate it)")
    max_rows: int | None = Field(None, ge=1, description="at most this many rows "
                                                         "(capped by --max-rows)")
    timeout_s: float | None = Field(None, gt=0, description="query time limit "
                                                            "(capped by --timeout)")

    @field_validator("dialect")
    @classmethod
    def _dialect(cls, v: str | None) -> str | None:
        return known_dialect(v) if v and v != "sqlite" else None

    @model_validator(mode="after")
    def _question_or_sql(self) -> SqlRequest:
        if not (self.question and self.question.strip()) and self.sql is None:
            raise ValueError("give a 'question' (or your own 'sql')")
        return self


class ChatMessage(BaseModel):
    """One message of an OpenAI chat request (text or a list of typed parts)."""

    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``: ``include_usage`` adds a last chunk with the usage."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The body of POST /v1/chat/completions (OpenAI's shape; unknown fields ignored)."""

    model_config = ConfigDict(extra="ignore")  # OpenAI clients send temperature, etc.
    model: str | None = Field(None, description="a database name, or text2sql/<db>")
    messages: list[ChatMessage] = Field(min_length=1)
    db: str | None = Field(None, description="the database (wins over model)")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1)


def known_dialect(name: str) -> str:
    """``name`` when sqlglot knows it; else a ValueError listing the known ones."""
    from text2sql.sql.dialect import check_dialect

    try:
        check_dialect(name)
    except DataError as e:
        known = str(e)[str(e).find("(known"):]
        raise ValueError(f"{name!r} is not a dialect sqlglot knows {known}") from None
    return name
