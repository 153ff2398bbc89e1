"""What ``text2sql serve`` was started with: :class:`ServeSettings`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from text2sql.runtime.keys import ApiKeys


@dataclass(frozen=True)
class ServeSettings:
    """What ``text2sql serve`` was started with (see its ``--help``)."""

    databases: Path  # a folder of SQLite files, or a databases.yaml
    adapter: Path | None  # None: no model, requests must carry their own SQL
    params: Path = Path("params.yaml")
    timeout_s: float = 5.0  # per query, inside SQLite
    max_rows: int = 1000  # per answer
    sql_workers: int = 4  # queries running at once
    max_pending: int = 64  # requests in flight before 429
    max_batch: int = 8  # prompts generated together
    max_body_bytes: int = 65536
    api_keys: ApiKeys = ApiKeys()  # none: no key asked for (loopback only, see check_bind)
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the API; none: no CORS
    allow_writable_role: bool = False  # PostgreSQL: serve as a role that can write
    revise_rounds: int | None = None  # failing or empty queries asked again (None: infer's)
